package dkms

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

// Kernel is one installed kernel and what it needs to come up with GPUs.
type Kernel struct {
	Release string       `json:"release"`
	Image   string       `json:"image,omitempty"` // /boot/vmlinuz-K or /lib/modules/K/vmlinuz
	Headers bool         `json:"headers"`         // /lib/modules/K/build resolves to a directory
	Modules []ModuleFile `json:"nvidia_modules,omitempty"`
}

// HasModule reports whether modprobe would find an nvidia module for it.
func (k Kernel) HasModule() bool { return len(k.Modules) > 0 }

// DKMS states, as `dkms status` prints them, plus StateBuildFailed: dkms
// itself calls a kernel whose build failed "added", but it leaves the
// failed build's make.log behind, and that is the fact worth an alert.
const (
	StateAdded         = "added"
	StateBuilt         = "built"
	StateInstalled     = "installed"
	StateBroken        = "broken"
	StateBuildFailed   = "build-failed"
	StateInstalledWeak = "installed-weak"
)

// DKMSEntry is DKMS's state for one module, version, kernel and arch.
// Kernel and Arch are empty for a module that is only added (or broken).
type DKMSEntry struct {
	Module  string   `json:"module"`
	Version string   `json:"version"`
	Kernel  string   `json:"kernel,omitempty"`
	Arch    string   `json:"arch,omitempty"`
	State   string   `json:"state"`
	MakeLog string   `json:"make_log,omitempty"`      // inside the root; for build-failed, the failed build's log
	LogTail []string `json:"make_log_tail,omitempty"` // the failed build's last lines
	Note    string   `json:"note,omitempty"`
}

// LoadedDriver is the NVIDIA kernel module loaded now.
type LoadedDriver struct {
	DriverVersion
	Source string `json:"source"` // the file it was read from, inside the root
}

// Library is the userspace driver (libnvidia-ml) installed now.
type Library struct {
	Version string `json:"version"`
	Path    string `json:"path"` // inside the root
}

// NVMLState is NVML's own answer, when a probe was given.
type NVMLState struct {
	Probed        bool   `json:"probed"`
	DriverVersion string `json:"driver_version,omitempty"`
	Mismatch      bool   `json:"mismatch"`
	Err           string `json:"error,omitempty"`
	// NotAsked, when not probed, says why (empty: this build or caller
	// has no NVML to ask).
	NotAsked string `json:"not_asked,omitempty"`
}

// NVMLProbe returns NVML's driver version (nvmlSystemGetDriverVersion), or
// the error NVML's Init returned. The NVML owner supplies it; dkms never
// loads NVML itself. A go-nvml Return is a fine error: its text for 18 is
// recognised as the version mismatch.
type NVMLProbe func(ctx context.Context) (driverVersion string, err error)

// RebootState says whether a reboot is pending and what it would change.
type RebootState struct {
	Pending  bool     `json:"pending"`
	Reasons  []string `json:"reasons,omitempty"`  // why we think so
	Changes  []string `json:"changes,omitempty"`  // what the reboot will change
	Packages []string `json:"packages,omitempty"` // from reboot-required.pkgs
}

// NextBoot is the kernel the next boot will start, and how we know.
type NextBoot struct {
	Kernel string `json:"kernel"`
	Source string `json:"source"` // e.g. "grubenv saved_entry", "bls default", "/boot/vmlinuz link", "newest installed"
}

// Secure Boot states.
const (
	SecureBootEnabled  = "enabled"
	SecureBootDisabled = "disabled"
	SecureBootUnknown  = "unknown"
)

// Facts is everything read from the host in one pass.
type Facts struct {
	Family        string        `json:"family"` // debian, rpm or unknown
	Arch          string        `json:"arch"`
	RunningKernel string        `json:"running_kernel"`
	Kernels       []Kernel      `json:"kernels"`
	NextBoot      NextBoot      `json:"next_boot"`
	DKMS          []DKMSEntry   `json:"dkms,omitempty"`
	Loaded        *LoadedDriver `json:"loaded,omitempty"`
	Library       *Library      `json:"library,omitempty"`
	NVML          NVMLState     `json:"nvml"`
	Reboot        RebootState   `json:"reboot"`
	SecureBoot    string        `json:"secure_boot"`
	// Problems are facts that could not be read, each naming the file.
	Problems []string `json:"problems,omitempty"`
	// Unreadable names the parts of the host that could not be read, by
	// area (running_kernel, kernels, dkms), with the cause: the checks
	// that depend on one say unknown, never ok.
	Unreadable map[string]string `json:"unreadable,omitempty"`
}

