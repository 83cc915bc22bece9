package replay

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gpuwarden/gpuwarden/dkms"
)

// A host record is what the kernel, driver and DKMS checks read from the
// recording host, so that a replayed node's checks judge the node it was
// recorded on and not the host that plays it:
//
//	{"t":0,"host":{"version":1,"kernel":"5.15.0-105-generic","next_boot":{"kernel":"5.15.0-107-generic","source":"grubenv saved_entry"},
//	 "kernels":[{"release":"5.15.0-105-generic","headers":true,"nvidia_modules":[{"path":"/lib/modules/...","origin":"dkms","version":"550.90.07","signature":"signed"}]}],
//	 "dkms":[{"module":"nvidia","version":"550.90.07","kernel":"5.15.0-105-generic","arch":"x86_64","state":"installed"}],
//	 "module":{"version":"550.54.15","flavor":"proprietary"},"library":{"version":"550.90.07","path":"/usr/lib/..."}}}
//
// The record has its own schema version (HostVersion), so its facts can grow
// without a new trace version; a reader refuses a host record of a version
// it does not know, naming the line. A trace holds any number of them; the
// latest whose time has come is the host's state. NVML's own driver version
// is the header's driver_version and the GPUs' answers, as before.

// HostVersion is the version of the host record's schema.
const HostVersion = 1

// Limits of a host record: a real host has a handful of kernels and DKMS
// entries; these keep a hostile trace small.
const (
	MaxHostKernels    = 64
	MaxHostModules    = 16 // nvidia.ko files per kernel
	MaxHostDKMS       = 256
	MaxHostLogTail    = 8
	MaxHostTextBytes  = 512
	MaxHostUnreadable = 8
)

// Host is a host record: the recording host's kernel, driver and DKMS facts.
type Host struct {
	Version        int               `json:"version"`
	Family         string            `json:"family,omitempty"` // debian, rpm or unknown
	Arch           string            `json:"arch,omitempty"`
	Kernel         string            `json:"kernel"` // the running kernel's release
	NextBoot       *HostNextBoot     `json:"next_boot,omitempty"`
	Kernels        []HostKernel      `json:"kernels,omitempty"`
	DKMS           []HostDKMS        `json:"dkms,omitempty"`
	Module         *HostModule       `json:"module,omitempty"`  // the loaded NVIDIA kernel module
	Library        *HostLibrary      `json:"library,omitempty"` // the installed libnvidia-ml
	SecureBoot     string            `json:"secure_boot,omitempty"`
	RebootRequired *HostReboot       `json:"reboot_required,omitempty"` // the distribution's flag file, when it existed
	Unreadable     map[string]string `json:"unreadable,omitempty"`      // areas the recorder could not read, and why
}

// HostNextBoot is the kernel the next boot starts and how that was known.
type HostNextBoot struct {
	Kernel string `json:"kernel"`
	Source string `json:"source,omitempty"`
}

// HostKernel is an installed kernel.
type HostKernel struct {
	Release string           `json:"release"`
	Headers bool             `json:"headers"`
	Modules []HostModuleFile `json:"nvidia_modules,omitempty"`
}

// HostModuleFile is an nvidia.ko installed for a kernel.
type HostModuleFile struct {
	Path      string `json:"path"`
	Origin    string `json:"origin"`
	Version   string `json:"version,omitempty"`
	Signature string `json:"signature,omitempty"`
}

// HostDKMS is DKMS's state of one module version for a kernel.
type HostDKMS struct {
	Module  string   `json:"module"`
	Version string   `json:"version"`
	Kernel  string   `json:"kernel,omitempty"`
	Arch    string   `json:"arch,omitempty"`
	State   string   `json:"state"`
	MakeLog string   `json:"make_log,omitempty"`
	LogTail []string `json:"make_log_tail,omitempty"`
	Note    string   `json:"note,omitempty"`
}

// HostModule is the loaded kernel module.
type HostModule struct {
	Version string `json:"version"`
	Flavor  string `json:"flavor,omitempty"`
}

// HostLibrary is the userspace driver.
type HostLibrary struct {
	Version string `json:"version"`
	Path    string `json:"path"`
}

// HostReboot is the reboot-required flag and the packages it names.
type HostReboot struct {
	Packages []string `json:"packages,omitempty"`
}

