package dkms

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descKernelInfo = prometheus.NewDesc("gpuwarden_kernel_info",
		"Running kernel and the kernel the next boot starts, from procfs and the boot loader files.",
		[]string{"running", "next_boot"}, nil)
	descModulePresent = prometheus.NewDesc("gpuwarden_nvidia_module_present",
		"Whether an nvidia.ko is installed under /lib/modules for the installed kernel (1) or not (0).",
		[]string{"kernel"}, nil)
	descMismatch = prometheus.NewDesc("gpuwarden_driver_library_mismatch",
		"Whether the loaded NVIDIA module and the userspace libnvidia-ml differ in version (1) or not (0).",
		nil, nil)
	descRebootPending = prometheus.NewDesc("gpuwarden_reboot_pending",
		"Whether a reboot is pending, from reboot-required and the next boot kernel (1) or not (0).",
		nil, nil)
	descDKMSState = prometheus.NewDesc("gpuwarden_dkms_module_state",
		"DKMS state of a module version for a kernel and arch, read from the DKMS tree.",
		[]string{"module", "version", "kernel", "arch", "state"}, nil)
	descCheckStatus = prometheus.NewDesc("gpuwarden_check_status",
		"Result of a kernel/driver consistency check: 0 ok, 1 warning, 2 critical, 3 unknown.",
		[]string{"check"}, nil)
)

// Collector exposes the latest Report as const metrics: a scrape reads
// memory only and never touches the disk.
type Collector struct {
	latest func() (Report, bool)
}

// NewCollector returns a Collector over a source of the latest report
// (Watcher.Latest). Before the first report it exposes nothing.
func NewCollector(latest func() (Report, bool)) *Collector {
	return &Collector{latest: latest}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descKernelInfo, descModulePresent, descMismatch, descRebootPending, descDKMSState, descCheckStatus} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	r, ok := c.latest()
	if !ok {
		return
	}
	f := &r.Facts
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descKernelInfo, 1, f.RunningKernel, f.NextBoot.Kernel)
	for _, k := range f.Kernels {
		gauge(descModulePresent, boolValue(k.HasModule()), k.Release)
	}
	if f.Loaded != nil && f.Library != nil {
		gauge(descMismatch, boolValue(f.Loaded.Version != f.Library.Version))
	}
	gauge(descRebootPending, boolValue(f.Reboot.Pending))
	seen := map[[5]string]bool{}
	for _, d := range f.DKMS {
		key := [5]string{d.Module, d.Version, d.Kernel, d.Arch, d.State}
		if seen[key] {
			continue // two label sets must not collide in one scrape
		}
		seen[key] = true
		gauge(descDKMSState, 1, key[:]...)
	}
	for _, chk := range r.Checks {
		if chk.NotRun != "" && chk.Level == 0 {
			continue // a check that did not run has no status, not "ok"
		}
		gauge(descCheckStatus, float64(chk.Level.ExitCode()), chk.Check)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