// Kernel returns the installed kernel with that release.
func (f *Facts) Kernel(release string) (Kernel, bool) {
	for _, k := range f.Kernels {
		if k.Release == release {
			return k, true
		}
	}
	return Kernel{}, false
}

// Gatherer reads Facts under one root. Its zero value is not usable; build
// it with NewGatherer. It is safe for one goroutine at a time.
type Gatherer struct {
	paths   Paths
	isNV    func(module string) bool
	nvml    NVMLProbe
	modules moduleCache
}

// DefaultModulePrefix selects the DKMS modules that carry the NVIDIA driver:
// nvidia, nvidia-open, nvidia-current, nvidia-current-open, ... The name is
// packaging's choice, so it is configuration, not a constant.
const DefaultModulePrefix = "nvidia"

// NewGatherer returns a Gatherer for the paths. modules names the DKMS
// modules that carry the NVIDIA driver; empty means every module whose name
// starts with "nvidia". nvml may be nil (NVML not wired or not wanted).
func NewGatherer(paths Paths, modules []string, nvml NVMLProbe) *Gatherer {
	isNV := func(m string) bool { return strings.HasPrefix(m, DefaultModulePrefix) }
	if len(modules) > 0 {
		names := slices.Clone(modules)
		isNV = func(m string) bool { return slices.Contains(names, m) }
	}
	return &Gatherer{paths: paths.WithDefaults(), isNV: isNV, nvml: nvml}
}

// Paths returns the paths the Gatherer reads under.
func (g *Gatherer) Paths() Paths { return g.paths }

// IsNVIDIAModule reports whether a DKMS module name is one of the driver's.
func (g *Gatherer) IsNVIDIAModule(name string) bool { return g.isNV(name) }

// Gather reads every fact. It does not fail: what it could not read is in
// Facts.Problems and the checks that need it report Unknown.
func (g *Gatherer) Gather(ctx context.Context) Facts {
	f := Facts{Kernels: []Kernel{}}
	f.Family = g.family()
	f.Arch = g.arch()
	g.readRunning(&f)
	g.readKernels(&f)
	g.readDKMS(&f)
	g.readLoaded(&f)
	g.readLibrary(&f)
	g.readNVML(ctx, &f)
	f.NextBoot = g.nextBoot(&f)
	g.readReboot(&f)
	f.SecureBoot = g.secureBoot(&f)
	return f
}

func (f *Facts) problem(format string, args ...any) {
	f.Problems = append(f.Problems, fmt.Sprintf(format, args...))
}

// unreadable records that area could not be read, and why (the first cause).
func (f *Facts) unreadable(area string, err error) {
	if f.Unreadable == nil {
		f.Unreadable = map[string]string{}
	}
	if _, ok := f.Unreadable[area]; !ok {
		f.Unreadable[area] = err.Error()
	}
	f.problem("%s: %v", area, err)
}

// family tells Debian-like from RPM-like systems: they flag pending reboots
// differently.
func (g *Gatherer) family() string {
	if b, err := g.paths.ReadFile("/etc/os-release", hostfs.LimitText); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			k, v, ok := strings.Cut(l, "=")
			if !ok || (k != "ID" && k != "ID_LIKE") {
				continue
			}
			v = strings.Trim(v, `"' `)
			for w := range strings.FieldsSeq(v) {
				switch w {
				case "debian", "ubuntu":
					return "debian"
				case "rhel", "fedora", "centos", "suse", "opensuse", "sles", "amzn", "rocky", "almalinux", "ol":
					return "rpm"
				}
			}
		}
	}
	switch {
	case g.paths.IsDirIn("/var/lib/dpkg"):
		return "debian"
	case g.paths.IsDirIn("/var/lib/rpm"), g.paths.IsDirIn("/usr/lib/sysimage/rpm"):
		return "rpm"
	}
	return "unknown"
}