var (
	hostStates     = []string{dkms.StateAdded, dkms.StateBuilt, dkms.StateInstalled, dkms.StateBroken, dkms.StateBuildFailed, dkms.StateInstalledWeak}
	hostSignatures = []string{"", string(dkms.SignatureSigned), string(dkms.SignatureUnsigned), string(dkms.SignatureUnknown)}
	hostSecureBoot = []string{"", dkms.SecureBootEnabled, dkms.SecureBootDisabled, dkms.SecureBootUnknown}
	hostFamilies   = []string{"", "debian", "rpm", "unknown"}
	hostFlavors    = []string{"", dkms.FlavorOpen, dkms.FlavorProprietary}
	hostAreas      = []string{dkms.AreaRunningKernel, dkms.AreaKernels, dkms.AreaDKMS}
)

// validate checks a host record as read from a trace: known version and
// words, bounded lists and text, releases that are one token.
func (h *Host) validate() error {
	if h.Version != HostVersion {
		return fmt.Errorf("host: unsupported host record version %d (this gpuwarden reads version %d)", h.Version, HostVersion)
	}
	if err := oneOf("family", h.Family, hostFamilies); err != nil {
		return err
	}
	if err := oneOf("secure_boot", h.SecureBoot, hostSecureBoot); err != nil {
		return err
	}
	if err := token("arch", h.Arch, true); err != nil {
		return err
	}
	if err := token("kernel", h.Kernel, true); err != nil {
		return err
	}
	if h.NextBoot != nil {
		if err := token("next_boot.kernel", h.NextBoot.Kernel, false); err != nil {
			return err
		}
		if err := text("next_boot.source", h.NextBoot.Source); err != nil {
			return err
		}
	}
	if len(h.Kernels) > MaxHostKernels {
		return fmt.Errorf("host: %d kernels is more than %d", len(h.Kernels), MaxHostKernels)
	}
	for i, k := range h.Kernels {
		if err := k.validate(fmt.Sprintf("kernels[%d]", i)); err != nil {
			return err
		}
	}
	if len(h.DKMS) > MaxHostDKMS {
		return fmt.Errorf("host: %d dkms entries is more than %d", len(h.DKMS), MaxHostDKMS)
	}
	for i, d := range h.DKMS {
		if err := d.validate(fmt.Sprintf("dkms[%d]", i)); err != nil {
			return err
		}
	}
	if m := h.Module; m != nil {
		if err := token("module.version", m.Version, false); err != nil {
			return err
		}
		if err := oneOf("module.flavor", m.Flavor, hostFlavors); err != nil {
			return err
		}
	}
	if l := h.Library; l != nil {
		if err := token("library.version", l.Version, false); err != nil {
			return err
		}
		if err := hostPath("library.path", l.Path); err != nil {
			return err
		}
	}
	if r := h.RebootRequired; r != nil {
		if len(r.Packages) > MaxHostKernels {
			return fmt.Errorf("host: reboot_required: %d packages is more than %d", len(r.Packages), MaxHostKernels)
		}
		for i, p := range r.Packages {
			if err := token(fmt.Sprintf("reboot_required.packages[%d]", i), p, false); err != nil {
				return err
			}
		}
	}
	if len(h.Unreadable) > MaxHostUnreadable {
		return fmt.Errorf("host: %d unreadable areas is more than %d", len(h.Unreadable), MaxHostUnreadable)
	}
	for area, why := range h.Unreadable {
		if !slices.Contains(hostAreas, area) {
			return fmt.Errorf("host: unreadable area %q is not one of %s", area, strings.Join(hostAreas, ", "))
		}
		if err := text("unreadable."+area, why); err != nil {
			return err
		}
	}
	return nil
}

func oneOf(field, v string, allowed []string) error {
	if !slices.Contains(allowed, v) {
		return fmt.Errorf("host: %s %q is not one of %s", field, v, strings.Join(slices.DeleteFunc(slices.Clone(allowed), func(a string) bool { return a == "" }), ", "))
	}
	return nil
}

func (k *HostKernel) validate(at string) error {
	if err := token(at+".release", k.Release, false); err != nil {
		return err
	}
	if len(k.Modules) > MaxHostModules {
		return fmt.Errorf("host: %s: %d modules is more than %d", at, len(k.Modules), MaxHostModules)
	}
	for j := range k.Modules {
		if err := k.Modules[j].validate(fmt.Sprintf("%s.nvidia_modules[%d]", at, j)); err != nil {
			return err
		}
	}
	return nil
}

