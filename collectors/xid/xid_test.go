package xid

import (
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

func TestEmbeddedCatalogLoads(t *testing.T) {
	c := Default()
	if c.Len() != 265 {
		t.Errorf("catalog has %d codes, want 172 XIDs and 93 SXIDs", c.Len())
	}
	if c.Version == "" || len(c.Source) < 2 {
		t.Errorf("version %q sources %q: the catalog must say where it comes from", c.Version, c.Source)
	}
	for code := 1; code <= 172; code++ {
		if e := c.Lookup(event.KindXid, code); !e.Known || e.Meaning == "" || e.Mnemonic == "" {
			t.Errorf("Xid %d: %+v", code, e)
		}
	}
}

func TestCommonCodes(t *testing.T) {
	for _, tc := range []struct {
		kind   event.Kind
		code   int
		sev    event.Level
		action event.Action
		bad    bool
	}{
		{event.KindXid, 13, event.Warning, event.ActionRestartApplication, false},
		{event.KindXid, 31, event.Warning, event.ActionRestartApplication, false},
		{event.KindXid, 43, event.OK, event.ActionNone, false},
		{event.KindXid, 48, event.Critical, event.ActionDrainAndReset, true},
		{event.KindXid, 79, event.Critical, event.ActionReboot, true},
		{event.KindXid, 94, event.Warning, event.ActionRestartApplication, false},
		{event.KindXid, 95, event.Critical, event.ActionResetGPU, false},
		{event.KindXid, 119, event.Critical, event.ActionResetGPU, false},
		{event.KindSXid, 20034, event.Critical, event.ActionDrainAndReset, false},
		{event.KindSXid, 11012, event.OK, event.ActionNone, false},
	} {
		e := Lookup(tc.kind, tc.code)
		if e.Severity != tc.sev || e.Action != tc.action || e.LikelyBadGPU() != tc.bad {
			t.Errorf("%s %d: severity %s action %q bad %v; want %s %q %v", tc.kind, tc.code, e.Severity, e.Action, e.LikelyBadGPU(), tc.sev, tc.action, tc.bad)
		}
	}
}

func TestUnknownCodeIsSafeAndSaysSo(t *testing.T) {
	e := Lookup(event.KindXid, 999)
	if e.Known || e.Severity != event.Warning || e.Action != event.ActionContactSupport || !strings.Contains(e.Meaning, "not in gpuwarden's catalog") {
		t.Errorf("unknown code: %+v", e)
	}
}

func TestParseRejectsBadRows(t *testing.T) {
	head := "# catalog-version: t\nkind\tcode\tmnemonic\tseverity\taction\thealth\tpoints_at_gpu\tbad_gpu\tsources\tmeaning\n"
	for name, tc := range map[string]struct{ row, says string }{
		"bad action":     {"XID\t1\tM\twarning\tpanic\twindow\tyes\tno\tS\tmeaning", "action"},
		"bad severity":   {"XID\t1\tM\tsevere\tnone\twindow\tyes\tno\tS\tmeaning", "severity"},
		"bad kind":       {"GID\t1\tM\twarning\tnone\twindow\tyes\tno\tS\tmeaning", "kind"},
		"no meaning":     {"XID\t1\tM\twarning\tnone\twindow\tyes\tno\tS\t", "meaning"},
		"columns":        {"XID\t1\tM\twarning", "columns"},
		"bad health":     {"XID\t1\tM\twarning\tnone\tforever\tyes\tno\tS\tmeaning", "health"},
		"bad points":     {"XID\t1\tM\twarning\tnone\twindow\tmaybe\tno\tS\tmeaning", "points_at_gpu"},
		"ok that weighs": {"XID\t1\tM\tok\tnone\tboot\tyes\tno\tS\tmeaning", "health"},
		"kind with code": {"aer\t7\tM\twarning\tnone\twindow\tyes\tno\tS\tmeaning", "code"},
		"xid no code":    {"XID\t-\tM\twarning\tnone\twindow\tyes\tno\tS\tmeaning", "code"},
	} {
		_, err := Parse(head + tc.row + "\n")
		if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: err %v, want an error naming line 3 and %q", name, err, tc.says)
		}
	}
	if _, err := Parse("# catalog-version: t\nkind\tcode\tmnemonic\tseverity\taction\tbad_gpu\tsources\tmeaning\thealth\tpoints_at_gpu\n"); err == nil || !strings.Contains(err.Error(), "header") {
		t.Errorf("columns out of order: err %v, want the header named", err)
	}
}

