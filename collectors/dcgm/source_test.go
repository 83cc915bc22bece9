package dcgm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/profiling"
	"github.com/gpuwarden/gpuwarden/collectors/source"
	"github.com/gpuwarden/gpuwarden/collectors/source/sourcetest"
)

// h100 is two GPUs as the GPU collector labels them, and as DCGM numbers
// them: DCGM's ids in another order than NVML's indices, matched by UUID.
func h100() ([]source.GPU, []Device) {
	label := func(i, uuid, bus, dev string) []string {
		return []string{"gpu", i, "UUID", uuid, "pci_bus_id", bus, "device", dev, "modelName", "NVIDIA H100 80GB HBM3",
			"Hostname", "node7", "DCGM_FI_DRIVER_VERSION", "550.54.15"}
	}
	// Sampled after any claim a test makes.
	later := time.Now().Add(time.Hour)
	gpus := []source.GPU{
		{Index: 0, UUID: "GPU-aaaa", PCIBusID: "00000000:18:00.0", SampleTime: later, Labels: label("0", "GPU-aaaa", "00000000:18:00.0", "nvidia0")},
		{Index: 1, UUID: "GPU-bbbb", PCIBusID: "00000000:2A:00.0", SampleTime: later, Labels: label("1", "GPU-bbbb", "00000000:2A:00.0", "nvidia1")},
	}
	devs := []Device{{ID: 0, UUID: "GPU-bbbb", PCIBusID: "00000000:2A:00.0"}, {ID: 1, UUID: "GPU-aaaa", PCIBusID: "00000000:18:00.0"}}
	return gpus, devs
}

func newFake() (*fake, *sourcetest.Sink) {
	gpus, devs := h100()
	f := &fake{devices: devs, prof: []uint16{1001, 1002, 1004, 1005, 1009, 1010, 1011},
		values: map[uint][]Value{
			0: {{Field: 1001, Value: 0.25}, {Field: 1004, Blank: true}, {Field: 1009, Value: 1048576}},
			1: {{Field: 1001, Value: 0.875}, {Field: 1002, Value: 0.5}, {Field: 1004, Value: 0.125}, {Field: 1009, Value: 2097152}},
		},
		viol: make(chan Violation, 4)}
	return f, sourcetest.New("550.54.15", gpus...)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start runs s until the test ends.
func start(t *testing.T, s *Source, k *sourcetest.Sink) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, k) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNothingIsCalledAfterAFailedInit(t *testing.T) {
	f := &fake{initErr: errors.New("libdcgm.so.4 not found")}
	s := &Source{Lib: f, Profiling: &profiling.Registry{}, Log: quiet()}
	err := s.Run(context.Background(), sourcetest.New("550.54.15"))
	if err == nil || !strings.Contains(err.Error(), "DCGM not found (libdcgm.so.4): the GPM source is used for profiling") {
		t.Fatalf("Run: %v", err)
	}
	if source.FixOf(err) == "" {
		t.Error("no fix with the error")
	}
	// Again, as the agent's backoff does: only Init, each time.
	s.Run(context.Background(), sourcetest.New("550.54.15"))
	if got := f.Calls(); !reflect.DeepEqual(got, []string{"Init", "Init"}) {
		t.Fatalf("calls %v, want only Init twice", got)
	}
}

func TestAnUnreachableHostengineIsNamedWithItsAddress(t *testing.T) {
	f := &fake{initErr: errors.New("error connecting to nv-hostengine: Host engine connection invalid/disconnected")}
	s := &Source{Lib: f, Address: "10.0.0.5:5555", Profiling: &profiling.Registry{}, Log: quiet()}
	err := s.Run(context.Background(), sourcetest.New("550.54.15"))
	if err == nil || !strings.Contains(err.Error(), "10.0.0.5:5555") {
		t.Fatalf("Run: %v", err)
	}
}

