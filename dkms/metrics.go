package dkms

import (
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// The series of a Report, with their help text. The agent renders them from
// its snapshot: a scrape reads memory only and never touches the disk.
const (
	helpKernelInfo    = "Running kernel and the kernel the next boot starts, from procfs and the boot loader files."
	helpModulePresent = "Whether an nvidia.ko is installed under /lib/modules for the installed kernel (1) or not (0)."
	helpMismatch      = "Whether the loaded NVIDIA module and the userspace libnvidia-ml differ in version (1) or not (0)."
	helpRebootPending = "Whether a reboot is pending, from reboot-required and the next boot kernel (1) or not (0)."
	helpDKMSState     = "DKMS state of a module version for a kernel and arch, read from the DKMS tree."
	helpCheckStatus   = "Result of a kernel/driver consistency check: 0 ok, 1 warning, 2 critical, 3 unknown."
	nameKernelInfo    = "gpuwarden_kernel_info"
	nameModulePresent = "gpuwarden_nvidia_module_present"
	nameMismatch      = "gpuwarden_driver_library_mismatch"
	nameRebootPending = "gpuwarden_reboot_pending"
	nameDKMSState     = "gpuwarden_dkms_module_state"
	nameCheckStatus   = "gpuwarden_check_status"
)

// Metrics are the series of r, each family's series together.
func Metrics(r Report) []source.Metric {
	var out []source.Metric
	gauge := func(name, help string, v float64, labels ...string) {
		out = append(out, source.Metric{Name: name, Help: help, Value: v, Labels: labels})
	}
	f := &r.Facts
	gauge(nameKernelInfo, helpKernelInfo, 1, "running", f.RunningKernel, "next_boot", f.NextBoot.Kernel)
	seenKernel := map[string]bool{}
	for _, k := range f.Kernels {
		if seenKernel[k.Release] {
			continue // two series must not share a label set
		}
		seenKernel[k.Release] = true
		gauge(nameModulePresent, helpModulePresent, boolValue(k.HasModule()), "kernel", k.Release)
	}
	if f.Loaded != nil && f.Library != nil {
		gauge(nameMismatch, helpMismatch, boolValue(f.Loaded.Version != f.Library.Version))
	}
	gauge(nameRebootPending, helpRebootPending, boolValue(f.Reboot.Pending))
	seen := map[[5]string]bool{}
	for _, d := range f.DKMS {
		key := [5]string{d.Module, d.Version, d.Kernel, d.Arch, d.State}
		if seen[key] {
			continue
		}
		seen[key] = true
		gauge(nameDKMSState, helpDKMSState, 1, "module", d.Module, "version", d.Version, "kernel", d.Kernel, "arch", d.Arch, "state", d.State)
	}
	seenCheck := map[string]bool{}
	for _, chk := range r.Checks {
		if (chk.NotRun != "" && chk.Level == 0) || seenCheck[chk.Check] {
			continue // a check that did not run has no status, not "ok"
		}
		seenCheck[chk.Check] = true
		gauge(nameCheckStatus, helpCheckStatus, float64(chk.Level.ExitCode()), "check", chk.Check)
	}
	return out
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
