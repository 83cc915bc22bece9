package xid

import (
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// Field names that Enrich reads from event.Event.Fields. The kmsg classifier
// writes them; other sources may too.
const (
	FieldAERSeverity  = "aer_severity"  // corrected, uncorrected, fatal
	FieldSXidSeverity = "sxid_severity" // fatal, non-fatal, as printed by the NVSwitch driver
	FieldMCESeverity  = "mce_severity"  // corrected, uncorrected
)

// advice is the catalog's answer for kernel-log kinds that carry no code.
type advice struct {
	mnemonic string
	severity event.Level
	action   event.Action
	meaning  string
}

// kindAdvice is policy, written down in one table: how bad each non-Xid kind
// is and what to do about it.
var kindAdvice = map[event.Kind]advice{
	event.KindFallenOffBus: {"GPU_FALLEN_OFF_BUS", event.Critical, event.ActionReboot,
		"The GPU stopped answering on PCIe and the driver gave up on it. Drain the node and reboot " +
			"(a GPU reset rarely brings it back); if it recurs, inspect the GPU, riser, slot and power."},
	event.KindRmInitFailed: {"RM_INIT_ADAPTER_FAILED", event.Critical, event.ActionReboot,
		"The driver could not initialize the GPU, so it is unusable until fixed. Reboot; if it persists, " +
			"check the lines just before it (firmware, BAR or power errors) and the hardware."},
	event.KindAPIMismatch: {"DRIVER_API_MISMATCH", event.Critical, event.ActionReboot,
		"The loaded kernel module and the user-space driver libraries have different versions, usually after " +
			"a driver upgrade without a reboot. Reboot or reload the nvidia modules so the versions match."},
	event.KindGPUIdentity: {"GPU_IDENTITY", event.OK, event.ActionNone,
		"The driver named the GPU at this PCI address by its UUID (printed once, before its first Xid)."},
	event.KindDriverLoaded: {"DRIVER_LOADED", event.OK, event.ActionNone,
		"The NVIDIA kernel module was loaded; this line gives its version."},
	event.KindOtherNVRM: {"NVIDIA_DRIVER_MESSAGE", event.OK, event.ActionNone,
		"Another message from an NVIDIA kernel module. On its own it needs no action; read it together " +
			"with any Xid near it."},
	event.KindUnrelated: {"", event.OK, event.ActionNone, ""},
}

// Enrich fills ev's Severity, Mnemonic, Explanation and Action from the
// catalog (for xid and sxid, by ev.Code) or from the per-kind policy, using
// the fields the classifier extracted. Kinds it does not know are left alone.
func (c *Catalog) Enrich(ev *event.Event) {
	switch ev.Kind {
	case event.KindXid, event.KindSXid:
		e := c.Lookup(ev.Kind, ev.Code)
		ev.Mnemonic = e.Mnemonic
		ev.Severity = e.Severity
		ev.Action = e.Action
		ev.Explanation = e.Meaning
		if e.Known && e.BadGPU == BadYes {
			ev.Explanation += " This code usually means faulty hardware."
		}
		if ev.Kind == event.KindXid && ev.Code == 154 {
			if a, sev, ok := recoveryAction(ev.Raw); ok {
				ev.Action, ev.Severity = a, sev
			}
		}
		// The NVSwitch driver says itself whether an SXid was fatal; a
		// non-fatal report of a potentially fatal code is a warning.
		if ev.Kind == event.KindSXid && ev.Fields[FieldSXidSeverity] == "non-fatal" && ev.Severity == event.Critical {
			ev.Severity = event.Warning
		}
	case event.KindAER:
		ev.Mnemonic = "PCIE_AER"
		switch ev.Fields[FieldAERSeverity] {
		case "fatal", "uncorrected":
			ev.Severity = event.Critical
			ev.Action = event.ActionDrainAndReset
			ev.Explanation = "An uncorrected PCIe error was reported on this link; the device behind it may " +
				"have lost data or fallen off the bus. Drain and reset (reboot if the device is gone), then " +
				"inspect the slot, riser and cabling if it recurs."
		case "corrected":
			ev.Severity = event.Warning
			ev.Action = event.ActionNone
			ev.Explanation = "PCIe corrected an error on this link by itself. A few are harmless; a steady " +
				"stream points at signal integrity (seating, riser, cable) and can precede a GPU falling off the bus."
		default:
			ev.Severity = event.Warning
			ev.Action = event.ActionNone
			ev.Explanation = "Detail or status line of a PCIe Advanced Error Reporting message; read it with " +
				"the AER error line before it."
		}
	case event.KindMCE:
		ev.Mnemonic = "MACHINE_CHECK"
		ev.Action = event.ActionHardwareInspection
		if ev.Fields[FieldMCESeverity] == "uncorrected" {
			ev.Severity = event.Critical
			ev.Explanation = "The CPU reported an uncorrected machine check (CPU, memory or interconnect). " +
				"This is a host problem, not a GPU one; inspect the host's hardware."
		} else {
			ev.Severity = event.Warning
			ev.Explanation = "The CPU reported a machine check (CPU, cache, memory or interconnect error). " +
				"Corrected ones are informational in small numbers; repeated ones need hardware inspection."
		}
	default:
		a, ok := kindAdvice[ev.Kind]
		if !ok {
			return
		}
		ev.Mnemonic = a.mnemonic
		ev.Severity = a.severity
		ev.Action = a.action
		ev.Explanation = a.meaning
	}
}

// Enrich is Default().Enrich.
func Enrich(ev *event.Event) { Default().Enrich(ev) }

// recoveryAction reads the recovery that an Xid 154 line names. The driver
// prints "changed from 0x0 (None) to 0x1 (GPU Reset Required)", so only the
// text after the last " to " counts.
func recoveryAction(text string) (event.Action, event.Level, bool) {
	if i := strings.LastIndex(text, " to "); i >= 0 {
		text = text[i:]
	}
	switch {
	case strings.Contains(text, "Node Reboot Required"), strings.Contains(text, "System Reboot Required"):
		return event.ActionReboot, event.Critical, true
	case strings.Contains(text, "Drain and Reset"):
		return event.ActionDrainAndReset, event.Critical, true
	case strings.Contains(text, "GPU Reset Required"), strings.Contains(text, "Bus Reset Required"):
		return event.ActionResetGPU, event.Critical, true
	case strings.Contains(text, "Drain P2P"):
		return event.ActionRestartApplication, event.Warning, true
	case strings.Contains(text, "None"):
		return event.ActionNone, event.OK, true
	}
	return "", 0, false
}
