package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// The counters go on after a restart: a checkpoint made by one State and
// restored into a new one gives the same series, and only once.
func TestCheckpointCarriesTheCountersOnce(t *testing.T) {
	st, _ := demoWithClock(t)
	st.ApplyEvents([]event.Event{
		kernelEvent(t, "NVRM: Xid (PCI:0000:3a:00): 13, pid=1, name=x, Graphics Exception"),
		kernelEvent(t, "NVRM: Xid (PCI:0000:77:00): 31, pid=1, name=x, MMU Fault"),
		kernelEvent(t, "NVRM: Xid (PCI:0000:77:00): 4242, pid=1, name=x, new code"),
	}, nil)
	cp := st.Checkpoint()
	before := grepLines(scrape(t, st), "gpuwarden_xid_errors_total")

	next, _ := demoWithClock(t)
	for range 2 { // a source that runs again restores again: counted once
		if err := next.RestoreCheckpoint(cp); err != nil {
			t.Fatal(err)
		}
	}
	if after := grepLines(scrape(t, next), "gpuwarden_xid_errors_total"); after != before {
		t.Errorf("after a restore:\n%s\nwant:\n%s", after, before)
	}
	if k := next.Snapshot().KindCounts[event.KindXid]; k != 3 {
		t.Errorf("kernel events of kind xid: %d, want 3", k)
	}
}

func TestACorruptCheckpointIsRefused(t *testing.T) {
	st := NewState("h", 0, time.Hour, nil)
	for name, b := range map[string]string{
		"not json":      "{",
		"version":       `{"version":2}`,
		"unknown field": `{"version":1,"extra":1}`,
		"negative gpu":  `{"version":1,"xids":[{"GPU":-7,"Xid":13,"Count":1}]}`,
		"trailing":      `{"version":1} x`,
	} {
		if err := st.RestoreCheckpoint([]byte(b)); err == nil || !strings.Contains(err.Error(), "checkpoint") {
			t.Errorf("%s: err %v, want a checkpoint error", name, err)
		}
	}
	if len(st.Snapshot().XidCounts) != 0 {
		t.Error("a refused checkpoint changed the counters")
	}
}

// The checkpoint is read from the state dir, which anything may have
// written: it is refused or restored, never a panic, and never more
// series than the bounded counters can have.
func FuzzRestoreCheckpoint(f *testing.F) {
	f.Add([]byte(`{"version":1,"xids":[{"GPU":0,"UUID":"GPU-1","PCIBusID":"00000000:18:00.0","Xid":13,"Count":2}],"kinds":{"xid":2},"events":[{"kind":"xid","severity":"warning","count":2}]}`))
	f.Add([]byte(`{"version":1,"xids":[{"GPU":-1,"PCIBusID":"unknown","Xid":0,"Count":18446744073709551615}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st := NewState("h", 0, time.Hour, nil)
		if err := st.RestoreCheckpoint(b); err != nil {
			return
		}
		snap := st.Snapshot()
		if len(snap.XidCounts) > maxCheckpointSeries {
			t.Fatalf("%d series from one checkpoint", len(snap.XidCounts))
		}
		_ = scrape(t, st)
	})
}
