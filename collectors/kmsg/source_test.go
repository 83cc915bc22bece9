package kmsg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/source/sourcetest"
)

// The source releases every batch once applied, so the reader parses the
// batches after it into the same memory: the events it made keep their own
// text and fields all the same, over many batches of a log with Xids here
// and there among ordinary lines.
func TestTheSourcesEventsKeepTheirTextAcrossReusedBatches(t *testing.T) {
	const n = 3*DefaultBatchSize + 17
	var b strings.Builder
	want := map[string]string{} // marker -> DEVICE
	for i := range n {
		if i%97 == 5 {
			marker := fmt.Sprintf("reuse-%04d", i)
			dev := fmt.Sprintf("+pci:0000:%02x:00.0", i%256)
			want[marker] = dev
			fmt.Fprintf(&b, "3,%d,%d,-;NVRM: Xid (PCI:0000:%02x:00): 79, pid=%d, name=%s, GPU has fallen off the bus.\n SUBSYSTEM=pci\n DEVICE=%s\n",
				i, i*10, i%256, 1000+i, marker, dev)
			continue
		}
		fmt.Fprintf(&b, "6,%d,%d,-;usb 1-1: ordinary line %d with some text after it\n SUBSYSTEM=usb\n DEVICE=c189:%d\n", i, i*10, i, i)
	}
	path := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	sink := sourcetest.New("")
	if err := (&Source{Path: path, Log: quiet}).Run(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	events := sink.Snapshot().Events
	for _, ev := range events {
		c := Classify(ev.Raw)
		if ev.Kind != event.KindXid || c.Kind != event.KindXid || c.Code != 79 {
			t.Errorf("event %s %q", ev.Kind, ev.Raw)
			continue
		}
		if want[c.ProcessName] == "" || ev.Fields[FieldDevice] != want[c.ProcessName] || ev.Fields[FieldSubsystem] != "pci" {
			t.Errorf("event %q has fields %v, want device %q", ev.Raw, ev.Fields, want[c.ProcessName])
		}
		got[c.ProcessName] = true
	}
	if len(got) != len(want) || len(events) != len(want) {
		t.Errorf("%d events, %d distinct, want %d", len(events), len(got), len(want))
	}
}
