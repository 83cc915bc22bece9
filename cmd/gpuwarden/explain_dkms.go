package main

import (
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
		ev.Explanation = "dkms reported an error: a module did not build or install for a kernel, so that kernel comes up without it."
		ev.Fix = "read the make.log dkms names, fix its cause (missing headers or compiler), then dkms autoinstall -k <kernel>"
	case dkms.LineDKMSStatus:
		ev.Kind, ev.Mnemonic = event.KindFinding, "DKMS_STATUS"
		switch {
		case fields["state"] == "installed" && fields["warning"] == "":
			return event.Event{}, false // the normal state says nothing wrong
		default:
			ev.Severity, ev.Action = event.Warning, event.ActionNone
			ev.Explanation = "dkms lists " + fields["module"] + "/" + fields["module_version"] + " as " + fields["state"] + " for " + fields["kernel"] +
				": not installed for that kernel, which would come up without it."
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
