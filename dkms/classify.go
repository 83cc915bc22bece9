package dkms

import "strings"

// Line kinds ClassifyLine gives, as the "kind" key.
const (
	LineDKMSStatus    = "dkms_status"
	LineDKMSError     = "dkms_error"
	LineDriverVersion = "driver_version"
	LineNVMLMismatch  = "nvml_mismatch"
)

// ClassifyLine recognises the lines `gpuwarden explain` gets from DKMS and
// driver tools and returns their fields (the keys of explain's --lines
// output). ok is false for any other line.
//
//   - a `dkms status` line: kind=dkms_status, module, module_version,
//     kernel, arch, state, warning (kernel and arch empty for "added");
//   - a dkms error line ("Error! ...", "dkms: ... error"): kind=dkms_error,
//     the other keys empty;
//   - the /proc/driver/nvidia/version banner ("NVRM version: NVIDIA UNIX
//     ..."): kind=driver_version, driver_version, flavor, arch;
//   - NVML's "Driver/library version mismatch" (nvidia-smi, container
//     runtimes): kind=nvml_mismatch, and nvml_version when the line carries
//     "NVML library version: <v>".
func ClassifyLine(line string) (map[string]string, bool) {
	if strings.HasPrefix(strings.TrimSpace(line), "NVRM version:") {
		if d, ok := ParseDriverVersionLine(line); ok {
			return map[string]string{"kind": LineDriverVersion, "driver_version": d.Version, "flavor": d.Flavor, "arch": d.Arch}, true
		}
	}
	if IsNVMLVersionMismatch(line) {
		return map[string]string{"kind": LineNVMLMismatch, "nvml_version": nvmlLibraryVersion(line)}, true
	}
	if _, v, ok := strings.Cut(line, "NVML library version:"); ok {
		// nvidia-smi prints it on the line after the mismatch.
		return map[string]string{"kind": LineNVMLMismatch, "nvml_version": strings.TrimSpace(v)}, true
	}
	s, ok := ParseStatusLine(line)
	if !ok {
		return nil, false
	}
	if s.Error {
		return map[string]string{"kind": LineDKMSError, "module": "", "module_version": "", "kernel": "", "arch": "", "state": "", "warning": ""}, true
	}
	return map[string]string{
		"kind": LineDKMSStatus, "module": s.Module, "module_version": s.Version,
		"kernel": s.Kernel, "arch": s.Arch, "state": s.State, "warning": s.Warning,
	}, true
}

func nvmlLibraryVersion(line string) string {
	if _, v, ok := strings.Cut(line, "NVML library version:"); ok {
		return strings.TrimSpace(v)
	}
	return ""
}