func TestProfilingSeriesCarryTheGPUsLabelsAndDCGMsUnits(t *testing.T) {
	f, k := newFake()
	reg := &profiling.Registry{}
	start(t, &Source{Lib: f, Interval: 10 * time.Millisecond, Profiling: reg, Log: quiet()}, k)
	var stats []source.Metric
	waitUntil(t, "profiling series", func() bool { stats = k.Snapshot().Stats; return len(stats) > 0 })
	if reg.Owner() != profiling.OwnerDCGM {
		t.Fatalf("owner %q while DCGM serves profiling", reg.Owner())
	}
	got := map[string]float64{}
	for _, m := range stats {
		got[m.Name+" "+m.Labels[1]+" "+m.Labels[3]] = m.Value
		if len(m.Labels) != 14 || m.Labels[12] != "DCGM_FI_DRIVER_VERSION" || m.Help == "" || m.Counter {
			t.Errorf("series %+v: want dcgm-exporter's seven labels, a help and a gauge", m)
		}
	}
	want := map[string]float64{
		// DCGM id 1 is GPU-aaaa, NVML's index 0.
		"DCGM_FI_PROF_GR_ENGINE_ACTIVE 0 GPU-aaaa":   0.875,
		"DCGM_FI_PROF_SM_ACTIVE 0 GPU-aaaa":          0.5,
		"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE 0 GPU-aaaa": 0.125,
		"DCGM_FI_PROF_PCIE_TX_BYTES 0 GPU-aaaa":      2097152,
		"DCGM_FI_PROF_GR_ENGINE_ACTIVE 1 GPU-bbbb":   0.25,
		"DCGM_FI_PROF_PCIE_TX_BYTES 1 GPU-bbbb":      1048576,
		// GPU-bbbb's tensor value is blank: absent, not 0.
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("series\n%v\nwant\n%v", got, want)
	}
	for _, m := range stats {
		if strings.Contains(m.Name, "ACTIVE") && (m.Value < 0 || m.Value > 1) {
			t.Errorf("%s = %v: a ratio outside 0..1", m.Name, m.Value)
		}
	}
}

func TestAHealthWatchIncidentIsTheSourcesFinding(t *testing.T) {
	f, k := newFake()
	f.incident = []Incident{{GPU: 1, System: "MEM", Fail: true, Code: 49, Message: "A row remap failure occurred"},
		{GPU: 0, System: "PCIE", Code: 17, Message: "PCIe replay rate exceeded"}}
	start(t, &Source{Lib: f, Interval: 10 * time.Millisecond, Profiling: &profiling.Registry{}, Log: quiet()}, k)
	var fd *source.Finding
	waitUntil(t, "a finding", func() bool { fd = k.Snapshot().Finding; return fd != nil })
	if fd.Level != event.Critical || len(fd.Reasons) != 2 {
		t.Fatalf("finding %+v, want critical with two reasons", fd)
	}
	if !strings.Contains(fd.Reasons[0], "GPU 0 (GPU-aaaa, 00000000:18:00.0): MEM") || !strings.Contains(fd.Reasons[0], "row remap") {
		t.Errorf("reason %q does not name the GPU, the system and the message", fd.Reasons[0])
	}
	f.mu.Lock()
	f.incident = nil
	f.mu.Unlock()
	waitUntil(t, "the finding withdrawn", func() bool { fd = k.Snapshot().Finding; return fd.Level == event.OK })
}

func TestAPolicyViolationIsAnEvent(t *testing.T) {
	f, k := newFake()
	start(t, &Source{Lib: f, Interval: 10 * time.Millisecond, Profiling: &profiling.Registry{}, Log: quiet()}, k)
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f.viol <- Violation{Condition: "XID Error", Time: at, Xid: 79}
	f.viol <- Violation{Condition: "Double-bit ECC error", GPU: 0, HasGPU: true, Time: at, Fields: map[string]string{"errors": "2"}}
	var evs []event.Event
	waitUntil(t, "two events", func() bool { evs = k.Snapshot().Events; return len(evs) == 2 })
	x, dbe := evs[0], evs[1]
	if x.Kind != KindPolicy || x.Source != "dcgm" || x.Code != 79 || x.GPU.Index != -1 || !x.Time.Equal(at) || x.Mnemonic != "DCGM_POLICY_XID" {
		t.Errorf("xid violation event %+v", x)
	}
	// DCGM id 0 is GPU-bbbb, NVML's index 1.
	if dbe.Severity != event.Critical || dbe.GPU.Index != 1 || dbe.GPU.UUID != "GPU-bbbb" || !dbe.PointsAtGPU ||
		dbe.Fields["errors"] != "2" || dbe.HealthDuration != event.DurationWindow {
		t.Errorf("DBE violation event %+v", dbe)
	}
}

