package gpu_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/collectors/replay/simulator"
)

// gpmNode is the simulated DGX H100 with its GPM answered by the test:
// per GPU (and GPU instance) metric values in GPM's units, each sample
// buffer remembering what it was taken of, and every pairing checked.
type gpmNode struct {
	t   *testing.T
	sim *simulator.Simulation
	srv *server.Server

	mu      sync.Mutex
	values  map[int]map[nvml.GpmMetricId]float64 // by GPU; a missing metric answers NOT_SUPPORTED
	taken   map[*mock.GpmSample]int              // sample -> GPU (or 100*GPU+GI for an instance)
	history map[int][]*mock.GpmSample            // samples taken, per entity, in order
	live    map[*mock.GpmSample]bool             // allocated and not freed
	sampleR map[int]nvml.Return                  // GpmSampleGet's return, per GPU
	pairs   int
	bad     []string
}

func newGPMNode(t *testing.T) *gpmNode {
	t.Helper()
	sim := simulator.New(&replay.Scenario{Duration: 10, Interval: 1, Load: replay.LoadCurve{Default: [][2]float64{{0, 50}}}})
	n := &gpmNode{t: t, sim: sim, srv: sim.NVML().(*server.Server),
		values: map[int]map[nvml.GpmMetricId]float64{}, taken: map[*mock.GpmSample]int{},
		history: map[int][]*mock.GpmSample{}, live: map[*mock.GpmSample]bool{}, sampleR: map[int]nvml.Return{}}
	n.srv.GpmSampleAllocFunc = func() (nvml.GpmSample, nvml.Return) {
		n.mu.Lock()
		defer n.mu.Unlock()
		s := &mock.GpmSample{}
		n.live[s] = true
		return s, nvml.SUCCESS
	}
	n.srv.GpmSampleFreeFunc = func(s nvml.GpmSample) nvml.Return {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.live, s.(*mock.GpmSample))
		return nvml.SUCCESS
	}
	n.srv.GpmMetricsGetFunc = func(m *nvml.GpmMetricsGetType) nvml.Return {
		n.mu.Lock()
		defer n.mu.Unlock()
		s1, s2 := m.Sample1.(*mock.GpmSample), m.Sample2.(*mock.GpmSample)
		e, ok := n.taken[s2]
		h := n.history[e]
		if !ok || n.taken[s1] != e || len(h) < 2 || h[len(h)-2] != s1 || h[len(h)-1] != s2 {
			n.bad = append(n.bad, "GpmMetricsGet not called with (the entity's previous sample, its newest)")
		}
		if m.NumMetrics != 1 {
			n.bad = append(n.bad, "more than one metric per call")
		}
		n.pairs++
		for i := range m.Metrics[:m.NumMetrics] {
			v, ok := n.values[e][nvml.GpmMetricId(m.Metrics[i].MetricId)]
			m.Metrics[i].Value, m.Metrics[i].NvmlReturn = v, uint32(nvml.SUCCESS)
			if !ok {
				m.Metrics[i].NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
			}
		}
		return nvml.SUCCESS
	}
	for i := range 8 {
		d := sim.MockDevice(i)
		d.GpmQueryDeviceSupportFunc = func() (nvml.GpmSupport, nvml.Return) {
			return nvml.GpmSupport{IsSupportedDevice: 1}, nvml.SUCCESS
		}
		d.GpmSampleGetFunc = func(s nvml.GpmSample) nvml.Return { return n.take(i, s) }
		d.GpmMigSampleGetFunc = func(gi int, s nvml.GpmSample) nvml.Return { return n.take(100*i+gi, s) }
		n.values[i] = map[nvml.GpmMetricId]float64{}
	}
	return n
}

func (n *gpmNode) take(e int, s nvml.GpmSample) nvml.Return {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r, ok := n.sampleR[e]; ok && r != nvml.SUCCESS {
		return r
	}
	ms := s.(*mock.GpmSample)
	if !n.live[ms] {
		n.bad = append(n.bad, "a sample into a buffer not allocated, or freed")
	}
	n.taken[ms] = e
	n.history[e] = append(n.history[e], ms)
	return nvml.SUCCESS
}

