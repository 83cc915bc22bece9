package simulator

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func demoScenario(t *testing.T) *replay.Scenario {
	t.Helper()
	sc, err := replay.LoadScenario("../../../testdata/scenarios/dgx-h100-demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestRecordedScenarioReplaysTheSameAnswers(t *testing.T) {
	sc := demoScenario(t)
	tr, err := replay.RecordScenario(sc, New(sc), quiet)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := replay.Read(&buf, "mem")
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Header.GPUs) != 8 || back.Header.GPUs[0].PCIBusID != "00000000:18:00.0" {
		t.Fatalf("header GPUs = %+v", back.Header.GPUs)
	}
	// Play at t=100 s: GPU 2 is in its thermal slowdown, GPU 4 has no memory
	// temperature, GPU 3 is still on the bus.
	now := time.Unix(1000, 0)
	p := replay.NewPlayer(back, replay.PlayerOptions{Clock: func() time.Time { return now }})
	now = now.Add(130 * time.Second)
	col := gpu.New(p.Library(), gpu.Options{Log: quiet, Clock: func() time.Time { return now }})
	r := col.Sample(context.Background())
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	temp := gpu.FieldIndex("DCGM_FI_DEV_GPU_TEMP")
	if v, ok := r.Samples[2].Value(temp); !ok || v < 85 {
		t.Errorf("GPU 2 temp at 130 s = %v,%v; want the thermal slowdown (>= 85)", v, ok)
	}
	memTemp := gpu.FieldIndex("DCGM_FI_DEV_MEMORY_TEMP")
	if st := r.Samples[4].Status[memTemp]; st != gpu.StatusNotSupported {
		t.Errorf("GPU 4 memory temp status = %v, want not_supported", st)
	}
	if _, ok := r.Samples[0].Value(memTemp); !ok {
		t.Error("GPU 0 memory temp missing")
	}
	if r.Samples[3].Lost {
		t.Error("GPU 3 lost before 240 s")
	}
	now = now.Add(130 * time.Second) // 260 s
	r = col.Sample(context.Background())
	if !r.Samples[3].Lost {
		t.Error("GPU 3 not lost at 260 s")
	}
	for i, s := range r.Samples {
		if i != 3 && (s.Lost || s.Err != "") {
			t.Errorf("GPU %d: lost=%v err=%q; the other GPUs must keep reporting", i, s.Lost, s.Err)
		}
	}
}

// A live recording keeps the kernel-log records that arrive while it runs,
// so the trace replays them through the same parser.
func TestLiveRecordingKeepsKernelRecords(t *testing.T) {
	sim := New(demoScenario(t))
	kernel := make(chan string, 4)
	const line = "3,77,123456,-;NVRM: Xid (PCI:0000:18:00): 13, pid=1, name=x, Graphics Exception"
	kernel <- line
	tr, err := replay.RecordLive(context.Background(), sim.Library(), 100*time.Millisecond, 300*time.Millisecond, kernel, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	rounds := 0
	for _, r := range tr.Records {
		if r.Kmsg != "" {
			kept = append(kept, r.Kmsg)
		}
		if r.GPU != nil && *r.GPU == 0 {
			rounds++
		}
	}
	if len(kept) != 1 || kept[0] != line {
		t.Errorf("kernel records kept: %q", kept)
	}
	if len(tr.Header.GPUs) != 8 || rounds == 0 {
		t.Errorf("%d GPUs, %d records for GPU 0", len(tr.Header.GPUs), rounds)
	}
}

// A live recording starts with this host's kernel, driver and DKMS facts,
// as the checks read them: a replay of it shows this host's findings.
func TestALiveRecordingKeepsThisHostsFacts(t *testing.T) {
	want, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	sim := New(demoScenario(t))
	tr, err := replay.RecordLive(context.Background(), sim.Library(), 100*time.Millisecond, 200*time.Millisecond, nil, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Records) == 0 || tr.Records[0].Host == nil {
		t.Fatal("the live trace does not start with a host record")
	}
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := replay.Read(&buf, "live")
	if err != nil {
		t.Fatalf("the live trace does not read back: %v", err)
	}
	p := replay.NewPlayer(back, replay.PlayerOptions{})
	defer p.Close()
	f, ok := p.HostFacts()
	if !ok || f.RunningKernel != strings.TrimSpace(string(want)) {
		t.Errorf("replayed running kernel %q (ok %v), this host runs %q", f.RunningKernel, ok, strings.TrimSpace(string(want)))
	}
}