// goArches maps GOARCH to the kernel's machine names, for when procfs does
// not say (kernels before 6.1 lack /proc/sys/kernel/arch).
var goArches = map[string]string{"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "386": "i686"}

func (g *Gatherer) arch() string {
	if a, err := readFirstLine(g.paths.Proc("sys/kernel/arch")); err == nil && a != "" {
		return a
	}
	return goArches[runtime.GOARCH]
}

func (g *Gatherer) readRunning(f *Facts) {
	name := g.paths.Proc("sys/kernel/osrelease")
	r, err := readFirstLine(name)
	if err != nil || r == "" {
		f.unreadable(AreaRunningKernel, fmt.Errorf("reading %s: %v", name, errOrEmpty(err)))
		return
	}
	f.RunningKernel = r
}

func errOrEmpty(err error) error {
	if err == nil {
		return fmt.Errorf("empty file")
	}
	return err
}

// Areas of the host that Facts.Unreadable names.
const (
	AreaRunningKernel = "running_kernel"
	AreaKernels       = "kernels"
	AreaDKMS          = "dkms"
)

// readKernels finds installed kernels: a release with a kernel image in
// /boot or /lib/modules/K, or a /lib/modules/K/kernel tree. A /lib/modules/K
// directory holding only leftovers (DKMS modules of a removed kernel) is not
// an installed kernel.
func (g *Gatherer) readKernels(f *Facts) {
	found := map[string]string{} // release -> image
	modDir := "/lib/modules"
	ents, err := listDir(g.paths.Root(modDir))
	if err != nil {
		f.unreadable(AreaKernels, err)
	}
	for _, e := range ents {
		k := e.Name()
		if !g.paths.IsDirIn(path.Join(modDir, k)) {
			continue
		}
		switch {
		case g.paths.ExistsIn(path.Join(modDir, k, "vmlinuz")):
			found[k] = path.Join(modDir, k, "vmlinuz")
		case g.paths.IsDirIn(path.Join(modDir, k, "kernel")):
			found[k] = ""
		}
	}
	boot, err := listDir(g.paths.Root("/boot"))
	if err != nil {
		f.unreadable(AreaKernels, err)
	}
	for _, e := range boot {
		k, ok := strings.CutPrefix(e.Name(), "vmlinuz-")
		if !ok || strings.Contains(k, "rescue") {
			continue
		}
		found[k] = "/boot/" + e.Name()
	}
	for k, img := range found {
		kern := Kernel{Release: k, Image: img, Headers: g.paths.IsDirIn(path.Join(modDir, k, "build"))}
		kern.Modules = g.moduleFiles(k)
		f.Kernels = append(f.Kernels, kern)
	}
	slices.SortFunc(f.Kernels, func(a, b Kernel) int { return compareKernels(a.Release, b.Release) })
}

// moduleDirs are where an nvidia.ko can be installed for a kernel, relative
// to /lib/modules/K: DKMS's destinations per distribution (updates/dkms on
// Debian/Ubuntu/Arch, extra on Fedora/RHEL, updates on SUSE), NVIDIA's .run
// installer (kernel/drivers/video), and Ubuntu's prebuilt
// linux-modules-nvidia packages (kernel/nvidia-<branch>, matched below).
var moduleDirs = []struct{ dir, origin string }{
	{"updates/dkms", "dkms"},
	{"updates", "updates"},
	{"extra", "extra"},
	{"kernel/drivers/video", "kernel"},
	{"weak-updates", "weak-updates"},
}

// moduleNames are the file names of the main NVIDIA module (nvidia-uvm and
// friends are loaded through it).
var moduleNames = []string{"nvidia.ko", "nvidia.ko.xz", "nvidia.ko.zst", "nvidia.ko.gz"}

func (g *Gatherer) moduleFiles(kernel string) []ModuleFile {
	base := path.Join("/lib/modules", kernel)
	type dirOrigin struct{ dir, origin string }
	dirs := []dirOrigin{}
	for _, d := range moduleDirs {
		dirs = append(dirs, dirOrigin(d))
	}
	if ents, err := listDir(g.paths.Root(path.Join(base, "kernel"))); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "nvidia") {
				dirs = append(dirs, dirOrigin{"kernel/" + e.Name(), "prebuilt"})
			}
		}
	}
	var files []ModuleFile
	seen := map[string]bool{}
	for _, d := range dirs {
		root := path.Join(base, d.dir)
		host, err := g.paths.Resolve(root)
		if err != nil {
			continue
		}
		// Walk a little deeper than the directory itself: the extra/ and
		// updates/ trees often hold nvidia/ or kernel/ subdirectories.
		_ = filepath.WalkDir(host, func(p string, e os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			rel, _ := filepath.Rel(host, p)
			if e.IsDir() && strings.Count(rel, string(filepath.Separator)) >= 2 {
				return filepath.SkipDir
			}
			if e.IsDir() || !slices.Contains(moduleNames, e.Name()) || seen[p] {
				return nil
			}
			if d.dir == "updates" && strings.HasPrefix(filepath.ToSlash(rel), "dkms/") {
				return nil // counted as updates/dkms
			}
			seen[p] = true
			info := g.modules.inspect(p)
			files = append(files, ModuleFile{
				Path:      path.Join(root, filepath.ToSlash(rel)),
				Origin:    d.origin,
				Version:   info.version,
				Signature: info.signature,
				Note:      info.note,
			})
			return nil
		})
	}
	return files
}

