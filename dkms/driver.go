package dkms

import (
	"strings"
)

// Driver flavors: NVIDIA ships the kernel module as open source ("open",
// required on Blackwell) and as the older closed one ("proprietary").
const (
	FlavorOpen        = "open"
	FlavorProprietary = "proprietary"
)

// DriverVersion is what the loaded kernel module says about itself in
// /proc/driver/nvidia/version.
type DriverVersion struct {
	Version string `json:"driver_version"`
	Flavor  string `json:"flavor"`
	Arch    string `json:"arch,omitempty"`
}

// knownArches are the architecture words NVIDIA puts in its module banner.
var knownArches = map[string]bool{"x86_64": true, "aarch64": true, "ppc64le": true, "x86": true, "arm64": true}

// ParseDriverVersionLine parses the banner line of /proc/driver/nvidia/version:
//
//	NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023
//	NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16-I3-B03-4-3)  ...
//
// The version is the first dotted number after "NVIDIA UNIX"; "Open Kernel
// Module" marks the open flavor.
func ParseDriverVersionLine(line string) (DriverVersion, bool) {
	_, rest, ok := strings.Cut(line, "NVIDIA UNIX ")
	if !ok || !strings.Contains(rest, "Kernel Module") {
		return DriverVersion{}, false
	}
	d := DriverVersion{Flavor: FlavorProprietary}
	if strings.Contains(rest, "Open Kernel Module") {
		d.Flavor = FlavorOpen
	}
	for _, f := range strings.Fields(rest) {
		if knownArches[f] && d.Arch == "" {
			d.Arch = f
			continue
		}
		if isDriverVersion(f) {
			d.Version = f
			break
		}
	}
	if d.Version == "" {
		return DriverVersion{}, false
	}
	return d, true
}

// ParseDriverVersion parses the content of /proc/driver/nvidia/version: the
// first line that carries the module banner wins.
func ParseDriverVersion(content string) (DriverVersion, bool) {
	for l := range strings.SplitSeq(content, "\n") {
		if d, ok := ParseDriverVersionLine(l); ok {
			return d, true
		}
	}
	return DriverVersion{}, false
}

// isDriverVersion accepts NVIDIA driver versions: two or three dot-separated
// decimal fields ("550.135", "535.104.05").
func isDriverVersion(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 6 {
			return false
		}
		for _, r := range p {
			if r < '0' || r > '9' {
				return false
			}
		}
	}
	return true
}

// IsNVMLVersionMismatch reports whether an NVML error text is the
// driver/library mismatch (NVML_ERROR_LIB_RM_VERSION_MISMATCH, 18), as
// nvidia-smi ("Failed to initialize NVML: Driver/library version mismatch"),
// nvidia-container-cli and go-nvml (ERROR_LIB_RM_VERSION_MISMATCH) print it.
func IsNVMLVersionMismatch(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "driver/library version mismatch") ||
		strings.Contains(m, "lib_rm_version_mismatch") // go-nvml's Return text without the library
}
