package dkms

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
)

// Check names. They are stable: alert rules and the gpuwarden_check_status
// metric use them.
const (
	CheckNextBootModule = "next_boot_module"
	CheckDKMSBuild      = "dkms_build"
	CheckKernelHeaders  = "kernel_headers"
	CheckDriverLoaded   = "driver_loaded"
	CheckDriverLibrary  = "driver_library_mismatch"
	CheckNVML           = "nvml_version"
	CheckRebootPending  = "reboot_pending"
	CheckSecureBoot     = "secure_boot_signature"
)

// Finding is the result of one check: always present, OK included, so that
// a check going back to OK is visible.
type Finding struct {
	Check    string      `json:"check"`
	Level    event.Level `json:"level"`
	Summary  string      `json:"summary"`
	Evidence []string    `json:"evidence,omitempty"`
	Fix      string      `json:"fix,omitempty"`
	// NotRun says why the check did not run (its Level is then OK, or
	// Unknown when the caller asked for it to run). Empty when it ran.
	NotRun string `json:"not_run,omitempty"`
}

// StatusSkipped is the status of a check that did not run and was not
// asked to: one word for it in the table and in the JSON.
const StatusSkipped = "skipped"

// Skipped reports a check that did not run and was not required to.
func (f Finding) Skipped() bool { return f.NotRun != "" && f.Level == event.OK }

// Status is the word shown for the check: its level, or "skipped".
func (f Finding) Status() string {
	if f.Skipped() {
		return StatusSkipped
	}
	return f.Level.String()
}

// MarshalJSON adds "status", the word the table prints: a skipped check
// keeps "level": "ok" (it counts as ok in the verdict) and says
// "status": "skipped", as the table does.
func (f Finding) MarshalJSON() ([]byte, error) {
	type plain Finding
	return json.Marshal(struct {
		plain
		Status string `json:"status"`
	}{plain(f), f.Status()})
}

// ExtraCheck is a check another package contributes (the GPU checks: every
// expected GPU visible, none lost). It returns one Finding per check name
// it owns, each with its Check set.
type ExtraCheck func(ctx context.Context) []Finding

// Evaluate runs every consistency check over the facts. isNV selects the
// DKMS modules that carry the NVIDIA driver.
func Evaluate(f *Facts, isNV func(module string) bool) []Finding {
	e := evaluator{f: f, isNV: isNV}
	return []Finding{
		e.nextBootModule(),
		e.dkmsBuild(),
		e.kernelHeaders(),
		e.driverLoaded(),
		e.driverLibrary(),
		e.nvml(),
		e.rebootPending(),
		e.secureBoot(),
	}
}

type evaluator struct {
	f    *Facts
	isNV func(string) bool
}

func (e evaluator) nvDKMS() []DKMSEntry {
	var out []DKMSEntry
	for _, d := range e.f.DKMS {
		if e.isNV(d.Module) {
			out = append(out, d)
		}
	}
	return out
}

// driverInstalled: any trace of the NVIDIA driver on the host. Without one
// there is nothing to be consistent with, and the checks say so.
func (e evaluator) driverInstalled() bool {
	if e.f.Loaded != nil || e.f.Library != nil || len(e.nvDKMS()) > 0 {
		return true
	}
	return slices.ContainsFunc(e.f.Kernels, Kernel.HasModule)
}

const noDriver = "no NVIDIA driver found: no nvidia.ko for any kernel, no NVIDIA DKMS module, no libnvidia-ml, none loaded"

func (e evaluator) headersFix(kernel string) string {
	if e.f.Family == "rpm" {
		return "dnf install kernel-devel-" + kernel
	}
	return "apt-get install linux-headers-" + kernel
}