// readDKMS walks /var/lib/dkms as dkms itself does (is_module_added,
// is_module_built, _is_module_installed in dkms.in).
func (g *Gatherer) readDKMS(f *Facts) {
	const tree = "/var/lib/dkms"
	mods, err := listDir(g.paths.Root(tree))
	if err != nil {
		f.unreadable(AreaDKMS, err)
		return
	}
	for _, m := range mods {
		if !m.IsDir() {
			continue // framework files, mok.key, mok.pub
		}
		module := m.Name()
		vers, err := listDir(g.paths.Root(path.Join(tree, module)))
		if err != nil {
			f.unreadable(AreaDKMS, err)
			continue
		}
		for _, v := range vers {
			if !v.IsDir() || v.Name() == "original_module" {
				continue // kernel-K-A links, original_module/
			}
			f.DKMS = append(f.DKMS, g.dkmsVersion(f, module, v.Name())...)
		}
	}
}

func (g *Gatherer) dkmsVersion(f *Facts, module, version string) []DKMSEntry {
	base := path.Join("/var/lib/dkms", module, version)
	if !g.paths.ExistsIn(path.Join(base, "source")) || !g.paths.ExistsIn(path.Join(base, "source", "dkms.conf")) {
		return []DKMSEntry{{Module: module, Version: version, State: StateBroken,
			Note: fmt.Sprintf("%s/source or its dkms.conf is missing", base)}}
	}
	var out []DKMSEntry
	built := map[string]bool{} // kernel/arch
	kernels, err := listDir(g.paths.Root(base))
	if err != nil {
		f.unreadable(AreaDKMS, err)
	}
	for _, k := range kernels {
		// dkms globs kernel directories as +([0-9]).*
		if !k.IsDir() || k.Name() == "" || !isDigit(rune(k.Name()[0])) || !strings.Contains(k.Name(), ".") {
			continue
		}
		arches, _ := listDir(g.paths.Root(path.Join(base, k.Name())))
		for _, a := range arches {
			if !a.IsDir() {
				continue
			}
			modDir := path.Join(base, k.Name(), a.Name(), "module")
			objs, _ := listDir(g.paths.Root(modDir))
			if len(objs) == 0 {
				continue
			}
			e := DKMSEntry{Module: module, Version: version, Kernel: k.Name(), Arch: a.Name(), State: StateBuilt}
			if g.activeVersion(module, k.Name(), a.Name()) == version {
				e.State = StateInstalled
			}
			if log := path.Join(base, k.Name(), a.Name(), "log", "make.log"); g.paths.ExistsIn(log) {
				e.MakeLog = log
			}
			built[k.Name()+"/"+a.Name()] = true
			out = append(out, e)
		}
	}
	// A failed build leaves build/make.log, whose first line names the
	// kernel: "DKMS make.log for nvidia-535.104.05 for kernel 6.5.0-1-amd64 (x86_64)".
	logPath := path.Join(base, "build", "make.log")
	if first, err := readFirstLine(mustResolve(g.paths, logPath)); err == nil {
		if k, a, ok := parseMakeLogHeader(first); ok && !built[k+"/"+a] {
			out = append(out, DKMSEntry{Module: module, Version: version, Kernel: k, Arch: a,
				State: StateBuildFailed, MakeLog: logPath, LogTail: tailLines(mustResolve(g.paths, logPath), 3)})
		}
	}
	if len(built) == 0 {
		out = append(out, DKMSEntry{Module: module, Version: version, State: StateAdded})
	}
	return out
}

