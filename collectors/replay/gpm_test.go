package replay

import (
	"context"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// A trace from before GPM (no GPM answers) replays the profiling fields as
// absent with a reason, never as zero.
func TestATraceWithoutGPMAnswersHasNoProfiling(t *testing.T) {
	tr := &Trace{Header: Header{GPUs: []gpu.Info{{Index: 0}}}}
	start := time.Unix(0, 0)
	p := NewPlayer(tr, PlayerOptions{Clock: func() time.Time { return start }})
	col := gpu.New(p.Library(), gpu.Options{Log: quiet})
	defer col.Close()
	for range 2 {
		r := col.Sample(context.Background())
		if st := r.Samples[0].Status[gpu.FieldIndex("DCGM_FI_PROF_SM_ACTIVE")]; st != gpu.StatusNoSource {
			t.Fatalf("SM_ACTIVE %v, want no_source", st)
		}
	}
}

// What GPM sampling costs per GPU per interval, on the replay backend: a
// round with GPM against the same round with profiling paused.
func BenchmarkGPMPerGPUPerInterval(b *testing.B) {
	tr, err := Open("demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		paused bool
	}{{"gpm", false}, {"paused", true}} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Unix(0, 0)
			now := start.Add(100 * time.Second)
			p := NewPlayer(tr, PlayerOptions{Clock: func() time.Time { return now }})
			col := gpu.New(p.Library(), gpu.Options{Log: quiet, ProfilingPaused: func() bool { return c.paused }})
			defer col.Close()
			col.Sample(context.Background())
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				col.Sample(context.Background())
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/8, "ns/gpu")
		})
	}
}

// A trace starts with the recording collector's warm-up round, which asked
// for no metric: until the first answer, replay says NOT_READY (warming up),
// never NOT_SUPPORTED, which the collector would log as a missing field.
func TestReplayWarmsUpUntilTheTraceHasGPMAnswers(t *testing.T) {
	tr, err := Open("demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(0, 0)
	now := start
	p := NewPlayer(tr, PlayerOptions{Clock: func() time.Time { return now }})
	col := gpu.New(p.Library(), gpu.Options{Log: quiet, Clock: func() time.Time { return now }})
	defer col.Close()
	sm := gpu.FieldIndex("DCGM_FI_PROF_SM_ACTIVE")
	for _, at := range []time.Duration{0, time.Second, 2 * time.Second, 6 * time.Second} {
		now = start.Add(at)
		r := col.Sample(context.Background())
		want := gpu.StatusWarmingUp
		if at == 6*time.Second {
			want = gpu.StatusOK
		}
		if st := r.Samples[0].Status[sm]; st != want {
			t.Errorf("at %v: SM_ACTIVE %v, want %v", at, st, want)
		}
	}
}