func TestWithoutTheProfilingModuleDCGMClaimsNothing(t *testing.T) {
	f, k := newFake()
	f.profErr = errors.New("This request is serviced by a module of DCGM that is not currently loaded")
	reg := &profiling.Registry{}
	start(t, &Source{Lib: f, Interval: 10 * time.Millisecond, Profiling: reg, Log: quiet()}, k)
	waitUntil(t, "three rounds", func() bool { n := k.Snapshot().StatsCalls; return n >= 3 })
	if stats := k.Snapshot().Stats; len(stats) != 0 || reg.Owner() != "" || f.Watching() {
		t.Fatalf("stats %v, owner %q, watching %v: want none", stats, reg.Owner(), f.Watching())
	}
}

func TestWhenGPMOwnsTheCountersDCGMWritesNoProfilingSeries(t *testing.T) {
	f, k := newFake()
	reg := &profiling.Registry{}
	reg.Claim(profiling.OwnerGPM)
	start(t, &Source{Lib: f, Interval: 10 * time.Millisecond, Profiling: reg, Log: quiet()}, k)
	waitUntil(t, "three rounds", func() bool { n := k.Snapshot().StatsCalls; return n >= 3 })
	if stats := k.Snapshot().Stats; len(stats) != 0 || f.Watching() {
		t.Fatalf("stats %v, watching %v while GPM owns the counters", stats, f.Watching())
	}
	reg.Release(profiling.OwnerGPM)
	waitUntil(t, "DCGM takes the counters once GPM lets go", func() bool { s := k.Snapshot().Stats; return len(s) > 0 })
}

func TestAPauseReleasesTheCountersAndAResumeTakesThemBack(t *testing.T) {
	f, k := newFake()
	reg := &profiling.Registry{}
	start(t, &Source{Lib: f, Interval: time.Hour, Profiling: reg, Log: quiet()}, k)
	waitUntil(t, "profiling series", func() bool { s := k.Snapshot().Stats; return len(s) > 0 })
	// The interval is an hour: the source acts on the change itself.
	reg.PauseFor(time.Hour, "uid 0 pid 1")
	waitUntil(t, "the watch closed", func() bool { s := k.Snapshot().Stats; return !f.Watching() && len(s) == 0 })
	if reg.Owner() != "" {
		t.Fatalf("owner %q while paused, want none", reg.Owner())
	}
	reg.Resume()
	waitUntil(t, "the watch again", func() bool { s := k.Snapshot().Stats; return f.Watching() && len(s) > 0 })
	if f.watches != 2 || reg.Owner() != profiling.OwnerDCGM {
		t.Fatalf("%d watches, owner %q", f.watches, reg.Owner())
	}
}

// gpmRound is what the GPM source does each round under the choice rule:
// it fills the profiling fields only while no other source owns them.
func gpmRound(reg *profiling.Registry, info gpu.Info) *gpu.Sample {
	s := &gpu.Sample{GPU: info, Time: time.Now(), Values: make([]float64, len(gpu.Fields)), Status: make([]gpu.Status, len(gpu.Fields))}
	own := reg.Owner()
	for i, f := range gpu.Fields {
		if f.Profiling {
			if own != "" && own != profiling.OwnerGPM {
				s.Status[i] = gpu.StatusNoSource
				continue
			}
			s.Values[i] = 0.5
		}
	}
	return s
}

