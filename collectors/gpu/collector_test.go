package gpu_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/collectors/replay/simulator"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// switchable is an NVML whose Init fails until the driver "appears". Its
// failing half is go-nvml's bare mock: every function but Init is nil and
// panics if called, as calling real NVML after a failed Init kills the
// process.
type switchable struct {
	gpu.Library
	missing *mock.Interface
	present bool
}

func (s *switchable) Init() nvml.Return {
	if !s.present {
		return s.missing.Init()
	}
	return s.Library.Init()
}

func TestNothingIsCalledAfterAFailedInitAndTheDriverIsPickedUpLater(t *testing.T) {
	sim := simulator.New(&replay.Scenario{Duration: 10, Interval: 1, Load: replay.LoadCurve{Default: [][2]float64{{0, 50}}}})
	lib := &switchable{Library: sim.Library(), missing: &mock.Interface{
		InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND },
	}}
	col := gpu.New(gpu.FromNVML(lib.missing), gpu.Options{Log: quiet})
	r := col.Sample(context.Background())
	if r.Err == nil || !strings.Contains(r.Err.Error(), "libnvidia-ml.so.1 not found") || col.Up() {
		t.Fatalf("round err = %v, up = %v", r.Err, col.Up())
	}
	if n := len(lib.missing.InitCalls()); n != 1 {
		t.Fatalf("Init called %d times", n)
	}
	// The same collector, a later round: the driver is there now.
	col = gpu.New(lib, gpu.Options{Log: quiet})
	lib.present = false
	if r := col.Sample(context.Background()); r.Err == nil {
		t.Fatal("no error while the driver is missing")
	}
	lib.present = true
	r = col.Sample(context.Background())
	if r.Err != nil || len(r.Samples) != 8 {
		t.Fatalf("after the driver appeared: err %v, %d GPUs", r.Err, len(r.Samples))
	}
}

func TestOneFailingGPUDoesNotStopTheOthers(t *testing.T) {
	sim := simulator.New(&replay.Scenario{Duration: 10, Interval: 1, Load: replay.LoadCurve{Default: [][2]float64{{0, 50}}}})
	dev := sim.MockDevice(2)
	dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	col := gpu.New(sim.Library(), gpu.Options{Log: quiet})
	r := col.Sample(context.Background())
	temp := gpu.FieldIndex("DCGM_FI_DEV_GPU_TEMP")
	if r.Samples[2].Status[temp] != gpu.StatusError || r.Samples[2].Err == "" {
		t.Errorf("GPU 2 temp status %v err %q", r.Samples[2].Status[temp], r.Samples[2].Err)
	}
	if _, ok := r.Samples[2].Value(gpu.FieldIndex("DCGM_FI_DEV_POWER_USAGE")); !ok {
		t.Error("GPU 2 lost its other fields because one failed")
	}
	for i, s := range r.Samples {
		if _, ok := s.Value(temp); i != 2 && !ok {
			t.Errorf("GPU %d has no temperature", i)
		}
	}
}