func (n *gpmNode) set(e int, id nvml.GpmMetricId, v float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.values[e] == nil {
		n.values[e] = map[nvml.GpmMetricId]float64{}
	}
	n.values[e][id] = v
}

func (n *gpmNode) check() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, b := range n.bad {
		n.t.Error(b)
	}
	n.bad = nil
}

func (n *gpmNode) liveSamples() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.live)
}

type logLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func field(name string) int { return gpu.FieldIndex(name) }

func TestGPMGivesDCGMUnitsFromTwoSamplesAfterAWarmUpRound(t *testing.T) {
	n := newGPMNode(t)
	n.set(0, nvml.GPM_METRIC_SM_UTIL, 87.5)
	n.set(0, nvml.GPM_METRIC_ANY_TENSOR_UTIL, 61.25)
	n.set(0, nvml.GPM_METRIC_DRAM_BW_UTIL, 100)
	n.set(0, nvml.GPM_METRIC_PCIE_TX_PER_SEC, 1000.5)       // MiB/s
	n.set(0, nvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC, 0.25) // 262144 bytes/s
	n.set(0, nvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC, 1e-7) // under a byte: truncated to 0, as DCGM does
	col := gpu.New(n.sim.Library(), gpu.Options{Log: quiet})
	defer col.Close()

	r := col.Sample(context.Background())
	sm := field("DCGM_FI_PROF_SM_ACTIVE")
	if st := r.Samples[0].Status[sm]; st != gpu.StatusWarmingUp {
		t.Fatalf("first round: SM_ACTIVE status %v, want warming_up (one sample, no rate yet)", st)
	}
	if n.pairs != 0 {
		t.Fatalf("GpmMetricsGet called %d times in the warm-up round", n.pairs)
	}
	for range 3 {
		r = col.Sample(context.Background())
		n.check()
	}
	want := map[string]float64{
		"DCGM_FI_PROF_SM_ACTIVE":          0.875,
		"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": 0.6125,
		"DCGM_FI_PROF_DRAM_ACTIVE":        1,
		"DCGM_FI_PROF_PCIE_TX_BYTES":      1049100288,
		"DCGM_FI_PROF_NVLINK_TX_BYTES":    262144,
		"DCGM_FI_PROF_NVLINK_RX_BYTES":    0,
	}
	for name, w := range want {
		if v, ok := r.Samples[0].Value(field(name)); !ok || v != w {
			t.Errorf("%s = %v (%v), want %v", name, v, r.Samples[0].Status[field(name)], w)
		}
	}
	// A metric NVML does not answer for this GPU is absent, the rest stay.
	if st := r.Samples[0].Status[field("DCGM_FI_PROF_PIPE_FP64_ACTIVE")]; st != gpu.StatusNotSupported {
		t.Errorf("FP64_ACTIVE without an answer: %v, want not_supported", st)
	}
	if live := n.liveSamples(); live != 16 {
		t.Errorf("%d sample buffers allocated, want 2 per GPU (16)", live)
	}
	col.Close()
	if live := n.liveSamples(); live != 0 {
		t.Errorf("%d sample buffers left after Close", live)
	}
}

// NVML computes GPM's rates itself from two samples: there is no raw counter
// here to wrap. What matters is the pairing: the older sample first, each
// GPU's own, and a failed sample starting the ring over.
func TestAFailedSampleStartsTheRingOver(t *testing.T) {
	n := newGPMNode(t)
	n.set(2, nvml.GPM_METRIC_SM_UTIL, 50)
	col := gpu.New(n.sim.Library(), gpu.Options{Log: quiet})
	defer col.Close()
	sm := field("DCGM_FI_PROF_SM_ACTIVE")
	col.Sample(context.Background())
	col.Sample(context.Background())
	n.sampleR[2] = nvml.ERROR_UNKNOWN
	r := col.Sample(context.Background())
	if st := r.Samples[2].Status[sm]; st != gpu.StatusError {
		t.Errorf("failed sample: %v, want error", st)
	}
	delete(n.sampleR, 2)
	if r := col.Sample(context.Background()); r.Samples[2].Status[sm] != gpu.StatusWarmingUp {
		t.Errorf("after a failed sample: %v, want warming_up", r.Samples[2].Status[sm])
	}
	if r := col.Sample(context.Background()); r.Samples[2].Values[sm] != 0.5 {
		t.Errorf("then: %v, want 0.5", r.Samples[2].Values[sm])
	}
	n.check()
}

