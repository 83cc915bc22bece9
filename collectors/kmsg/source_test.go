package kmsg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// eventSink is a source.Sink that keeps the fresh events it is given.
type eventSink struct {
	mu     sync.Mutex
	events []event.Event
}

func (s *eventSink) Events(fresh, _ []event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, fresh...)
}
func (s *eventSink) Ran(time.Duration)                       {}
func (s *eventSink) Report(source.Finding)                   {}
func (s *eventSink) Stats([]source.Metric)                   {}
func (s *eventSink) Checkpoint() []byte                      { return nil }
func (s *eventSink) Restore([]byte) error                    { return nil }
func (s *eventSink) GPUs() source.GPUView                    { return noGPUs{} }
func (noGPUs) WaitFirstRound(context.Context, time.Duration) {}
func (noGPUs) DriverVersion() (string, error)                { return "", fmt.Errorf("no driver") }
func (noGPUs) GPUs() []source.GPU                            { return nil }

type noGPUs struct{}

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
	sink := &eventSink{}
	if err := (&Source{Path: path, Log: quiet}).Run(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, ev := range sink.events {
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
	if len(got) != len(want) || len(sink.events) != len(want) {
		t.Errorf("%d events, %d distinct, want %d", len(sink.events), len(got), len(want))
	}
}
