package dkms

import (
	"strings"
	"testing"
)

// Status lines in both formats. Sources: dkms's do_status/do_status_weak
// (dell/dkms 3.0.x, as installed here), the format change recorded in
// OpenStack diskimage-builder on Ubuntu Jammy (2.x comma form vs 3.x slash
// form), and the annotation wordings of dkms <= 3.1.2 and >= 3.1.3.
func TestParseStatusLine(t *testing.T) {
	tests := []struct {
		line string
		want StatusLine
		ok   bool
	}{
		{"nvidia/535.104.05, 6.5.0-1-amd64, x86_64: installed",
			StatusLine{Module: "nvidia", Version: "535.104.05", Kernel: "6.5.0-1-amd64", Arch: "x86_64", State: "installed"}, true},
		{"nvidia, 535.104.05, 6.5.0-1-amd64, x86_64: installed",
			StatusLine{Module: "nvidia", Version: "535.104.05", Kernel: "6.5.0-1-amd64", Arch: "x86_64", State: "installed"}, true},
		{"nvidia, 510.47.03, 5.4.0-109-generic, x86_64: installed",
			StatusLine{Module: "nvidia", Version: "510.47.03", Kernel: "5.4.0-109-generic", Arch: "x86_64", State: "installed"}, true},
		{"nvidia/535.104.05, 6.5.0-1-amd64, x86_64: installed (WARNING! Diff between built and installed module!)",
			StatusLine{Module: "nvidia", Version: "535.104.05", Kernel: "6.5.0-1-amd64", Arch: "x86_64", State: "installed",
				Warning: "(WARNING! Diff between built and installed module!)"}, true},
		{"nvidia/550.54.15, 6.8.0-45-generic, x86_64: installed (Original modules exist) (Differences between built and installed modules)",
			StatusLine{Module: "nvidia", Version: "550.54.15", Kernel: "6.8.0-45-generic", Arch: "x86_64", State: "installed",
				Warning: "(Original modules exist) (Differences between built and installed modules)"}, true},
		{"nvidia-open/570.86.10, 5.14.0-503.29.1.el9_5.x86_64, x86_64: built",
			StatusLine{Module: "nvidia-open", Version: "570.86.10", Kernel: "5.14.0-503.29.1.el9_5.x86_64", Arch: "x86_64", State: "built"}, true},
		{"nvidia, 570.86.10, 5.14.0-503.30.1.el9_5.x86_64, x86_64: installed-weak from 5.14.0-503.29.1.el9_5.x86_64",
			StatusLine{Module: "nvidia", Version: "570.86.10", Kernel: "5.14.0-503.30.1.el9_5.x86_64", Arch: "x86_64", State: "installed-weak",
				Warning: "from 5.14.0-503.29.1.el9_5.x86_64"}, true},
		{"nvidia/535.104.05: added", StatusLine{Module: "nvidia", Version: "535.104.05", State: "added"}, true},
		{"nvidia, 535.104.05: added", StatusLine{Module: "nvidia", Version: "535.104.05", State: "added"}, true},
		{"nvidia-current/525.147.05: broken", StatusLine{Module: "nvidia-current", Version: "525.147.05", State: "broken"}, true},
		{"Error! Could not locate dkms.conf file.", StatusLine{Error: true}, true},
		{"Error! Bad return status for module build on kernel: 6.5.0-1-amd64 (x86_64)", StatusLine{Error: true}, true},
		{"dkms: running auto installation service for kernel 6.5.0-1-amd64 failed with error", StatusLine{Error: true}, true},
		{"", StatusLine{}, false},
		{"Consult /var/lib/dkms/nvidia/535.104.05/build/make.log for more information.", StatusLine{}, false},
		{"Deprecated feature: REMAKE_INITRD (/usr/src/nvidia-535.104.05/dkms.conf)", StatusLine{}, false},
		{"nvidia/535.104.05, 6.5.0-1-amd64: installed", StatusLine{}, false},
		{"nvidia/535.104.05, 6.5.0-1-amd64, x86_64: ", StatusLine{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseStatusLine(tt.line)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseStatusLine(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseStatusSkipsOtherLines(t *testing.T) {
	out := "Deprecated feature: REMAKE_INITRD\nnvidia/535.104.05, 6.5.0-1-amd64, x86_64: installed\n\nError! Something\nnvidia/550.54.15: added\n"
	got := ParseStatus(out)
	if len(got) != 3 || got[0].State != "installed" || !got[1].Error || got[2].State != "added" {
		t.Fatalf("ParseStatus = %+v", got)
	}
}

// Banners from /proc/driver/nvidia/version as published in public bug
// reports (proprietary x86_64, open x86_64, aarch64 of both kinds).
func TestParseDriverVersionLine(t *testing.T) {
	tests := []struct {
		line string
		want DriverVersion
		ok   bool
	}{
		{"NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023",
			DriverVersion{Version: "535.104.05", Flavor: FlavorProprietary, Arch: "x86_64"}, true},
		{"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16-I3-B03-4-3)  Thu Jan 23 01:21:09 UTC 2025",
			DriverVersion{Version: "570.86.15", Flavor: FlavorOpen, Arch: "x86_64"}, true},
		{"NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  550.54.15  Release Build  (dvs-builder@U16-I3-A16-1-1)  Tue Mar  5 22:16:50 UTC 2024",
			DriverVersion{Version: "550.54.15", Flavor: FlavorOpen, Arch: "aarch64"}, true},
		{"NVRM version: NVIDIA UNIX aarch64 Kernel Module  535.161.08  Tue Mar  5 22:21:23 UTC 2024",
			DriverVersion{Version: "535.161.08", Flavor: FlavorProprietary, Arch: "aarch64"}, true},
		{"NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.135  Fri Jan 10 20:00:00 UTC 2025",
			DriverVersion{Version: "550.135", Flavor: FlavorProprietary, Arch: "x86_64"}, true},
		{"GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)", DriverVersion{}, false},
		{"NVRM version: NVIDIA UNIX x86_64 Kernel Module", DriverVersion{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseDriverVersionLine(tt.line)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseDriverVersionLine(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestClassifyLine(t *testing.T) {
	tests := []struct {
		line string
		want map[string]string
	}{
		{"nvidia/535.104.05: added", map[string]string{"kind": "dkms_status", "module": "nvidia", "module_version": "535.104.05", "kernel": "", "arch": "", "state": "added", "warning": ""}},
		{"nvidia, 535.104.05, 6.5.0-1-amd64, x86_64: installed (WARNING! Diff between built and installed module!)",
			map[string]string{"kind": "dkms_status", "module": "nvidia", "module_version": "535.104.05", "kernel": "6.5.0-1-amd64", "arch": "x86_64", "state": "installed", "warning": "(WARNING! Diff between built and installed module!)"}},
		{"Error! The directory /var/lib/dkms/nvidia/535.104.05/source does not appear to have module source located within it.",
			map[string]string{"kind": "dkms_error", "module": "", "module_version": "", "kernel": "", "arch": "", "state": "", "warning": ""}},
		{"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16-I3-B03-4-3)  Thu Jan 23 01:21:09 UTC 2025",
			map[string]string{"kind": "driver_version", "driver_version": "570.86.15", "flavor": "open", "arch": "x86_64"}},
		{"Failed to initialize NVML: Driver/library version mismatch", map[string]string{"kind": "nvml_mismatch", "nvml_version": ""}},
		{"NVML library version: 550.54", map[string]string{"kind": "nvml_mismatch", "nvml_version": "550.54"}},
		{"nvidia-container-cli: initialization error: nvml error: driver/library version mismatch", map[string]string{"kind": "nvml_mismatch", "nvml_version": ""}},
	}
	for _, tt := range tests {
		got, ok := ClassifyLine(tt.line)
		if !ok || len(got) != len(tt.want) {
			t.Errorf("ClassifyLine(%q) = %v, %v; want %v", tt.line, got, ok, tt.want)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("ClassifyLine(%q)[%s] = %q, want %q", tt.line, k, got[k], v)
			}
		}
	}
	if got, ok := ClassifyLine("NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, GPU has fallen off the bus."); ok {
		t.Errorf("an Xid line is the kernel-log classifier's, got %v", got)
	}
}

func TestCompareKernels(t *testing.T) {
	ordered := []string{
		"5.14.0-427.13.1.el9_4.x86_64", "5.14.0-503.29.1.el9_5.x86_64", "6.1.0-9-amd64",
		"6.1.0-17-amd64", "6.1.0-18-amd64", "6.1.0-20-amd64", "6.8.0-45-generic", "6.10.0-1-amd64",
	}
	for i := range ordered {
		for j := range ordered {
			got := compareKernels(ordered[i], ordered[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got != want {
				t.Errorf("compareKernels(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

func FuzzParseStatusLine(f *testing.F) {
	for _, s := range []string{
		"nvidia/535.104.05, 6.5.0-1-amd64, x86_64: installed",
		"nvidia, 535.104.05, 6.5.0-1-amd64, x86_64: installed (WARNING! Missing some built modules!)",
		"nvidia/535.104.05: added", "Error! x", "dkms: error", "a, b, c, d, e: f", ": :", "/,: ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		s, ok := ParseStatusLine(line)
		if !ok {
			if s != (StatusLine{}) {
				t.Fatalf("not ok but fields set: %+v", s)
			}
			return
		}
		if s.Error {
			if s.Module != "" || s.State != "" {
				t.Fatalf("error line with fields: %+v", s)
			}
			return
		}
		if !isToken(s.Module) || !isToken(s.Version) || !isState(s.State) || (s.Kernel == "") != (s.Arch == "") {
			t.Fatalf("%q parsed to an invalid line %+v", line, s)
		}
		// What we parsed must be there, in order: module, version, state.
		head, tail, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if !strings.HasPrefix(head, s.Module) || !strings.Contains(head, s.Version) || !strings.HasPrefix(strings.TrimSpace(tail), s.State) {
			t.Fatalf("%q: fields %+v are not in the line", line, s)
		}
		if s.Warning != strings.TrimSpace(s.Warning) {
			t.Fatalf("warning not trimmed: %q", s.Warning)
		}
		fields, ok := ClassifyLine(line)
		if !ok || fields["kind"] == "" {
			t.Fatalf("ClassifyLine refused a status line %q", line)
		}
	})
}

func FuzzParseDriverVersion(f *testing.F) {
	for _, s := range []string{
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc 12\n",
		"NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  570.86.15  Release Build",
		"NVIDIA UNIX Kernel Module 1.2", "NVIDIA UNIX Kernel Module 1..2 3.4.5.6",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		d, ok := ParseDriverVersion(content)
		if !ok {
			return
		}
		if !isDriverVersion(d.Version) || !strings.Contains(content, d.Version) {
			t.Fatalf("%q: version %q is not a driver version from the text", content, d.Version)
		}
		if d.Flavor != FlavorOpen && d.Flavor != FlavorProprietary {
			t.Fatalf("flavor %q", d.Flavor)
		}
		if d.Arch != "" && !knownArches[d.Arch] {
			t.Fatalf("arch %q", d.Arch)
		}
	})
}