func (m *HostModuleFile) validate(at string) error {
	if err := hostPath(at+".path", m.Path); err != nil {
		return err
	}
	if err := token(at+".origin", m.Origin, false); err != nil {
		return err
	}
	if err := token(at+".version", m.Version, true); err != nil {
		return err
	}
	return oneOf(at+".signature", m.Signature, hostSignatures)
}

func (d *HostDKMS) validate(at string) error {
	for _, f := range []struct {
		name, v string
		empty   bool
	}{{"module", d.Module, false}, {"version", d.Version, false}, {"kernel", d.Kernel, true}, {"arch", d.Arch, true}} {
		if err := token(at+"."+f.name, f.v, f.empty); err != nil {
			return err
		}
	}
	if !slices.Contains(hostStates, d.State) {
		return fmt.Errorf("host: %s.state %q is not one of %s", at, d.State, strings.Join(hostStates, ", "))
	}
	if d.MakeLog != "" {
		if err := hostPath(at+".make_log", d.MakeLog); err != nil {
			return err
		}
	}
	if len(d.LogTail) > MaxHostLogTail {
		return fmt.Errorf("host: %s: %d make.log lines is more than %d", at, len(d.LogTail), MaxHostLogTail)
	}
	for _, l := range append(slices.Clone(d.LogTail), d.Note) {
		if err := text(at, l); err != nil {
			return err
		}
	}
	return nil
}

// text is printable UTF-8 of at most MaxHostTextBytes: what the checks
// quote reaches terminals and labels.
func text(field, s string) error {
	if len(s) > MaxHostTextBytes {
		return fmt.Errorf("host: %s is longer than %d bytes", field, MaxHostTextBytes)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("host: %s is not UTF-8", field)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("host: %s holds the control character %U", field, r)
		}
	}
	return nil
}

// token is text without spaces: a release, a version, a module name.
func token(field, s string, empty bool) error {
	if s == "" {
		if empty {
			return nil
		}
		return fmt.Errorf("host: %s is empty", field)
	}
	if err := text(field, s); err != nil {
		return err
	}
	if len(s) > 128 || strings.ContainsAny(s, " /\\") {
		return fmt.Errorf("host: %s %q is not one word of at most 128 bytes", field, s)
	}
	return nil
}

// hostPath is an absolute, clean path inside the recorded host's root.
func hostPath(field, p string) error {
	if err := text(field, p); err != nil {
		return err
	}
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return fmt.Errorf("host: %s %q is not an absolute clean path", field, p)
	}
	return nil
}

// HostFromFacts is the host record of facts read on the recording host.
func HostFromFacts(f dkms.Facts) Host {
	h := Host{Version: HostVersion, Family: f.Family, Arch: f.Arch, Kernel: f.RunningKernel, SecureBoot: f.SecureBoot}
	if f.NextBoot.Kernel != "" {
		h.NextBoot = &HostNextBoot{Kernel: f.NextBoot.Kernel, Source: f.NextBoot.Source}
	}
	// What a reader would refuse (a kernel directory whose name is not
	// text, say) is left out, not the whole record.
	for _, k := range f.Kernels {
		hk := HostKernel{Release: k.Release, Headers: k.Headers}
		for _, m := range k.Modules {
			hm := HostModuleFile{Path: m.Path, Origin: m.Origin, Version: m.Version, Signature: string(m.Signature)}
			if hm.validate("") == nil && len(hk.Modules) < MaxHostModules {
				hk.Modules = append(hk.Modules, hm)
			}
		}
		if hk.validate("") == nil && len(h.Kernels) < MaxHostKernels {
			h.Kernels = append(h.Kernels, hk)
		}
	}
	for _, d := range f.DKMS {
		hd := HostDKMS{Module: d.Module, Version: d.Version, Kernel: d.Kernel, Arch: d.Arch,
			State: d.State, MakeLog: d.MakeLog, Note: truncateText(d.Note)}
		for _, l := range d.LogTail[max(0, len(d.LogTail)-MaxHostLogTail):] {
			hd.LogTail = append(hd.LogTail, truncateText(l))
		}
		if hd.validate("") == nil && len(h.DKMS) < MaxHostDKMS {
			h.DKMS = append(h.DKMS, hd)
		}
	}
	if f.Loaded != nil {
		h.Module = &HostModule{Version: f.Loaded.Version, Flavor: f.Loaded.Flavor}
	}
	if f.Library != nil {
		h.Library = &HostLibrary{Version: f.Library.Version, Path: f.Library.Path}
	}
	if f.Reboot.Pending && slices.ContainsFunc(f.Reboot.Reasons, func(r string) bool { return strings.HasSuffix(r, "reboot-required exists") }) {
		h.RebootRequired = &HostReboot{Packages: f.Reboot.Packages}
	}
	for area, why := range f.Unreadable {
		if slices.Contains(hostAreas, area) {
			if h.Unreadable == nil {
				h.Unreadable = map[string]string{}
			}
			h.Unreadable[area] = truncateText(why)
		}
	}
	return h
}

