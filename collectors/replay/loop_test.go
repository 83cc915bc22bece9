package replay

import (
	"context"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// loopingDemo plays the demo trace in a loop on a clock the test moves.
func loopingDemo(t *testing.T) (*gpu.Collector, func(at float64), float64) {
	t.Helper()
	tr, err := Open("demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1000, 0)
	now := start
	clock := func() time.Time { return now }
	p := NewPlayer(tr, PlayerOptions{Loop: true, Clock: clock})
	t.Cleanup(p.Close)
	col := gpu.New(p.Library(), gpu.Options{Log: quiet, Clock: clock})
	t.Cleanup(col.Close)
	return col, func(at float64) { now = start.Add(time.Duration(at * float64(time.Second))) }, tr.Header.DurationS
}

// A loop is the same boot again: every counter of every GPU goes on from
// where the previous loop left it, never back to the trace's first value.
func TestALoopContinuesTheCountersOfThePreviousLoop(t *testing.T) {
	col, at, d := loopingDemo(t)
	last := map[[2]int]float64{}
	seen := map[[2]int]bool{}
	grew := 0
	for _, ts := range []float64{5, d/2 + 3, d - 20, d - 5, d + 5, d + 20, 1.5*d + 3, 2*d + 5} {
		at(ts)
		r := col.Sample(context.Background())
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		for gi, s := range r.Samples {
			for fi, f := range gpu.Fields {
				v, ok := s.Value(fi)
				if f.Type != gpu.Counter || !ok {
					continue
				}
				k := [2]int{gi, fi}
				if seen[k] && v < last[k] {
					t.Errorf("GPU %d %s at %.0f s (loop %d): %v, below the %v before", gi, f.Name, ts, int(ts/d)+1, v, last[k])
				}
				if seen[k] && ts > d && v > last[k] {
					grew++
				}
				seen[k], last[k] = true, v
			}
		}
	}
	if grew == 0 {
		t.Error("no counter grew after the first loop")
	}
	if energy := gpu.FieldIndex("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"); !seen[[2]int{0, energy}] {
		t.Fatal("GPU 0 reported no energy")
	}
}

// A GPU that fell off the bus in the trace stays lost in the next loop: the
// trace's own first minutes, where it still answered, do not bring it back.
func TestAGPULostInALoopStaysLostInTheNext(t *testing.T) {
	col, at, d := loopingDemo(t)
	at(10)
	if r := col.Sample(context.Background()); r.Samples[3].Lost {
		t.Fatal("GPU 3 lost at 10 s of the first loop; the demo loses it at 240 s")
	}
	at(d - 10)
	if r := col.Sample(context.Background()); !r.Samples[3].Lost {
		t.Fatal("GPU 3 not lost at the end of the first loop")
	}
	for _, ts := range []float64{d + 1, d + 10, 2*d + 30} {
		at(ts)
		r := col.Sample(context.Background())
		if !r.Samples[3].Lost {
			t.Errorf("GPU 3 answers again at %.0f s (loop %d)", ts, int(ts/d)+1)
		}
		for i, s := range r.Samples {
			if i != 3 && (s.Lost || s.Err != "") {
				t.Errorf("GPU %d at %.0f s: lost=%v err=%q", i, ts, s.Lost, s.Err)
			}
		}
	}
}