func TestNoProfilingFamilyIsWrittenTwiceWhenDCGMAndGPMBothRun(t *testing.T) {
	f, k := newFake()
	reg := &profiling.Registry{}
	start(t, &Source{Lib: f, Interval: 10 * time.Millisecond, Profiling: reg, Log: quiet()}, k)
	waitUntil(t, "profiling series", func() bool { s := k.Snapshot().Stats; return len(s) > 0 })

	st := agent.NewState("node7", 0, time.Hour, time.Now)
	infos := []gpu.Info{{Index: 0, UUID: "GPU-aaaa", Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:18:00.0", Minor: 0},
		{Index: 1, UUID: "GPU-bbbb", Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:2A:00.0", Minor: 1}}
	st.ApplyRound(gpu.Round{Time: time.Now(), DriverVersion: "550.54.15",
		Samples: []*gpu.Sample{gpmRound(reg, infos[0]), gpmRound(reg, infos[1])}})
	stats := k.Snapshot().Stats
	st.SetStats("dcgm", stats)
	body := scrape(t, st, func(b string) bool { return strings.Contains(b, "DCGM_FI_PROF_SM_ACTIVE{") })
	for _, f := range Fields() {
		if n := strings.Count(body, "# TYPE "+f.Name+" "); n > 1 {
			t.Errorf("%s: %d TYPE lines", f.Name, n)
		}
	}
	if !strings.Contains(body, `DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-aaaa",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node7",DCGM_FI_DRIVER_VERSION="550.54.15"} 0.875`) {
		t.Errorf("DCGM's value with the GPU's labels missing:\n%s", body)
	}
	if strings.Contains(body, " 0.5\n") && strings.Contains(body, "DCGM_FI_PROF_DRAM_ACTIVE{") {
		t.Errorf("a GPM value was written while DCGM owns the counters:\n%s", body)
	}
}

func scrape(t *testing.T, st *agent.State, ready func(string) bool) string {
	t.Helper()
	var body string
	waitUntil(t, "the series in /metrics", func() bool {
		rec := httptest.NewRecorder()
		agent.MetricsHandler(st, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body = rec.Body.String()
		return ready(body)
	})
	return body
}

func TestAStoppedSourceWithdrawsItsSeriesAndGivesTheCountersBack(t *testing.T) {
	f, k := newFake()
	f.incident = []Incident{{GPU: 0, System: "MEM", Fail: true, Message: "x"}}
	reg := &profiling.Registry{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Source{Lib: f, Interval: 10 * time.Millisecond, Profiling: reg, Log: quiet()}).Run(ctx, k)
	}()
	waitUntil(t, "profiling series", func() bool { s := k.Snapshot().Stats; return len(s) > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	snap := k.Snapshot()
	stats, fd := snap.Stats, snap.Finding
	if len(stats) != 0 || fd.Level != event.OK || reg.Owner() != "" || f.Watching() {
		t.Fatalf("after Run: stats %v, finding %+v, owner %q, watching %v", stats, fd, reg.Owner(), f.Watching())
	}
	calls := f.Calls()
	if calls[len(calls)-1] != "Shutdown" {
		t.Fatalf("calls %v: want Shutdown last", calls)
	}
}

func TestAStandaloneAddressIsAHostPortOrAUnixSocket(t *testing.T) {
	for in, want := range map[string][2]string{
		"localhost:5555":                      {"localhost:5555", "0"},
		"/run/nvidia-dcgm/nv-hostengine.sock": {"/run/nvidia-dcgm/nv-hostengine.sock", "1"},
		"unix:/tmp/he.sock":                   {"/tmp/he.sock", "1"},
	} {
		a, u := splitAddress(in)
		if a != want[0] || u != want[1] {
			t.Errorf("splitAddress(%q) = %q, %q; want %q, %q", in, a, u, want[0], want[1])
		}
	}
}

func TestDCGMWritesAGPUsSeriesOnlyFromItsFirstSampleAfterTheClaim(t *testing.T) {
	f, k := newFake()
	k.UpdateGPUs(func(g []source.GPU) { g[0].SampleTime = time.Now().Add(-time.Minute) }) // GPM may have filled it
	start(t, &Source{Lib: f, Interval: 10 * time.Millisecond, Profiling: &profiling.Registry{}, Log: quiet()}, k)
	var stats []source.Metric
	waitUntil(t, "GPU 1's series", func() bool { stats = k.Snapshot().Stats; return len(stats) > 0 })
	for _, m := range stats {
		if m.Labels[3] == "GPU-aaaa" {
			t.Fatalf("a series for a GPU not sampled since the claim: %+v", m)
		}
	}
	k.UpdateGPUs(func(g []source.GPU) { g[0].SampleTime = time.Now().Add(time.Hour) })
	waitUntil(t, "GPU 0's series after its next sample", func() bool {
		stats = k.Snapshot().Stats
		for _, m := range stats {
			if m.Labels[3] == "GPU-aaaa" {
				return true
			}
		}
		return false
	})
}