func TestAGPUWithoutGPMHasNoProfilingSeriesAndSaysSoOnce(t *testing.T) {
	n := newGPMNode(t)
	calls := 0
	n.sim.MockDevice(4).GpmQueryDeviceSupportFunc = func() (nvml.GpmSupport, nvml.Return) {
		calls++
		return nvml.GpmSupport{IsSupportedDevice: 0}, nvml.SUCCESS // an A100
	}
	var log logLines
	col := gpu.New(n.sim.Library(), gpu.Options{Log: slog.New(slog.NewTextHandler(&log, nil))})
	defer col.Close()
	for range 4 {
		r := col.Sample(context.Background())
		for _, fi := range []int{field("DCGM_FI_PROF_SM_ACTIVE"), field("DCGM_FI_PROF_NVLINK_RX_BYTES")} {
			if st := r.Samples[4].Status[fi]; st != gpu.StatusNoSource {
				t.Fatalf("GPU 4 %s: %v, want no_source", gpu.Fields[fi].Name, st)
			}
		}
		if r.Samples[4].Err != "" {
			t.Errorf("no GPM is not an error: %q", r.Samples[4].Err)
		}
	}
	if calls != 1 {
		t.Errorf("support asked %d times, want once", calls)
	}
	if c := log.count("no GPM on this GPU"); c != 1 {
		t.Errorf("said %d times, want once:\n%s", c, log.b.String())
	}
	if !strings.Contains(log.b.String(), "gpu=4") || !strings.Contains(log.b.String(), "Hopper") {
		t.Errorf("the line names neither the GPU nor the reason:\n%s", log.b.String())
	}
}

// A driver without the GPM functions must not be asked for them: go-nvml
// binds lazily, and calling a missing symbol kills the process.
func TestADriverWithoutGPMIsNeverAskedForIt(t *testing.T) {
	n := newGPMNode(t)
	n.srv.LookupSymbolFunc = func(s string) error {
		if strings.HasPrefix(s, "nvmlGpm") {
			return errors.New("undefined symbol")
		}
		return nil
	}
	for i := range 8 {
		d := n.sim.MockDevice(i)
		d.GpmQueryDeviceSupportFunc, d.GpmSampleGetFunc = nil, nil // panic if called
	}
	n.srv.GpmSampleAllocFunc = nil
	col := gpu.New(n.sim.Library(), gpu.Options{Log: quiet})
	defer col.Close()
	r := col.Sample(context.Background())
	if st := r.Samples[0].Status[field("DCGM_FI_PROF_SM_ACTIVE")]; st != gpu.StatusNoSource {
		t.Errorf("SM_ACTIVE %v, want no_source", st)
	}
}