func TestEnrichKinds(t *testing.T) {
	for _, tc := range []struct {
		ev     event.Event
		sev    event.Level
		action event.Action
	}{
		{event.Event{Kind: event.KindFallenOffBus}, event.Critical, event.ActionReboot},
		{event.Event{Kind: event.KindRmInitFailed}, event.Critical, event.ActionReboot},
		{event.Event{Kind: event.KindAPIMismatch}, event.Critical, event.ActionReboot},
		{event.Event{Kind: event.KindAER, Fields: map[string]string{FieldAERSeverity: "fatal"}}, event.Critical, event.ActionDrainAndReset},
		{event.Event{Kind: event.KindAER, Fields: map[string]string{FieldAERSeverity: "corrected"}}, event.Warning, event.ActionNone},
		{event.Event{Kind: event.KindMCE, Fields: map[string]string{FieldMCESeverity: "uncorrected"}}, event.Critical, event.ActionHardwareInspection},
		{event.Event{Kind: event.KindDriverLoaded}, event.OK, event.ActionNone},
		{event.Event{Kind: event.KindXid, Code: 154, Raw: "NVRM: Xid (PCI:0000:1b:00): 154, GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"}, event.Critical, event.ActionReboot},
		{event.Event{Kind: event.KindXid, Code: 154, Raw: "NVRM: Xid (PCI:0000:1b:00): 154, GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)"}, event.OK, event.ActionNone},
		{event.Event{Kind: event.KindSXid, Code: 20034, Fields: map[string]string{FieldSXidSeverity: "non-fatal"}}, event.Warning, event.ActionDrainAndReset},
	} {
		ev := tc.ev
		Enrich(&ev)
		if ev.Severity != tc.sev || ev.Action != tc.action || (ev.Kind != event.KindUnrelated && ev.Explanation == "") {
			t.Errorf("%s %d: severity %s action %q explanation %q; want %s %q", ev.Kind, ev.Code, ev.Severity, ev.Action, ev.Explanation, tc.sev, tc.action)
		}
	}
}

// The catalog, not code, says how long an event weighs on health and on
// what: the rows for the codes and kinds operators meet most.
func TestHealthPolicyComesFromTheCatalog(t *testing.T) {
	for _, tc := range []struct {
		ev     event.Event
		health event.HealthDuration
		points bool
	}{
		{event.Event{Kind: event.KindXid, Code: 79}, event.DurationBoot, true},
		{event.Event{Kind: event.KindXid, Code: 48}, event.DurationBoot, true},
		{event.Event{Kind: event.KindXid, Code: 13}, event.DurationWindow, true},
		{event.Event{Kind: event.KindXid, Code: 119}, event.DurationWindow, true},
		{event.Event{Kind: event.KindXid, Code: 999}, event.DurationWindow, true},
		{event.Event{Kind: event.KindSXid, Code: 11012}, event.DurationNone, false},
		{event.Event{Kind: event.KindSXid, Code: 20034}, event.DurationWindow, false},
		{event.Event{Kind: event.KindSXid, Code: 20034, Fields: map[string]string{FieldSXidSeverity: "non-fatal"}}, event.DurationWindow, false},
		{event.Event{Kind: event.KindFallenOffBus}, event.DurationBoot, true},
		{event.Event{Kind: event.KindRmInitFailed}, event.DurationBoot, true},
		{event.Event{Kind: event.KindAPIMismatch}, event.DurationBoot, false},
		{event.Event{Kind: event.KindAER, Fields: map[string]string{FieldAERSeverity: "corrected"}}, event.DurationWindow, true},
		{event.Event{Kind: event.KindMCE}, event.DurationWindow, false},
		{event.Event{Kind: event.KindGPUIdentity}, event.DurationNone, true},
		{event.Event{Kind: event.KindXid, Code: 154, Raw: "NVRM: Xid (PCI:0000:1b:00): 154, GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"}, event.DurationBoot, true},
		{event.Event{Kind: event.KindXid, Code: 154, Raw: "NVRM: Xid (PCI:0000:1b:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"}, event.DurationWindow, true},
	} {
		ev := tc.ev
		Enrich(&ev)
		if ev.HealthDuration != tc.health || ev.PointsAtGPU != tc.points {
			t.Errorf("%s %d %v: health %q points_at_gpu %v; want %q %v", ev.Kind, ev.Code, ev.Fields, ev.HealthDuration, ev.PointsAtGPU, tc.health, tc.points)
		}
	}
}

// Every kernel-event kind the classifier emits, except unrelated text, has
// a row: a new kind without one would weigh on nothing.
func TestEveryKernelKindHasARow(t *testing.T) {
	for k := range rowKinds {
		if _, ok := Default().LookupKind(k, ""); !ok {
			t.Errorf("kind %s has no '-' row in catalog.tsv", k)
		}
	}
	for _, k := range []event.Kind{event.KindXid, event.KindSXid} {
		for _, code := range Default().Codes(k) {
			e := Lookup(k, code)
			if e.Health == event.DurationUnset || (e.Severity == event.OK) != (e.Health == event.DurationNone) {
				t.Errorf("%s %d: severity %s with health %q", k, code, e.Severity, e.Health)
			}
		}
	}
}
