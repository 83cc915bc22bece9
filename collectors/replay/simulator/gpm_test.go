package simulator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// profiling renders a round's profiling fields, per GPU and GPU instance,
// status and value, for comparing two rounds exactly.
func profiling(r gpu.Round) string {
	var b strings.Builder
	for _, s := range r.Samples {
		for fi, f := range gpu.Fields {
			if f.Profiling {
				fmt.Fprintf(&b, "gpu%d %s %v %v\n", s.GPU.Index, f.Name, s.Status[fi], s.Values[fi])
			}
		}
		for _, in := range s.Instances {
			for fi, f := range gpu.Fields {
				if f.PerInstance {
					fmt.Fprintf(&b, "gpu%d gi%d %s %s %v %v\n", s.GPU.Index, in.ID, in.Profile, f.Name, in.Status[fi], in.Values[fi])
				}
			}
		}
	}
	return b.String()
}

// A trace keeps what GPM answered, so replaying it gives the collector the
// very profiling values it read when recording, MIG instances included.
func TestGPMReplaysExactlyWhatWasRecorded(t *testing.T) {
	sc := demoScenario(t)
	sim := New(sc)
	rec := replay.NewRecorder(sim.Library())
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	col := gpu.New(rec.Library(), gpu.Options{Clock: clock, Log: quiet})
	var recorded []string
	times := []float64{100, 105, 110, 115, 240, 245}
	for _, ts := range times {
		now = time.Unix(0, 0).Add(time.Duration(ts * float64(time.Second)))
		sim.Step(ts)
		recorded = append(recorded, profiling(col.Sample(context.Background())))
		rec.Commit(ts)
	}
	col.Close()

	start := time.Unix(0, 0)
	now = start
	p := replay.NewPlayer(rec.Trace(replay.Header{Format: replay.Format, Version: replay.Version, Source: "test", Hostname: "h",
		DriverVersion: col.DriverVersion(), DurationS: 300, GPUs: col.GPUs()}), replay.PlayerOptions{Clock: clock})
	play := gpu.New(p.Library(), gpu.Options{Clock: clock, Log: quiet})
	defer play.Close()
	for i, ts := range times {
		now = start.Add(time.Duration(ts * float64(time.Second)))
		got := profiling(play.Sample(context.Background()))
		if got != recorded[i] {
			t.Fatalf("at %gs replayed\n%s\nrecorded\n%s", ts, got, recorded[i])
		}
	}
	for _, want := range []string{"gpu0 DCGM_FI_PROF_SM_ACTIVE ok", "gpu7 gi13 1g.10gb DCGM_FI_PROF_SM_ACTIVE ok",
		"gpu7 DCGM_FI_PROF_SM_ACTIVE per_mig_instance", "gpu0 DCGM_FI_PROF_SM_ACTIVE warming_up", "gpu3 DCGM_FI_PROF_SM_ACTIVE gpu_lost"} {
		if !strings.Contains(strings.Join(recorded, ""), want) {
			t.Errorf("no %q in what was recorded", want)
		}
	}
}

// A metric's own error return is kept and replayed as itself.
func TestAGPMMetricErrorRoundTrips(t *testing.T) {
	sim := New(demoScenario(t))
	sim.Step(60)
	srv := sim.server
	inner := srv.GpmMetricsGetFunc
	srv.GpmMetricsGetFunc = func(m *nvml.GpmMetricsGetType) nvml.Return {
		ret := inner(m)
		if m.Metrics[0].MetricId == uint32(nvml.GPM_METRIC_FP64_UTIL) {
			m.Metrics[0].NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
		}
		return ret
	}
	rec := replay.NewRecorder(sim.Library())
	lib := rec.Library()
	d, _ := lib.DeviceGetHandleByIndex(0)
	s1, _ := lib.GpmSampleAlloc()
	s2, _ := lib.GpmSampleAlloc()
	d.GpmSampleGet(s1)
	d.GpmSampleGet(s2)
	ask := func(lib gpu.Library, a, b nvml.GpmSample) string {
		m := &nvml.GpmMetricsGetType{NumMetrics: 1, Sample1: a, Sample2: b}
		var out []string
		for _, id := range []nvml.GpmMetricId{nvml.GPM_METRIC_SM_UTIL, nvml.GPM_METRIC_FP64_UTIL} {
			m.Metrics[0] = nvml.GpmMetric{MetricId: uint32(id)}
			ret := lib.GpmMetricsGet(m)
			v := m.Metrics[0].Value
			if m.Metrics[0].NvmlReturn != 0 {
				v = 0 // valid only with a success
			}
			out = append(out, fmt.Sprintf("%d=%v/%d/%v", id, v, m.Metrics[0].NvmlReturn, ret))
		}
		return strings.Join(out, " ")
	}
	recorded := ask(lib, s1, s2)
	rec.Commit(0)
	start := time.Unix(0, 0)
	p := replay.NewPlayer(rec.Trace(replay.Header{GPUs: []gpu.Info{{Index: 0}}}), replay.PlayerOptions{Clock: func() time.Time { return start }})
	pl := p.Library()
	pd, _ := pl.DeviceGetHandleByIndex(0)
	p1, _ := pl.GpmSampleAlloc()
	p2, _ := pl.GpmSampleAlloc()
	pd.GpmSampleGet(p1)
	pd.GpmSampleGet(p2)
	if played := ask(pl, p1, p2); played != recorded || !strings.Contains(recorded, fmt.Sprintf("11=0/%d", nvml.ERROR_NOT_SUPPORTED)) {
		t.Errorf("recorded %s, played %s", recorded, played)
	}
}