// activeVersion reads /var/lib/dkms/<module>/kernel-<K>-<A>, the link dkms
// install makes to <version>/<K>/<A>.
func (g *Gatherer) activeVersion(module, kernel, arch string) string {
	link := g.paths.Root(path.Join("/var/lib/dkms", module, "kernel-"+kernel+"-"+arch))
	target, err := os.Readlink(link)
	if err != nil {
		return ""
	}
	// Relative ("535.104.05/6.5.0-1-amd64/x86_64") or absolute
	// ("/var/lib/dkms/nvidia/535.104.05/6.5.0-1-amd64/x86_64").
	target = strings.TrimPrefix(target, "/var/lib/dkms/"+module+"/")
	target = strings.TrimPrefix(target, "./")
	v, rest, ok := strings.Cut(target, "/")
	if !ok || rest != kernel+"/"+arch {
		return ""
	}
	return v
}

// parseMakeLogHeader reads the kernel and arch from the line dkms writes
// first into every make.log.
func parseMakeLogHeader(line string) (kernel, arch string, ok bool) {
	_, rest, found := strings.Cut(line, " for kernel ")
	if !found {
		return "", "", false
	}
	kernel, arch, found = strings.Cut(rest, " (")
	if !found || !strings.HasSuffix(arch, ")") {
		return "", "", false
	}
	return kernel, strings.TrimSuffix(arch, ")"), isToken(kernel)
}

func (g *Gatherer) readLoaded(f *Facts) {
	const procVersion = "driver/nvidia/version"
	if b, err := hostfs.ReadFile(g.paths.Proc(procVersion), hostfs.LimitText); err == nil {
		if d, ok := ParseDriverVersion(string(b)); ok {
			f.Loaded = &LoadedDriver{DriverVersion: d, Source: path.Join("/proc", procVersion)}
			return
		}
		f.problem("loaded driver: %s: no \"NVRM version: NVIDIA UNIX ... Kernel Module <version>\" line", g.paths.Proc(procVersion))
	}
	if v, err := readFirstLine(g.paths.Sys("module/nvidia/version")); err == nil && v != "" {
		f.Loaded = &LoadedDriver{DriverVersion: DriverVersion{Version: v}, Source: "/sys/module/nvidia/version"}
	}
}

// libraryDirs are where distributions and NVIDIA's installers put
// libnvidia-ml (the list gpud searches, plus Debian's nvidia/current).
var libraryDirs = []string{
	"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
	"/usr/lib/x86_64-linux-gnu/nvidia/current", "/usr/lib/aarch64-linux-gnu/nvidia/current",
	"/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib64", "/lib",
	"/cm/local/apps/cuda/libs/current/lib64",
}

// readLibrary reads the userspace driver version from the name of the file
// libnvidia-ml.so.1 points to (libnvidia-ml.so.<version>): that works when
// NVML itself refuses to load.
func (g *Gatherer) readLibrary(f *Facts) {
	const soname = "libnvidia-ml.so.1"
	for _, dir := range libraryDirs {
		link := path.Join(dir, soname)
		if host, err := g.paths.Resolve(link); err == nil {
			if v, ok := strings.CutPrefix(filepath.Base(host), "libnvidia-ml.so."); ok && isDriverVersion(v) {
				f.Library = &Library{Version: v, Path: path.Join(dir, filepath.Base(host))}
				return
			}
		}
		// No soname link (a half-finished install): take the versioned file.
		matches, _ := filepath.Glob(filepath.Join(g.paths.Root(dir), "libnvidia-ml.so.*.*"))
		for _, m := range matches {
			if v, ok := strings.CutPrefix(filepath.Base(m), "libnvidia-ml.so."); ok && isDriverVersion(v) {
				f.Library = &Library{Version: v, Path: path.Join(dir, filepath.Base(m))}
				return
			}
		}
	}
}