func TestAHungGPUTimesOutAloneAndGetsOneStuckCall(t *testing.T) {
	sim := simulator.New(&replay.Scenario{Duration: 10, Interval: 1, Load: replay.LoadCurve{Default: [][2]float64{{0, 50}}}})
	release := make(chan struct{})
	var calls atomic.Int32
	dev := sim.MockDevice(5)
	dev.GetPowerUsageFunc = func() (uint32, nvml.Return) {
		calls.Add(1)
		<-release
		return 1, nvml.SUCCESS
	}
	defer close(release)
	col := gpu.New(sim.Library(), gpu.Options{Log: quiet, Timeout: 200 * time.Millisecond})
	for round := 0; round < 3; round++ {
		r := col.Sample(context.Background())
		if r.Samples[5].Status[gpu.FieldIndex("DCGM_FI_DEV_GPU_TEMP")] != gpu.StatusTimeout {
			t.Fatalf("round %d: hung GPU 5 not reported timed out: %+v", round, r.Samples[5].Status)
		}
		for i, s := range r.Samples {
			if i != 5 && s.Err != "" {
				t.Errorf("round %d: GPU %d: %s", round, i, s.Err)
			}
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the hung GPU got %d stuck calls, want 1 (no new goroutine while one is stuck)", n)
	}
}

// NVML's Xid events are drained after each round and name their GPU.
func TestXidEventsFromNVMLArriveWithTheRound(t *testing.T) {
	sim := simulator.New(&replay.Scenario{Duration: 10, Interval: 1, Load: replay.LoadCurve{Default: [][2]float64{{0, 50}}}})
	srv := sim.NVML().(*server.Server)
	queue := []nvml.EventData{}
	set := &mock.EventSet{
		WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
			if len(queue) == 0 {
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
			d := queue[0]
			queue = queue[1:]
			return d, nvml.SUCCESS
		},
		FreeFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	srv.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return set, nvml.SUCCESS }
	registered := 0
	for i := range 8 {
		sim.MockDevice(i).RegisterEventsFunc = func(types uint64, _ nvml.EventSet) nvml.Return {
			if types&nvml.EventTypeXidCriticalError != 0 {
				registered++
			}
			return nvml.SUCCESS
		}
	}
	col := gpu.New(gpu.FromNVML(srv), gpu.Options{Log: quiet})
	defer col.Close()
	if r := col.Sample(context.Background()); r.Err != nil || len(r.Xids) != 0 {
		t.Fatalf("first round: %v, %d xids", r.Err, len(r.Xids))
	}
	if registered != 8 {
		t.Fatalf("%d GPUs registered for Xid events, want 8", registered)
	}
	queue = append(queue, nvml.EventData{Device: srv.Devices[6], EventType: nvml.EventTypeXidCriticalError, EventData: 94})
	r := col.Sample(context.Background())
	if len(r.Xids) != 1 || r.Xids[0].Xid != 94 || r.Xids[0].GPU.Index != 6 || r.Xids[0].GPU.PCIBusID != "00000000:BA:00.0" {
		t.Fatalf("xids = %+v", r.Xids)
	}
}

// Rounds back to back (a replay at speed, a recording in simulated time)
// never find a GPU still marked busy by the round before.
func TestBackToBackRoundsNeverFindAGPUBusy(t *testing.T) {
	sim := simulator.New(&replay.Scenario{Duration: 10, Interval: 1, Load: replay.LoadCurve{Default: [][2]float64{{0, 50}}}})
	col := gpu.New(sim.Library(), gpu.Options{Log: quiet, Timeout: time.Minute})
	for round := 0; round < 300; round++ {
		for i, s := range col.Sample(context.Background()).Samples {
			if s.Err != "" {
				t.Fatalf("round %d, GPU %d: %s", round, i, s.Err)
			}
		}
	}
}

// Fields a node's GPUs do not have are logged once, in one line for the
// whole node, naming the GPUs of a field only where not all have it.
func TestUnsupportedFieldsAreOneLogLineForTheNode(t *testing.T) {
	sim := simulator.New(&replay.Scenario{Duration: 10, Interval: 1, Load: replay.LoadCurve{Default: [][2]float64{{0, 50}}},
		NotSupported: []replay.FieldsOff{{GPU: 2, Fields: []string{"DCGM_FI_DEV_MEMORY_TEMP"}}}})
	var log strings.Builder
	col := gpu.New(sim.Library(), gpu.Options{Log: slog.New(slog.NewTextHandler(&log, nil))})
	defer col.Close()
	for range 3 {
		if r := col.Sample(context.Background()); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	lines := strings.Count(log.String(), "fields not supported")
	if lines != 1 {
		t.Fatalf("%d log lines for the unsupported fields, want 1:\n%s", lines, log.String())
	}
	if !strings.Contains(log.String(), "DCGM_FI_DEV_MEMORY_TEMP (GPU 2)") {
		t.Errorf("the one GPU without memory temperature is not named:\n%s", log.String())
	}
}
