package remediation

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
)

// The rule matcher sees config from the operator and event fields from
// the kernel log: any config that parses, against any kernel line, decides
// without panicking, and a rule that names a code never matches an event
// without that code.
func FuzzMatch(f *testing.F) {
	f.Add("remediation:\n  hooks: {h: {argv: [/bin/true]}}\n  rules:\n    - {name: r, match: {kind: [xid], code: [79]}, hooks: [h]}\n",
		"NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.")
	f.Add("remediation:\n  hooks: {h: {argv: [/bin/true]}}\n  rules:\n    - {name: r, match: {gpu: [host, '0', GPU-1, 0000:3b:00.0], action: [reboot]}, hooks: [h]}\n",
		"NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.")
	f.Add("remediation:\n  hooks: {h: {argv: [/bin/true]}}\n  rules:\n    - {name: r, match: {transition: {to: [critical]}}, hooks: [h]}\n", "x")
	f.Fuzz(func(t *testing.T, cfg, line string) {
		c, err := ParseConfig([]byte(cfg), "fuzz.yaml")
		if err != nil || c == nil {
			return
		}
		ev := kmsg.RecordEvent(kmsg.Record{Message: line}, "", time.Time{})
		s := Subject{Event: &ev, GPU: ev.GPU}
		for _, r := range c.Rules {
			ok := r.Match.Matches(s)
			if ok && len(r.Match.Code) > 0 {
				found := false
				for _, code := range r.Match.Code {
					found = found || (codeKind(ev.Kind) && code == ev.Code)
				}
				if !found {
					t.Fatalf("rule %s matched code %d (%s) not in %v", r.Name, ev.Code, ev.Kind, r.Match.Code)
				}
			}
			if ok && r.Match.Transition != nil {
				t.Fatalf("a transition rule matched an event")
			}
			if ok && len(r.Match.Kind) > 0 && ev.Kind == event.KindUnrelated {
				t.Fatalf("matched an unrelated line")
			}
		}
	})
}

// The ledger is read from the state dir, which anything may have written:
// it parses into something the engine can use, or it is refused.
func FuzzLedger(f *testing.F) {
	l := newLedger("live")
	b, _ := json.Marshal(l)
	f.Add(b)
	f.Add([]byte(`{"version":1,"mode":"live","breaker":{"open":true}}`))
	f.Add([]byte(`{"version":1,"mode":"dry-run","rule_fired":{"r":["2026-01-01T00:00:00Z"]}} `))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := parseLedger(b)
		if err != nil {
			return
		}
		if l.LastFired == nil || l.RuleFired == nil || l.Triggered == nil || l.Boots == nil {
			t.Fatal("a parsed ledger has a nil map")
		}
		l.prune(time.Time{}, 0)
	})
}