func TestCountersInUseBackOffAndRecover(t *testing.T) {
	n := newGPMNode(t)
	n.set(1, nvml.GPM_METRIC_SM_UTIL, 40)
	now := time.Unix(1000, 0)
	var log logLines
	col := gpu.New(n.sim.Library(), gpu.Options{Log: slog.New(slog.NewTextHandler(&log, nil)), Clock: func() time.Time { return now }})
	defer col.Close()
	sm := field("DCGM_FI_PROF_SM_ACTIVE")
	tries := 0
	n.sim.MockDevice(1).GpmSampleGetFunc = func(s nvml.GpmSample) nvml.Return {
		tries++
		return nvml.ERROR_IN_USE
	}
	round := func(after time.Duration) *gpu.Sample {
		now = now.Add(after)
		return col.Sample(context.Background()).Samples[1]
	}
	if s := round(0); s.Status[sm] != gpu.StatusBusy || s.Err != "" {
		t.Fatalf("in use: %v %q, want profiler_busy and no error", s.Status[sm], s.Err)
	}
	if n.liveSamples() != 14 {
		t.Errorf("GPU 1 kept its sample buffers while backing off (%d live)", n.liveSamples())
	}
	// 1 min, then 2, then 4: no tries in between.
	for _, wait := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
		before := tries
		round(wait - time.Second)
		if tries != before {
			t.Fatalf("tried again %v before the %v backoff ended", time.Second, wait)
		}
		round(time.Second)
		if tries != before+1 {
			t.Fatalf("not tried again after the %v backoff", wait)
		}
	}
	if c := log.count("in use by another profiler"); c != 1 {
		t.Errorf("back-off said %d times, want once", c)
	}
	// The profiler is gone: the next try warms up, then values come.
	n.sim.MockDevice(1).GpmSampleGetFunc = func(s nvml.GpmSample) nvml.Return { return n.take(1, s) }
	if s := round(8 * time.Minute); s.Status[sm] != gpu.StatusWarmingUp {
		t.Fatalf("after recovery: %v, want warming_up", s.Status[sm])
	}
	if s := round(time.Second); s.Values[sm] != 0.4 || s.Status[sm] != gpu.StatusOK {
		t.Fatalf("after recovery: %v %v, want 0.4", s.Values[sm], s.Status[sm])
	}
	if c := log.count("free again"); c != 1 {
		t.Errorf("recovery said %d times, want once", c)
	}
	n.check()
}

func TestTheBackoffStopsAtAQuarterOfAnHour(t *testing.T) {
	n := newGPMNode(t)
	now := time.Unix(1000, 0)
	col := gpu.New(n.sim.Library(), gpu.Options{Log: quiet, Clock: func() time.Time { return now }})
	defer col.Close()
	var tried []time.Time
	n.sim.MockDevice(0).GpmSampleGetFunc = func(nvml.GpmSample) nvml.Return {
		tried = append(tried, now)
		return nvml.ERROR_INSUFFICIENT_RESOURCES
	}
	for range 24 * 60 { // a day, a round a minute
		col.Sample(context.Background())
		now = now.Add(time.Minute)
	}
	var gaps []time.Duration
	for i := 1; i < len(tried); i++ {
		gaps = append(gaps, tried[i].Sub(tried[i-1]))
	}
	if len(gaps) < 6 || gaps[0] != time.Minute || gaps[1] != 2*time.Minute || gaps[4] != 15*time.Minute || gaps[len(gaps)-1] != 15*time.Minute {
		t.Errorf("gaps between tries: %v", gaps)
	}
}

func TestAPauseReleasesGPMAndResumingWarmsUp(t *testing.T) {
	n := newGPMNode(t)
	n.set(0, nvml.GPM_METRIC_SM_UTIL, 10)
	paused := false
	col := gpu.New(n.sim.Library(), gpu.Options{Log: quiet, ProfilingPaused: func() bool { return paused }})
	defer col.Close()
	sm := field("DCGM_FI_PROF_SM_ACTIVE")
	col.Sample(context.Background())
	col.Sample(context.Background())
	paused = true
	if r := col.Sample(context.Background()); r.Samples[0].Status[sm] != gpu.StatusPaused {
		t.Errorf("paused: %v", r.Samples[0].Status[sm])
	}
	if live := n.liveSamples(); live != 0 {
		t.Errorf("%d sample buffers kept while paused", live)
	}
	paused = false
	if r := col.Sample(context.Background()); r.Samples[0].Status[sm] != gpu.StatusWarmingUp {
		t.Errorf("resumed: %v, want warming_up", r.Samples[0].Status[sm])
	}
	if r := col.Sample(context.Background()); r.Samples[0].Values[sm] != 0.1 {
		t.Errorf("resumed: %v, want 0.1", r.Samples[0].Values[sm])
	}
	n.check()
}

