package replay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
)

// A trace's kernel record is parsed as the agent parses it (kmsg.ParseRecord
// on what PlayerOptions.Kmsg receives): a line as long as a trace allows must
// still become one record of bounded size.
func TestAMegabyteKernelRecordInATraceBecomesOneBoundedRecord(t *testing.T) {
	text := "NVRM: Xid (PCI:0000:18:00): 79, pid=1, name=a, GPU has fallen off the bus. " + strings.Repeat("x", MaxLineBytes-200)
	trace := goodHeader + "\n" + `{"t":1,"kmsg":"3,1,1000000,-;` + text + `"}` + "\n"
	if len(trace) < 1<<20-300 {
		t.Fatalf("trace line of %d bytes, want about 1 MiB", len(trace))
	}
	tr, err := Read(strings.NewReader(trace), "big")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(0, 0)
	var got []kmsg.Record
	p := NewPlayer(tr, PlayerOptions{Clock: func() time.Time { return now }, Kmsg: func(raw string) {
		rec, err := kmsg.ParseRecord([]byte(raw))
		if err != nil {
			t.Errorf("parse: %v", err)
			return
		}
		got = append(got, rec)
	}})
	defer p.Close()
	now = now.Add(5 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Run(ctx) // one step: applies what is due by now, then returns
	if len(got) != 1 {
		t.Fatalf("got %d records, want 1", len(got))
	}
	rec := got[0]
	if !rec.Truncated || len(rec.Message) > kmsg.MaxMessageBytes || !strings.HasSuffix(rec.Message, kmsg.TruncatedMarker) {
		t.Errorf("record: truncated %v, %d bytes", rec.Truncated, len(rec.Message))
	}
	if c := kmsg.Classify(rec.Message); c.Code != 79 || c.PCIBusID != "0000:18:00.0" {
		t.Errorf("the truncated record classifies as %+v, want Xid 79 on 0000:18:00.0", c)
	}
}
