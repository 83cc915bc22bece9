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
	head := "# catalog-version: t\nkind\tcode\tmnemonic\tseverity\taction\tbad_gpu\tsources\tmeaning\n"
	for name, row := range map[string]string{
		"bad action":   "XID\t1\tM\twarning\tpanic\tno\tS\tmeaning",
		"bad severity": "XID\t1\tM\tsevere\tnone\tno\tS\tmeaning",
		"bad kind":     "GID\t1\tM\twarning\tnone\tno\tS\tmeaning",
		"no meaning":   "XID\t1\tM\twarning\tnone\tno\tS\t",
		"columns":      "XID\t1\tM\twarning",
	} {
		if _, err := Parse(head + row + "\n"); err == nil || !strings.Contains(err.Error(), "line 3") {
			t.Errorf("%s: err %v, want an error naming line 3", name, err)
		}
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