// migDevice is a MIG device handle as go-nvml's mock gives one.
func migDevice(gi int, slices uint32, memMB uint64) nvml.Device {
	return &mock.Device{
		GetGpuInstanceIdFunc: func() (int, nvml.Return) { return gi, nvml.SUCCESS },
		GetAttributesFunc: func() (nvml.DeviceAttributes, nvml.Return) {
			return nvml.DeviceAttributes{GpuInstanceSliceCount: slices, MemorySizeMB: memMB}, nvml.SUCCESS
		},
	}
}

func TestMIGInstancesGetTheirOwnSeriesWithIDAndProfile(t *testing.T) {
	n := newGPMNode(t)
	d := n.sim.MockDevice(3)
	d.MigMode = nvml.DEVICE_MIG_ENABLE
	// H100 80GB: 3g.40gb as GI 2 (two compute instances: two MIG devices),
	// 1g.10gb as GI 9, an empty slot between.
	handles := []nvml.Device{migDevice(2, 3, 40192), migDevice(2, 3, 40192), nil, migDevice(9, 1, 9856)}
	d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
	d.GetMigDeviceHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if i >= len(handles) || handles[i] == nil {
			return nil, nvml.ERROR_NOT_FOUND
		}
		return handles[i], nvml.SUCCESS
	}
	n.set(302, nvml.GPM_METRIC_SM_UTIL, 75)
	n.set(302, nvml.GPM_METRIC_DRAM_BW_UTIL, 20)
	n.set(309, nvml.GPM_METRIC_SM_UTIL, 5)
	n.set(3, nvml.GPM_METRIC_PCIE_RX_PER_SEC, 1)
	n.set(3, nvml.GPM_METRIC_SM_UTIL, 99) // never asked: per instance only
	col := gpu.New(n.sim.Library(), gpu.Options{Log: quiet})
	defer col.Close()
	col.Sample(context.Background())
	r := col.Sample(context.Background())
	n.check()
	s := r.Samples[3]
	sm, dram := field("DCGM_FI_PROF_SM_ACTIVE"), field("DCGM_FI_PROF_DRAM_ACTIVE")
	if st := s.Status[sm]; st != gpu.StatusPerInstance {
		t.Errorf("the MIG GPU's own SM_ACTIVE: %v, want per_mig_instance", st)
	}
	if v, ok := s.Value(field("DCGM_FI_PROF_PCIE_RX_BYTES")); !ok || v != 1<<20 {
		t.Errorf("PCIe stays per GPU: %v %v", v, ok)
	}
	if len(s.Instances) != 2 {
		t.Fatalf("instances %+v, want GI 2 and GI 9", s.Instances)
	}
	a, b := s.Instances[0], s.Instances[1]
	if a.ID != 2 || a.Profile != "3g.40gb" || b.ID != 9 || b.Profile != "1g.10gb" {
		t.Errorf("instances %d %q, %d %q", a.ID, a.Profile, b.ID, b.Profile)
	}
	if v, ok := a.Value(sm); !ok || v != 0.75 {
		t.Errorf("GI 2 SM_ACTIVE %v %v", v, ok)
	}
	if v, ok := a.Value(dram); !ok || v != 0.2 {
		t.Errorf("GI 2 DRAM_ACTIVE %v %v", v, ok)
	}
	if v, ok := b.Value(sm); !ok || v != 0.05 {
		t.Errorf("GI 9 SM_ACTIVE %v %v", v, ok)
	}
	if _, ok := a.Value(field("DCGM_FI_PROF_PCIE_TX_BYTES")); ok {
		t.Error("an instance has a PCIe value: PCIe is per GPU")
	}
	// Repartitioned: GI 9 is gone; its buffers are freed.
	before := n.liveSamples()
	handles = handles[:2]
	r = col.Sample(context.Background())
	if len(r.Samples[3].Instances) != 1 || n.liveSamples() != before-2 {
		t.Errorf("after GI 9 went: %d instances, %d -> %d buffers", len(r.Samples[3].Instances), before, n.liveSamples())
	}
}