// truncateText cuts s to MaxHostTextBytes on a UTF-8 boundary and makes
// control characters visible, so a recorder never writes a record its
// reader refuses.
func truncateText(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	for len(s) > MaxHostTextBytes {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// Facts are the record as the checks read a host: what a pass on the
// recording host would have gathered, before NVML is asked and the pending
// reboot judged (dkms.Config.Recorded does both).
func (h *Host) Facts() dkms.Facts {
	f := dkms.Facts{Family: h.Family, Arch: h.Arch, RunningKernel: h.Kernel, Kernels: []dkms.Kernel{}, SecureBoot: h.SecureBoot}
	if f.Family == "" {
		f.Family = "unknown"
	}
	if f.SecureBoot == "" {
		f.SecureBoot = dkms.SecureBootUnknown
	}
	if h.NextBoot != nil {
		f.NextBoot = dkms.NextBoot{Kernel: h.NextBoot.Kernel, Source: h.NextBoot.Source}
	}
	for _, k := range h.Kernels {
		dk := dkms.Kernel{Release: k.Release, Headers: k.Headers}
		for _, m := range k.Modules {
			sig := dkms.Signature(m.Signature)
			if sig == "" {
				sig = dkms.SignatureUnknown
			}
			dk.Modules = append(dk.Modules, dkms.ModuleFile{Path: m.Path, Origin: m.Origin, Version: m.Version, Signature: sig})
		}
		f.Kernels = append(f.Kernels, dk)
	}
	for _, d := range h.DKMS {
		f.DKMS = append(f.DKMS, dkms.DKMSEntry{Module: d.Module, Version: d.Version, Kernel: d.Kernel, Arch: d.Arch,
			State: d.State, MakeLog: d.MakeLog, LogTail: slices.Clone(d.LogTail), Note: d.Note})
	}
	if h.Module != nil {
		f.Loaded = &dkms.LoadedDriver{DriverVersion: dkms.DriverVersion{Version: h.Module.Version, Flavor: h.Module.Flavor},
			Source: "/proc/driver/nvidia/version"}
	}
	if h.Library != nil {
		f.Library = &dkms.Library{Version: h.Library.Version, Path: h.Library.Path}
	}
	if h.RebootRequired != nil {
		f.Reboot = dkms.RebootState{Pending: true, Reasons: []string{"/var/run/reboot-required exists"},
			Packages: slices.Clone(h.RebootRequired.Packages)}
	}
	for area, why := range h.Unreadable {
		if f.Unreadable == nil {
			f.Unreadable = map[string]string{}
		}
		f.Unreadable[area] = why
		f.Problems = append(f.Problems, area+": "+why)
	}
	slices.Sort(f.Problems)
	return f
}

var errHostWithGPU = errors.New("field host takes no gpu")

// HostFacts are the facts of the latest host record whose time has come,
// for dkms.Config.Recorded; ok is false while there is none.
func (p *Player) HostFacts() (dkms.Facts, bool) {
	p.mu.Lock()
	p.advance()
	h := p.host
	p.mu.Unlock()
	if h == nil {
		return dkms.Facts{}, false
	}
	return h.Facts(), true
}

// HasHost says whether the trace holds host facts at all.
func (t *Trace) HasHost() bool {
	for i := range t.Records {
		if t.Records[i].Host != nil {
			return true
		}
	}
	return false
}