func (g *Gatherer) readNVML(ctx context.Context, f *Facts) {
	if g.nvml == nil {
		return
	}
	v, err := g.nvml(ctx)
	f.NVML = NVMLState{Probed: true, DriverVersion: v}
	if err != nil {
		f.NVML.Err = err.Error()
		f.NVML.Mismatch = IsNVMLVersionMismatch(err.Error())
	}
}

// readReboot decides whether a reboot is pending: Debian/Ubuntu's flag file
// when present, and on every family the next boot kernel (RPM: the newest
// installed) against the running one, since the flag is only written where
// update-notifier or unattended-upgrades is installed.
func (g *Gatherer) readReboot(f *Facts) {
	r := &f.Reboot
	const flag = "/var/run/reboot-required"
	if g.paths.ExistsIn(flag) {
		r.Pending = true
		r.Reasons = append(r.Reasons, flag+" exists")
		if b, err := g.paths.ReadFile(flag+".pkgs", hostfs.LimitText); err == nil {
			for l := range strings.SplitSeq(string(b), "\n") {
				if l = strings.TrimSpace(l); l != "" && !slices.Contains(r.Packages, l) {
					r.Packages = append(r.Packages, l)
				}
			}
		}
	}
	f.judgeReboot()
}

// judgeReboot adds to the pending-reboot state what the facts themselves
// say: a next boot kernel other than the running one, a driver that differs
// from the loaded module, and the packages that asked for the reboot.
func (f *Facts) judgeReboot() {
	r := &f.Reboot
	if f.RunningKernel != "" {
		target := f.NextBoot.Kernel
		if f.Family == "rpm" && len(f.Kernels) > 0 {
			target = f.Kernels[len(f.Kernels)-1].Release
		}
		if target != "" && target != f.RunningKernel {
			r.Pending = true
			r.Reasons = append(r.Reasons, fmt.Sprintf("running kernel %s, next boot kernel %s (%s)", f.RunningKernel, target, f.NextBoot.Source))
			r.Changes = append(r.Changes, fmt.Sprintf("kernel %s -> %s", f.RunningKernel, target))
		}
	}
	if f.Loaded != nil && f.Library != nil && f.Loaded.Version != f.Library.Version {
		r.Changes = append(r.Changes, fmt.Sprintf("NVIDIA driver %s -> %s", f.Loaded.Version, f.Library.Version))
	}
	if len(r.Packages) > 0 {
		r.Changes = append(r.Changes, "packages: "+strings.Join(r.Packages, ", "))
	}
}

// mustResolve returns the host path of name, following links inside the
// root, or the plain joined path when it cannot be resolved.
func mustResolve(p Paths, name string) string {
	if h, err := p.Resolve(name); err == nil {
		return h
	}
	return p.Root(name)
}

// efiSecureBoot is the EFI global variable holding the Secure Boot state:
// 4 bytes of attributes, then one byte, 1 when enabled.
const efiSecureBoot = "firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

func (g *Gatherer) secureBoot(f *Facts) string {
	b, err := hostfs.ReadFile(g.paths.Sys(efiSecureBoot), 4096)
	switch {
	case err == nil && len(b) >= 5:
		if b[4] == 1 {
			return SecureBootEnabled
		}
		return SecureBootDisabled
	case err == nil:
		f.problem("secure boot: %s: %d bytes, want 5", g.paths.Sys(efiSecureBoot), len(b))
		return SecureBootUnknown
	}
	// No EFI at all means legacy BIOS boot: no Secure Boot.
	if _, err := os.Stat(g.paths.Sys("firmware/efi")); os.IsNotExist(err) {
		return SecureBootDisabled
	}
	return SecureBootUnknown
}

// tailLines returns the last n non-blank lines of a text file (a build
// log), reading only its last 64 KiB.
func tailLines(host string, n int) []string {
	f, err := hostfs.Open(host)
	if err != nil {
		return nil
	}
	defer f.Close()
	const tail = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		f.Seek(st.Size()-tail, io.SeekStart)
	}
	b, err := io.ReadAll(io.LimitReader(f, tail))
	if err != nil {
		return nil
	}
	var lines []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
