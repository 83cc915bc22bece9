package replay

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
)

// ebpfLine is a trace line holding r, as a recorder writes it.
func ebpfLine(t float64, layout int, raw []byte, memcg string) string {
	m := ""
	if memcg != "" {
		m = fmt.Sprintf(`,"memcg":%q`, memcg)
	}
	return fmt.Sprintf(`{"t":%g,"ebpf":{"layout":%d,"raw":"%s"%s}}`, t, layout, base64.StdEncoding.EncodeToString(raw), m)
}

// An eBPF record this gpuwarden would misread is refused on read, naming
// the line: another layout, another size, a kind the decoder does not know,
// an oversized memcg, or a GPU it cannot have.
func TestTraceRefusesEBPFRecordsItWouldMisread(t *testing.T) {
	good := ebpf.Record{Kind: ebpf.RecordModuleLoad, Name: "nvidia"}.EncodeTrace()
	cases := []struct{ name, line, want string }{
		{"another layout", ebpfLine(1, ebpf.Layout+1, good, ""), fmt.Sprintf("ebpf record of layout %d (this gpuwarden reads layout %d)", ebpf.Layout+1, ebpf.Layout)},
		{"short", ebpfLine(1, ebpf.Layout, good[:100], ""), fmt.Sprintf("ebpf record of 100 bytes, want %d", ebpf.RecordSize)},
		{"long", ebpfLine(1, ebpf.Layout, append(bytes.Clone(good), 0), ""), fmt.Sprintf("ebpf record of %d bytes", ebpf.RecordSize+1)},
		{"unknown kind", ebpfLine(1, ebpf.Layout, ebpf.Record{Kind: 9}.EncodeTrace(), ""), "ebpf record of unknown kind 9"},
		{"memcg too long", ebpfLine(1, ebpf.Layout, good, "/"+strings.Repeat("a", MaxMemcgBytes)), "memcg of 4097 bytes"},
		{"with a gpu", strings.Replace(ebpfLine(1, ebpf.Layout, good, ""), `"ebpf"`, `"gpu":0,"ebpf"`, 1), "field ebpf takes no gpu"},
		{"not base64", `{"t":1,"ebpf":{"layout":1,"raw":"%%%"}}`, "x:2:"},
		{"ebpf and kmsg", strings.Replace(ebpfLine(1, ebpf.Layout, good, ""), `"ebpf"`, `"kmsg":"x","ebpf"`, 1), "exactly one of nvml, kmsg, hang_s, ebpf or host"},
		{"unknown field", `{"t":1,"ebpf":{"layout":1,"raw":"","order":"be"}}`, `unknown field "order"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(goodHeader+"\n"+c.line+"\n"), "x")
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "x:2:") {
				t.Fatalf("err = %v, want line 2 and %q", err, c.want)
			}
		})
	}
	if _, err := Read(strings.NewReader(goodHeader+"\n"+ebpfLine(1, ebpf.Layout, good, "")+"\n"), "x"); err != nil {
		t.Fatalf("a good record: %v", err)
	}
}

// A scenario's ebpf entries become the records the kernel's programs would
// write, kept in the trace and given to PlayerOptions.EBPF as their time
// comes, where the eBPF source's decoder reads them back.
func TestScenarioEBPFEntriesReplayAsRingBufferRecords(t *testing.T) {
	sc, err := LoadScenario("../../testdata/scenarios/ebpf-replay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := RecordScenario(sc, quiet)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "t.jsonl.gz")
	if err := WriteFile(tr, path); err != nil {
		t.Fatal(err)
	}
	back, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		r     ebpf.Record
		memcg string
	}
	var recs []got
	now := time.Unix(0, 0)
	p := NewPlayer(back, PlayerOptions{Clock: func() time.Time { return now }, EBPF: func(raw []byte, memcg string) {
		r, err := ebpf.DecodeTrace(raw)
		if err != nil {
			t.Errorf("decode: %v", err)
		}
		recs = append(recs, got{r, memcg})
	}})
	defer p.Close()
	step := func(to time.Duration) {
		now = time.Unix(0, 0).Add(to)
		p.mu.Lock()
		p.advance()
		p.mu.Unlock()
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

// A scenario's ebpf entry that no kernel record could hold is refused with
// its index.
func TestScenarioRefusesImpossibleEBPFEntries(t *testing.T) {
	base := "duration: 10\ninterval: 1\nload: {default: [[0, 1]]}\nebpf:\n  - "
	cases := map[string]string{
		"{at: 1, kind: oom, pid: 1, comm: a-comm-of-sixteen, memcg: /x}": "ebpf[0]: oom",
		"{at: 1, kind: oom, pid: 0, comm: sh, memcg: /x}":                "ebpf[0]: oom",
		"{at: 1, kind: oom, pid: 1, comm: sh, memcg: x}":                 "ebpf[0]: oom",
		"{at: 1, kind: aer, gpu: 8, severity: corrected}":                "ebpf[0]: aer: gpu 8",
		"{at: 1, kind: aer, gpu: 1, severity: bad}":                      `ebpf[0]: aer: severity "bad"`,
		"{at: 1, kind: module_load}":                                     "ebpf[0]: module_load",
		"{at: 1, kind: kprobe}":                                          `ebpf[0]: kind "kprobe"`,
		"{at: 1, kind: oom, pid: 1, comm: sh, memcg: /x, colour: red}":   "field colour not found",
	}
	for entry, want := range cases {
		p := filepath.Join(t.TempDir(), "s.yaml")
		os.WriteFile(p, []byte(base+entry+"\n"), 0o644)
		if _, err := LoadScenario(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", entry, err, want)
		}
	}
}

// The demo's eBPF records: an NVIDIA module load, the tracepoint's copy of
// the AER the kernel log prints for GPU 4 (the same device and severity,
// so the agent joins them), and the OOM kill of the Slurm job's GPU
// process, which the simulated node attributes to the job.
func TestTheDemoScenarioHasTheEBPFIncidents(t *testing.T) {
	sc := demoScenario(t)
	tr, err := RecordScenario(sc, quiet)
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
	sim := NewSimulation(sc)
	if oom := recs[2]; oom.Kind != ebpf.RecordOOM || sim.Owner(oom.PID).SlurmJob != "4242" {
		t.Errorf("the OOM victim %+v is not the demo job's process", oom)
	}
}

// A live recording keeps the eBPF records that arrive while it runs
// (ebpf.Capture's), with their memcg, and a trace with them reads back:
// a capture that ends early leaves the rest of the recording as it was.
func TestLiveRecordingKeepsEBPFRecords(t *testing.T) {
	sim := NewSimulation(demoScenario(t))
	bpf := make(chan ebpf.Captured, 2)
	oom := ebpf.Record{Kind: ebpf.RecordOOM, PID: 4242, Comm: "python3", CgroupID: 12, Name: "step_0"}.EncodeTrace()
	bpf <- ebpf.Captured{Raw: oom, Memcg: "/slurm/uid_0/job_1/step_0"}
	close(bpf)
	tr, err := RecordLive(context.Background(), sim.Library(), 100*time.Millisecond, 300*time.Millisecond, nil, bpf, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Read(&buf, "live")
	if err != nil {
		t.Fatal(err)
	}
	var kept []*EBPFRecord
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
