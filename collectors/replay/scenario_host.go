package replay

import (
	"fmt"
	"path"
)

// ScenarioHost declares the simulated node's kernel, driver and DKMS state,
// recorded as the trace's host record at 0 s: what a pass of the kernel and
// driver checks would read on such a node.
type ScenarioHost struct {
	Kernel         string `yaml:"kernel"`           // the running kernel's release
	NextBoot       string `yaml:"next_boot"`        // the kernel the next boot starts (default: the running one)
	NextBootSource string `yaml:"next_boot_source"` // how that is known (default: grubenv saved_entry)
	// Module is the loaded kernel module's version; Library the installed
	// libnvidia-ml's (default: Module's). They differ after a driver
	// upgrade without a reboot.
	Module  string           `yaml:"module"`
	Library string           `yaml:"library"`
	Kernels []ScenarioKernel `yaml:"kernels"`
	DKMS    []ScenarioDKMS   `yaml:"dkms"`
	// RebootRequired lists the packages in /var/run/reboot-required.pkgs;
	// any makes the flag file exist.
	RebootRequired []string `yaml:"reboot_required"`
	SecureBoot     string   `yaml:"secure_boot"` // enabled or disabled (default)
}

// ScenarioKernel is an installed kernel; NVIDIA is the version of the
// DKMS-built nvidia.ko installed for it, empty for none.
type ScenarioKernel struct {
	Release string `yaml:"release"`
	Headers bool   `yaml:"headers"`
	NVIDIA  string `yaml:"nvidia"`
}

// ScenarioDKMS is one line of `dkms status`.
type ScenarioDKMS struct {
	Module  string `yaml:"module"`
	Version string `yaml:"version"`
	Kernel  string `yaml:"kernel"`
	State   string `yaml:"state"`
}

// record is the host record of the declared node.
func (s *ScenarioHost) record() Host {
	h := Host{Version: HostVersion, Family: "debian", Arch: "x86_64", Kernel: s.Kernel, SecureBoot: s.SecureBoot}
	if h.SecureBoot == "" {
		h.SecureBoot = "disabled"
	}
	next, src := s.NextBoot, s.NextBootSource
	if next == "" {
		next = s.Kernel
	}
	if src == "" {
		src = "grubenv saved_entry"
	}
	h.NextBoot = &HostNextBoot{Kernel: next, Source: src}
	for _, k := range s.Kernels {
		hk := HostKernel{Release: k.Release, Headers: k.Headers}
		if k.NVIDIA != "" {
			hk.Modules = []HostModuleFile{{Path: path.Join("/lib/modules", k.Release, "updates/dkms/nvidia.ko"),
				Origin: "dkms", Version: k.NVIDIA, Signature: "signed"}}
		}
		h.Kernels = append(h.Kernels, hk)
	}
	for _, d := range s.DKMS {
		arch := ""
		if d.Kernel != "" {
			arch = h.Arch
		}
		h.DKMS = append(h.DKMS, HostDKMS{Module: d.Module, Version: d.Version, Kernel: d.Kernel, Arch: arch, State: d.State})
	}
	if s.Module != "" {
		h.Module = &HostModule{Version: s.Module, Flavor: "proprietary"}
	}
	lib := s.Library
	if lib == "" {
		lib = s.Module
	}
	if lib != "" {
		h.Library = &HostLibrary{Version: lib, Path: "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so." + lib}
	}
	if len(s.RebootRequired) > 0 {
		h.RebootRequired = &HostReboot{Packages: s.RebootRequired}
	}
	return h
}

func (s *ScenarioHost) validate() error {
	if s.Kernel == "" {
		return fmt.Errorf("host.kernel: the running kernel's release is required")
	}
	h := s.record()
	if err := h.validate(); err != nil {
		return err
	}
	return nil
}
