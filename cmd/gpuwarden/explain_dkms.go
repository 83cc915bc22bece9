package main

import (
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
	"github.com/gpuwarden/gpuwarden/dkms"
)

// `gpuwarden explain --lines` also understands `dkms status` output, dkms
// errors, the /proc/driver/nvidia/version banner and NVML's mismatch
// message; the parsers live in dkms.
func init() {
	explain.Register("dkms", classifyDKMSLine)
	explain.RegisterEvents(dkmsEvent)
}

// dkmsEvent makes the same lines events for the report, so a pasted
// nvidia-smi mismatch or a failed dkms build is never "Overall: ok".
func dkmsEvent(line string) (event.Event, bool) {
	fields, ok := dkms.ClassifyLine(line)
	if !ok {
		return event.Event{}, false
	}
	ev := event.Event{Source: "explain", GPU: event.GPURef{Index: -1}, Raw: line, Fields: map[string]string{}}
	switch fields["kind"] {
	case dkms.LineNVMLMismatch:
		ev.Kind = event.KindAPIMismatch
		xid.Enrich(&ev)
		ev.Explanation = "NVML (nvidia-smi, dcgm, the container toolkit) found the user-space libraries and the loaded kernel module at different versions, usually after a driver upgrade without a reboot: every GPU tool fails until they match."
		if v := fields["nvml_version"]; v != "" {
			ev.Fields["nvml_version"] = v
		}
	case dkms.LineDriverVersion:
		ev.Kind = event.KindDriverLoaded
		xid.Enrich(&ev)
		ev.Fields[kmsg.FieldDriverVersion] = fields["driver_version"]
	case dkms.LineDKMSError:
		ev.Kind, ev.Severity, ev.Mnemonic = event.KindFinding, event.Critical, "DKMS_ERROR"
		ev.Action = event.ActionContactSupport
		kernel := kernelNamed(line)
		if kernel == "" {
			ev.Explanation = "dkms reported an error: a module did not build or install for a kernel, so that kernel comes up without it: if the next boot starts it, the node has no GPUs after the reboot."
			kernel = "<kernel>"
		} else {
			ev.Explanation = "dkms could not build or install a module for kernel " + kernel + ", so " + kernel + " comes up without it: if the next boot starts it (gpuwarden check says which kernel it starts), the node has no GPUs after the reboot."
		}
		ev.Fix = "read the make.log dkms names, fix its cause (missing headers for " + kernel + ", no compiler, a driver too old for the kernel), then dkms autoinstall -k " + kernel + "; do not reboot into " + kernel + " until dkms status says installed"
	case dkms.LineDKMSStatus:
		ev.Kind, ev.Mnemonic = event.KindFinding, "DKMS_STATUS"
		switch {
		case fields["state"] == "installed" && fields["warning"] == "":
			return event.Event{}, false // the normal state says nothing wrong
		case fields["state"] == "installed":
			// Installed, with a warning of dkms's own (a module from
			// another package took precedence, say).
			ev.Severity, ev.Action = event.Warning, event.ActionNone
			ev.Explanation = "dkms lists " + fields["module"] + "/" + fields["module_version"] + " as installed for " + fields["kernel"] + ", and warns: " + fields["warning"]
		case fields["kernel"] == "":
			// "added": the source is registered, built for no kernel.
			ev.Severity, ev.Action = event.Warning, event.ActionNone
			ev.Explanation = "dkms has the source of " + fields["module"] + "/" + fields["module_version"] + " (" + fields["state"] + ") but has built it for no kernel: every kernel comes up without it until it is built."
			ev.Fix = "dkms autoinstall, then dkms status shows installed for each kernel"
		default:
			mod := fields["module"] + "/" + fields["module_version"]
			ev.Severity, ev.Action = event.Warning, event.ActionNone
			ev.Explanation = "dkms lists " + mod + " as " + fields["state"] + " for " + fields["kernel"] +
				": not installed for that kernel, so if the next boot starts " + fields["kernel"] + " it comes up without the module and without GPUs."
			ev.Fix = "dkms install " + mod + " -k " + fields["kernel"] + "; gpuwarden check says which kernel the next boot starts"
			if w := fields["warning"]; w != "" {
				ev.Explanation += " dkms warns: " + w
			}
		}
	default:
		return event.Event{}, false
	}
	return ev, true
}

func classifyDKMSLine(line string) (map[string]any, bool) {
	fields, ok := dkms.ClassifyLine(line)
	if !ok {
		return nil, false
	}
	out := make(map[string]any, len(fields))
	for k, v := range fields {
		out[k] = v
	}
	return out, true
}

// kernelNamed is the kernel release a dkms error names ("... on kernel:
// 6.1.0-20-amd64 (x86_64)"), or "" when it names none.
func kernelNamed(line string) string {
	_, rest, ok := strings.Cut(line, "kernel: ")
	if !ok {
		return ""
	}
	k, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
	k = strings.TrimRight(k, ".,;:)")
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._+-~", c)) {
			return ""
		}
	}
	if len(k) > 128 {
		return ""
	}
	return k
}
