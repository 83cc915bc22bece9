package simulator

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// A scenario's ebpf entries become the records the kernel's programs would
// write, kept in the trace and given to PlayerOptions.EBPF as their time
// comes, where the eBPF source's decoder reads them back.
func TestScenarioEBPFEntriesReplayAsRingBufferRecords(t *testing.T) {
	sc, err := replay.LoadScenario("../../../testdata/scenarios/ebpf-replay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := replay.RecordScenario(sc, New(sc), quiet)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "t.jsonl.gz")
	if err := replay.WriteFile(tr, path); err != nil {
		t.Fatal(err)
	}
	back, err := replay.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		r     ebpf.Record
		memcg string
	}
	var recs []got
	now := time.Unix(0, 0)
	p := replay.NewPlayer(back, replay.PlayerOptions{Clock: func() time.Time { return now }, EBPF: func(raw []byte, memcg string) {
		r, err := ebpf.DecodeTrace(raw)
		if err != nil {
			t.Errorf("decode: %v", err)
		}
		recs = append(recs, got{r, memcg})
	}})
	defer p.Close()
	// An NVML call plays what has come due, as a sampling round would.
	step := func(to time.Duration) {
		now = time.Unix(0, 0).Add(to)
		p.Library().DeviceGetCount()
	}
	step(2900 * time.Millisecond)
	if len(recs) != 0 {
		t.Fatalf("%d records before their time", len(recs))
	}
	step(12 * time.Second)
	if len(recs) != 3 {
		t.Fatalf("%d records, want the scenario's 3: %+v", len(recs), recs)
	}
	aer, mod, oom := recs[0].r, recs[1].r, recs[2].r
	if aer.Kind != ebpf.RecordAER || aer.Name != "0000:3a:00.0" || aer.Severity != 2 || aer.Status != 1 {
		t.Errorf("aer record %+v, want GPU 2's bus id, corrected (2), status 1", aer)
	}
	if mod.Kind != ebpf.RecordModuleLoad || mod.Name != "nvidia" {
		t.Errorf("module record %+v", mod)
	}
	if oom.Kind != ebpf.RecordOOM || oom.PID != 31337 || oom.Comm != "python3" || oom.UID != 1000 || oom.Name != "step_0" || oom.CgroupID == 0 {
		t.Errorf("oom record %+v", oom)
	}
	if recs[2].memcg != "/slurm/uid_1000/job_4242/step_0" || recs[0].memcg != "" {
		t.Errorf("memcg %q and %q", recs[2].memcg, recs[0].memcg)
	}
	if oom.Boottime != 9*time.Second {
		t.Errorf("oom stamped %v, want the scenario's 9s", oom.Boottime)
	}
}

// The demo's eBPF records: an NVIDIA module load, the tracepoint's copy of
// the AER the kernel log prints for GPU 4 (the same device and severity,
// so the agent joins them), and the OOM kill of the Slurm job's GPU
// process, which the simulated node attributes to the job.
func TestTheDemoScenarioHasTheEBPFIncidents(t *testing.T) {
	sc := demoScenario(t)
	tr, err := replay.RecordScenario(sc, New(sc), quiet)
	if err != nil {
		t.Fatal(err)
	}
	var recs []ebpf.Record
	var kernelAER string
	for _, r := range tr.Records {
		if r.EBPF != nil {
			got, err := ebpf.DecodeTrace(r.EBPF.Raw)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, got)
		}
		if strings.Contains(r.Kmsg, "PCIe Bus Error") {
			kernelAER = r.Kmsg
		}
	}
	if len(recs) != 3 {
		t.Fatalf("%d eBPF records in the demo, want 3", len(recs))
	}
	if recs[0].Kind != ebpf.RecordModuleLoad || recs[0].Name != "nvidia" {
		t.Errorf("first record %+v, want the nvidia module load", recs[0])
	}
	if aer := recs[1]; aer.Kind != ebpf.RecordAER || !strings.Contains(kernelAER, "nvidia "+aer.Name+": PCIe Bus Error: severity=Corrected") {
		t.Errorf("the tracepoint's AER %+v is not the kernel log's %q", aer, kernelAER)
	}
	sim := New(sc)
	if oom := recs[2]; oom.Kind != ebpf.RecordOOM || sim.Owner(oom.PID).SlurmJob != "4242" {
		t.Errorf("the OOM victim %+v is not the demo job's process", oom)
	}
}

// A live recording keeps the eBPF records that arrive while it runs
// (ebpf.Capture's), with their memcg, and a trace with them reads back:
// a capture that ends early leaves the rest of the recording as it was.
func TestLiveRecordingKeepsEBPFRecords(t *testing.T) {
	sim := New(demoScenario(t))
	bpf := make(chan ebpf.Captured, 2)
	oom := ebpf.Record{Kind: ebpf.RecordOOM, PID: 4242, Comm: "python3", CgroupID: 12, Name: "step_0"}.EncodeTrace()
	bpf <- ebpf.Captured{Raw: oom, Memcg: "/slurm/uid_0/job_1/step_0"}
	close(bpf)
	tr, err := replay.RecordLive(context.Background(), sim.Library(), 100*time.Millisecond, 300*time.Millisecond, nil, bpf, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := replay.Read(&buf, "live")
	if err != nil {
		t.Fatal(err)
	}
	var kept []*replay.EBPFRecord
	rounds := 0
	for _, r := range back.Records {
		if r.EBPF != nil {
			kept = append(kept, r.EBPF)
		}
		if r.GPU != nil && *r.GPU == 0 {
			rounds++
		}
	}
	if len(kept) != 1 || !bytes.Equal(kept[0].Raw, oom) || kept[0].Memcg != "/slurm/uid_0/job_1/step_0" || kept[0].Layout != ebpf.Layout {
		t.Errorf("eBPF records kept: %+v", kept)
	}
	if rounds == 0 {
		t.Error("no GPU rounds recorded")
	}
}
