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

// Enrich fills ev's Severity, Mnemonic, Explanation, Action, HealthDuration
// and PointsAtGPU from the catalog: for xid and sxid by ev.Code, for the
// other kernel-event kinds by the kind's row (and the variant the line
// states, read from the fields the classifier extracted). Kinds the catalog
// has no row for are left alone.
func (c *Catalog) Enrich(ev *event.Event) {
	var e Entry
	switch ev.Kind {
	case event.KindXid, event.KindSXid:
		e = c.Lookup(ev.Kind, ev.Code)
	default:
		var ok bool
		if e, ok = c.LookupKind(ev.Kind, variant(ev)); !ok {
			return
		}
	}
	ev.Mnemonic, ev.Severity, ev.Action, ev.Explanation = e.Mnemonic, e.Severity, e.Action, e.Meaning
	ev.HealthDuration, ev.PointsAtGPU = e.Health, e.PointsAtGPU
	if e.Known && e.BadGPU == BadYes && (ev.Kind == event.KindXid || ev.Kind == event.KindSXid) {
		ev.Explanation += " This code usually means faulty hardware."
	}
	// Two lines say their own severity, which overrides the code's row.
	if ev.Kind == event.KindXid && ev.Code == 154 {
		if a, sev, ok := recoveryAction(ev.Raw); ok {
			ev.Action, ev.Severity = a, sev
			ev.HealthDuration = durationFor(sev, a)
		}
	}
	if ev.Kind == event.KindAPIMismatch && ev.Fix == "" {
		ev.Fix = MismatchFix
	}
	// The NVSwitch driver says itself whether an SXid was fatal; a
	// non-fatal report of a potentially fatal code is a warning.
	if ev.Kind == event.KindSXid && ev.Fields[FieldSXidSeverity] == "non-fatal" && ev.Severity == event.Critical {
		ev.Severity = event.Warning
		ev.HealthDuration = event.DurationWindow
	}
}

// MismatchFix is what to do about a driver/library version mismatch, from
// the kernel log, NVML or the DKMS checks: the module loaded is not the one
// the libraries were installed with.
const MismatchFix = "reboot, or when no process has a GPU open (fuser -v /dev/nvidia*): stop what holds the driver (nvidia-persistenced, nvidia-fabricmanager, nvidia-dcgm), " +
	"then modprobe -r nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia to load the installed module"

// variant is the severity a kernel line states itself, which picks the
// row of its kind: an AER's "Uncorrected (Fatal)", an MCE's "uncorrected".
func variant(ev *event.Event) string {
	switch ev.Kind {
	case event.KindAER:
		return ev.Fields[FieldAERSeverity]
	case event.KindMCE:
		return ev.Fields[FieldMCESeverity]
	}
	return ""
}

// durationFor is the catalog's derivation rule (see its header) for a
// severity and action that a line states itself.
func durationFor(sev event.Level, a event.Action) event.HealthDuration {
	switch {
	case sev == event.OK:
		return event.DurationNone
	case sev == event.Critical && (a == event.ActionReboot || a == event.ActionDrainAndReset):
		return event.DurationBoot
	}
	return event.DurationWindow
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