func (e evaluator) nextBootModule() Finding {
	c := Finding{Check: CheckNextBootModule}
	nb := e.f.NextBoot
	switch {
	case !e.driverInstalled():
		c.Level, c.Summary = event.Unknown, noDriver
		return c
	case nb.Kernel == "":
		c.Level, c.Summary = event.Unknown, "could not tell which kernel boots next"
		c.Evidence = e.f.Problems
		return c
	}
	if cause, ok := e.f.Unreadable[AreaKernels]; ok {
		if k, found := e.f.Kernel(nb.Kernel); !found || !k.HasModule() {
			c.Level, c.Summary = event.Unknown, "could not read the installed kernels: "+cause
			return c
		}
	}
	k, _ := e.f.Kernel(nb.Kernel)
	if !k.HasModule() {
		c.Level = event.Critical
		c.Summary = fmt.Sprintf("no NVIDIA module for kernel %s, which the next boot starts: the node will come up without GPUs", k.Release)
		c.Evidence = []string{
			fmt.Sprintf("next boot kernel %s (from %s); running %s", k.Release, nb.Source, e.f.RunningKernel),
			fmt.Sprintf("no nvidia.ko* under /lib/modules/%s/{updates/dkms,updates,extra,kernel/drivers/video,kernel/nvidia*}", k.Release),
		}
		var builtOnly *DKMSEntry
		for _, d := range e.nvDKMS() {
			if d.Kernel == k.Release {
				c.Evidence = append(c.Evidence, fmt.Sprintf("dkms: %s/%s for %s/%s is %s", d.Module, d.Version, d.Kernel, d.Arch, d.State))
				if d.State == StateBuilt {
					builtOnly = &d
				}
			}
		}
		switch {
		case !k.Headers:
			c.Evidence = append(c.Evidence, fmt.Sprintf("no headers: /lib/modules/%s/build is missing", k.Release))
			c.Fix = fmt.Sprintf("install the headers first, then build: %s && dkms autoinstall -k %s", e.headersFix(k.Release), k.Release)
		case builtOnly != nil:
			c.Fix = fmt.Sprintf("dkms install %s/%s -k %s", builtOnly.Module, builtOnly.Version, k.Release)
		case len(e.nvDKMS()) == 0:
			c.Fix = fmt.Sprintf("install the NVIDIA module package built for %s (prebuilt linux-modules-nvidia-* or kmod-nvidia-*), or reinstall the driver with DKMS", k.Release)
		default:
			c.Fix = "dkms autoinstall -k " + k.Release
		}
		return c
	}
	m := k.Modules[0]
	if e.f.Library != nil && m.Version != "" && m.Version != e.f.Library.Version {
		c.Level = event.Critical
		c.Summary = fmt.Sprintf("the NVIDIA module for next boot kernel %s is %s but the userspace library is %s: after the reboot NVML will refuse with a driver/library version mismatch",
			k.Release, m.Version, e.f.Library.Version)
		c.Evidence = []string{m.Path + " version " + m.Version, e.f.Library.Path}
		c.Fix = fmt.Sprintf("install the %s kernel module for %s: dkms autoinstall -k %s (or the matching prebuilt module package)", e.f.Library.Version, k.Release, k.Release)
		return c
	}
	c.Level = event.OK
	c.Summary = fmt.Sprintf("next boot kernel %s (from %s) has an NVIDIA module", k.Release, nb.Source)
	for _, m := range k.Modules {
		c.Evidence = append(c.Evidence, fmt.Sprintf("%s (%s, version %s)", m.Path, m.Origin, orUnknown(m.Version)))
	}
	return c
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func (e evaluator) dkmsBuild() Finding {
	c := Finding{Check: CheckDKMSBuild, Level: event.OK}
	nv := e.nvDKMS()
	if cause, ok := e.f.Unreadable[AreaDKMS]; ok && !slices.ContainsFunc(nv, func(d DKMSEntry) bool { return d.State == StateBuildFailed }) {
		c.Level, c.Summary = event.Unknown, "could not read the DKMS tree: "+cause
		c.Fix = "run the check as root (with CAP_DAC_READ_SEARCH), or fix the permissions of /var/lib/dkms"
		return c
	}
	if len(nv) == 0 {
		c.Summary = "no NVIDIA DKMS module registered"
		return c
	}
	var fixes []string
	for _, d := range nv {
		switch d.State {
		case StateBuildFailed:
			lvl := event.Warning
			if d.Kernel == e.f.NextBoot.Kernel || d.Kernel == e.f.RunningKernel {
				lvl = event.Critical
			}
			c.Level = event.Worse(c.Level, lvl)
			c.Evidence = append(c.Evidence, fmt.Sprintf("%s/%s failed to build for %s (%s): see %s", d.Module, d.Version, d.Kernel, d.Arch, d.MakeLog))
			for _, l := range d.LogTail {
				c.Evidence = append(c.Evidence, "make.log: "+l)
			}
			fixes = append(fixes, fmt.Sprintf("read %s, fix its cause (missing headers or compiler), then: dkms autoinstall -k %s", d.MakeLog, d.Kernel))
		case StateBroken:
			c.Level = event.Worse(c.Level, event.Warning)
			c.Evidence = append(c.Evidence, fmt.Sprintf("%s/%s is broken: %s", d.Module, d.Version, d.Note))
			fixes = append(fixes, fmt.Sprintf("reinstall the package that provides /usr/src/%s-%s, or: dkms remove %s/%s --all", d.Module, d.Version, d.Module, d.Version))
		}
	}
	switch c.Level {
	case event.OK:
		c.Summary = "no failed or broken NVIDIA DKMS build"
	default:
		c.Summary = fmt.Sprintf("NVIDIA DKMS build problem (%d)", len(fixes))
		if len(fixes) == 1 {
			c.Summary = "NVIDIA DKMS: " + c.Evidence[0]
		}
		c.Fix = strings.Join(fixes, "; ")
	}
	return c
}

func (e evaluator) kernelHeaders() Finding {
	c := Finding{Check: CheckKernelHeaders, Level: event.OK}
	if len(e.nvDKMS()) == 0 {
		c.Summary = "not needed: no NVIDIA DKMS module (prebuilt or no driver)"
		return c
	}
	var missing []string
	for _, k := range e.f.Kernels {
		if !k.Headers {
			missing = append(missing, k.Release)
			c.Evidence = append(c.Evidence, fmt.Sprintf("/lib/modules/%s/build is missing: DKMS cannot build for %s", k.Release, k.Release))
		}
	}
	if len(missing) == 0 {
		c.Summary = "headers present for every installed kernel"
		return c
	}
	c.Level = event.Warning
	c.Summary = "kernel headers missing for " + strings.Join(missing, ", ")
	var fixes []string
	for _, k := range missing {
		fixes = append(fixes, fmt.Sprintf("%s && dkms autoinstall -k %s", e.headersFix(k), k))
	}
	c.Fix = strings.Join(fixes, "; ")
	return c
}

// reloadFix is how to get the loaded module to match the installed driver:
// the fix explain gives for the same mismatch.
func (e evaluator) reloadFix() string { return xid.MismatchFix }

func (e evaluator) driverLoaded() Finding {
	c := Finding{Check: CheckDriverLoaded}
	switch {
	case !e.driverInstalled():
		c.Level, c.Summary = event.Unknown, noDriver
	case e.f.Loaded == nil:
		c.Level = event.Critical
		c.Summary = "the NVIDIA kernel module is not loaded: no GPU is usable"
		c.Evidence = []string{"no /proc/driver/nvidia/version and no /sys/module/nvidia/version"}
		if k, ok := e.f.Kernel(e.f.RunningKernel); ok && !k.HasModule() {
			c.Evidence = append(c.Evidence, "no NVIDIA module for the running kernel "+k.Release)
			c.Fix = "dkms autoinstall -k " + k.Release + " && modprobe nvidia"
		} else {
			c.Fix = "modprobe nvidia; if it fails, read dmesg (\"Key was rejected by service\" means Secure Boot refused an unsigned module)"
		}
	default:
		c.Level = event.OK
		c.Summary = fmt.Sprintf("NVIDIA module %s (%s) loaded", e.f.Loaded.Version, orUnknown(e.f.Loaded.Flavor))
		c.Evidence = []string{e.f.Loaded.Source}
	}
	return c
}

func (e evaluator) driverLibrary() Finding {
	c := Finding{Check: CheckDriverLibrary}
	l, u := e.f.Loaded, e.f.Library
	switch {
	case !e.driverInstalled():
		c.Level, c.Summary = event.Unknown, noDriver
	case l == nil:
		c.Level, c.NotRun = event.OK, "no NVIDIA module loaded (see driver_loaded)"
		c.Summary = "not compared: " + c.NotRun
	case u == nil:
		c.Level = event.Unknown
		c.Summary = "could not compare: no libnvidia-ml.so.<version> in " + strings.Join(libraryDirs, ", ")
	case l.Version != u.Version:
		c.Level = event.Critical
		c.Summary = fmt.Sprintf("loaded NVIDIA module %s but userspace library %s: NVML and CUDA fail with \"Driver/library version mismatch\"", l.Version, u.Version)
		c.Evidence = []string{l.Source + ": " + l.Version, u.Path}
		c.Fix = e.reloadFix()
	default:
		c.Level = event.OK
		c.Summary = "loaded module and userspace library are both " + l.Version
		c.Evidence = []string{l.Source, u.Path}
	}
	return c
}

func (e evaluator) nvml() Finding {
	c := Finding{Check: CheckNVML, Level: event.OK}
	n := e.f.NVML
	switch {
	case !n.Probed:
		c.NotRun = "NVML is not wired into this check"
		if n.NotAsked != "" {
			c.NotRun = n.NotAsked
		}
		c.Summary = "not run: " + c.NotRun
	case n.Mismatch:
		c.Level = event.Critical
		c.Summary = "NVML refuses to initialise: driver/library version mismatch"
		c.Evidence = []string{"NVML: " + n.Err}
		if e.f.Loaded != nil && e.f.Library != nil {
			c.Evidence = append(c.Evidence, fmt.Sprintf("loaded module %s, userspace library %s", e.f.Loaded.Version, e.f.Library.Version))
		}
		c.Fix = e.reloadFix()
	case n.Err != "":
		c.Level = event.Unknown
		c.Summary = "NVML did not initialise: " + n.Err
	case e.f.Library != nil && n.DriverVersion != e.f.Library.Version:
		c.Level = event.Warning
		c.Summary = fmt.Sprintf("NVML reports driver %s but %s is installed", n.DriverVersion, e.f.Library.Path)
	default:
		c.Summary = "NVML reports driver " + n.DriverVersion
	}
	return c
}

func (e evaluator) rebootPending() Finding {
	c := Finding{Check: CheckRebootPending, Level: event.OK}
	r := e.f.Reboot
	if cause, ok := e.f.Unreadable[AreaRunningKernel]; ok && !r.Pending {
		// Without the running kernel a pending kernel change cannot be seen.
		c.Level, c.Summary = event.Unknown, "could not tell: the running kernel could not be read: "+cause
		return c
	}
	if !r.Pending {
		c.Summary = "no reboot pending"
		return c
	}
	c.Level = event.Warning
	c.Summary = "reboot pending"
	if len(r.Changes) > 0 {
		c.Summary += "; it will change: " + strings.Join(r.Changes, "; ")
	}
	c.Evidence = r.Reasons
	c.Fix = "drain the node and reboot when convenient"
	if k, ok := e.f.Kernel(e.f.NextBoot.Kernel); ok && !k.HasModule() && e.driverInstalled() {
		c.Fix = "do not reboot yet: fix next_boot_module first, then drain the node and reboot"
	}
	return c
}

func (e evaluator) secureBoot() Finding {
	c := Finding{Check: CheckSecureBoot, Level: event.OK}
	switch e.f.SecureBoot {
	case SecureBootDisabled:
		c.Summary = "Secure Boot is off: module signatures are not enforced"
		return c
	case SecureBootUnknown:
		c.Level = event.Unknown
		c.Summary = "could not read the Secure Boot state from efivars"
		return c
	}
	k, ok := e.f.Kernel(e.f.NextBoot.Kernel)
	if !ok || !k.HasModule() {
		c.NotRun = "no NVIDIA module for the next boot kernel (see next_boot_module)"
		c.Summary = "not run: " + c.NotRun
		return c
	}
	m := k.Modules[0]
	switch m.Signature {
	case SignatureSigned:
		c.Summary = fmt.Sprintf("Secure Boot is on and %s is signed", m.Path)
	case SignatureUnsigned:
		c.Level = event.Critical
		c.Summary = fmt.Sprintf("Secure Boot is on and %s has no signature: the kernel will refuse to load it", m.Path)
		c.Evidence = []string{"no \"~Module signature appended~\" at the end of " + m.Path}
		mod, ver := "nvidia", orUnknown(m.Version)
		for _, d := range e.nvDKMS() {
			if d.Kernel == k.Release {
				mod, ver = d.Module, d.Version
			}
		}
		c.Fix = fmt.Sprintf("enrol the DKMS signing key (mokutil --import /var/lib/dkms/mok.pub, confirm in MOK manager at the console), then rebuild so DKMS signs it: dkms remove %s/%s -k %s && dkms install %s/%s -k %s",
			mod, ver, k.Release, mod, ver, k.Release)
	default:
		c.Level = event.Warning
		c.Summary = fmt.Sprintf("Secure Boot is on and the signature of %s could not be read", m.Path)
		c.Evidence = []string{m.Note}
		c.Fix = "check by hand: modinfo -k " + k.Release + " -F signer nvidia"
	}
	return c
}
