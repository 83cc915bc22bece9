package agent

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// demoWithClock is the demo node at 60 s with a clock the test moves.
func demoWithClock(t *testing.T) (*State, func(time.Duration)) {
	t.Helper()
	tr, err := replay.Open("../collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	p := replay.NewPlayer(tr, replay.PlayerOptions{Clock: clock})
	now = now.Add(60 * time.Second)
	st := NewState("demo-dgx-h100", 0, time.Hour, clock)
	col := gpu.New(p.Library(), gpu.Options{Clock: clock, Log: quiet})
	st.ApplyRound(col.Sample(context.Background()))
	return st, func(d time.Duration) {
		now = now.Add(d)
		st.Refresh()
	}
}

// kernelEvent is what the kernel-log source makes of one driver line.
func kernelEvent(t testing.TB, line string) event.Event {
	t.Helper()
	ev := kmsg.RecordEvent(kmsg.Record{Message: line}, "", time.Time{})
	if ev.Kind == event.KindUnrelated {
		t.Fatalf("%q is not a driver line", line)
	}
	ev.Source = "kmsg"
	return ev
}

// The catalog says how long an event weighs: an Xid 79 line on its own
// keeps the GPU critical past the event window, for the boot; an Xid 13
// only for the window.
func TestAnXid79AloneLastsTheBoot(t *testing.T) {
	st, advance := demoWithClock(t)
	st.ApplyEvents([]event.Event{
		kernelEvent(t, "NVRM: Xid (PCI:0000:3a:00): 79, pid=1234, GPU has fallen off the bus."),
		kernelEvent(t, "NVRM: Xid (PCI:0000:ba:00): 13, pid=77, name=python, Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Illegal Instruction Encoding"),
	}, nil)
	snap := st.Snapshot()
	if h := snap.GPUs[2].Health; h.Level != event.Critical || h.Action != event.ActionReboot {
		t.Fatalf("GPU 2 after Xid 79: %+v, want critical with reboot", h)
	}
	if h := snap.GPUs[6].Health; h.Level != event.Warning {
		t.Fatalf("GPU 6 after Xid 13: %+v, want warning", h)
	}
	advance(3 * time.Hour) // past the one-hour window
	snap = st.Snapshot()
	if h := snap.GPUs[2].Health; h.Level != event.Critical || !strings.Contains(strings.Join(h.Reasons, ";"), "Xid 79") {
		t.Errorf("GPU 2 three hours after Xid 79: %+v, want still critical for the boot", h)
	}
	if h := snap.GPUs[6].Health; h.Level == event.Warning {
		t.Errorf("GPU 6 three hours after Xid 13: %+v, want the window to have passed", h)
	}
}

// An NVSwitch SXid does not point at a GPU: it weighs on the host.
func TestAnSXidWeighsOnTheHost(t *testing.T) {
	st, _ := demoWithClock(t)
	st.ApplyEvents([]event.Event{kernelEvent(t, "nvidia-nvswitch2: SXid (PCI:0000:86:00.0): 20034, Fatal, Link 30 LTSSM Fault Up")}, nil)
	snap := st.Snapshot()
	for _, g := range snap.GPUs {
		if g.Health.Level != event.OK {
			t.Errorf("GPU %d is %s after an SXid", g.Info.Index, g.Health.Level)
		}
	}
	if snap.Health.Level != event.Critical || !strings.Contains(strings.Join(snap.Health.Reasons, ";"), "SXid 20034") {
		t.Errorf("host health after a fatal SXid: %+v", snap.Health)
	}
}

// Whatever the log says, the series stay bounded: 20 000 distinct Xid
// lines on bus ids that are no GPU of the host and with codes outside the
// catalog make at most one unknown-device series per code in the catalog
// plus "other", and no series per address.
func TestXidSeriesFromLogTextAreBounded(t *testing.T) {
	st, _ := demoWithClock(t)
	var batch []event.Event
	for i := range 20000 {
		code := []int{13, 31, 79, 5000 + i}[i%4]
		batch = append(batch, kernelEvent(t, fmt.Sprintf("NVRM: Xid (PCI:%04x:%02x:%02x): %d, pid=%d, name=x, flood",
			i%65536, (i/7)%256, i%32, code, i)))
		if len(batch) == 1000 {
			st.ApplyEvents(batch, nil)
			batch = batch[:0]
		}
	}
	snap := st.Snapshot()
	if n := len(snap.XidCounts); n != 4 {
		t.Errorf("%d xid series after 20 000 unknown-device lines, want 4 (13, 31, 79, other): %+v", n, snap.XidCounts)
	}
	var total uint64
	for _, c := range snap.XidCounts {
		if c.PCIBusID != UnknownBus || c.GPU != -1 {
			t.Errorf("series %+v: want the unknown bucket", c)
		}
		total += c.Count
	}
	if total != 20000 {
		t.Errorf("counted %d, want 20000", total)
	}
	if body := scrape(t, st); !strings.Contains(body, `gpuwarden_xid_errors_total{gpu="",UUID="",pci_bus_id="unknown",xid="other"} 5000`) {
		t.Errorf("no other bucket in:\n%s", grepLines(body, "gpuwarden_xid_errors_total"))
	}
	if n, b := st.Events().Len(), st.Events().Bytes(); n > ringEvents || b > ringBytes {
		t.Errorf("ring holds %d events, %d bytes", n, b)
	}
	for _, g := range snap.GPUs {
		if g.Health.Level != event.OK {
			t.Errorf("GPU %d is %s after lines for other bus ids", g.Info.Index, g.Health.Level)
		}
	}
}

// Long text is cut on every event, and the ring is bounded in bytes.
func TestEventTextAndTheRingAreBounded(t *testing.T) {
	st, _ := demoWithClock(t)
	long := "NVRM: Xid (PCI:0000:3a:00): 13, pid=1, name=x, " + strings.Repeat("A", 1<<20)
	ev := event.Event{Source: "replay", Kind: event.KindXid, Code: 13, GPU: event.GPURef{Index: -1, PCIBusID: "0000:3a:00.0"},
		Raw: long, Fields: map[string]string{"name": strings.Repeat("B", 1<<20)}}
	for range 2000 {
		st.ApplyEvent(ev)
	}
	got := st.Events().Recent(1, nil)[0]
	if len(got.Raw) > MaxEventText || !strings.HasSuffix(got.Raw, "[truncated]") || len(got.Fields["name"]) > MaxFieldValue {
		t.Errorf("event kept with %d bytes of text and a %d-byte field", len(got.Raw), len(got.Fields["name"]))
	}
	if b := st.Events().Bytes(); b > ringBytes {
		t.Errorf("ring weighs %d bytes, over %d", b, ringBytes)
	}
	if n := st.Snapshot().TruncatedEvents; n != 2000 {
		t.Errorf("truncated count %d, want 2000", n)
	}
	if ev.Raw != long || len(ev.Fields["name"]) != 1<<20 {
		t.Error("bound changed the caller's event")
	}
}

// Subscribers get new events and health transitions, never restored ones;
// a full queue drops and counts, and never blocks.
func TestSubscribersGetNewEventsAndTransitions(t *testing.T) {
	st, advance := demoWithClock(t)
	sub := st.Subscribe("test", 16)
	slow := st.Subscribe("slow", 1)
	restored := kernelEvent(t, "NVRM: Xid (PCI:0000:18:00): 79, pid=1, GPU has fallen off the bus.")
	st.ApplyEvents(nil, []event.Event{restored})
	fresh := kernelEvent(t, "NVRM: Xid (PCI:0000:ba:00): 13, pid=77, name=python, Graphics Exception")
	st.ApplyEvents([]event.Event{fresh}, nil)

	var events, transitions []Notice
	for len(sub.C()) > 0 {
		n := <-sub.C()
		if n.Event != nil {
			events = append(events, n)
		} else {
			transitions = append(transitions, n)
		}
	}
	if len(events) != 1 || events[0].Event.Code != 13 || events[0].Event.GPU.Index != 6 {
		t.Fatalf("events %+v, want the one fresh Xid 13 on GPU 6", events)
	}
	want := map[int]event.Level{0: event.Critical, 6: event.Warning, -1: event.Critical}
	for _, n := range transitions {
		if lvl, ok := want[n.Transition.GPU]; ok && lvl == n.Transition.To {
			delete(want, n.Transition.GPU)
		}
	}
	if len(want) != 0 {
		t.Errorf("missing transitions %v in %+v", want, transitions)
	}
	// The window passes: GPU 6 leaving warning is a transition too (to
	// unknown here, as its last sample is two hours old by then).
	advance(2 * time.Hour)
	back := false
	for len(sub.C()) > 0 {
		if n := <-sub.C(); n.Transition != nil && n.Transition.GPU == 6 && n.Transition.From == event.Warning {
			back = true
		}
	}
	if !back {
		t.Error("no transition of GPU 6 out of warning after the window")
	}
	snap := st.Snapshot()
	if slow.Dropped() == 0 || snap.Subscribers[1].Dropped != slow.Dropped() {
		t.Errorf("slow subscriber dropped %d, snapshot says %+v", slow.Dropped(), snap.Subscribers)
	}
	if body := scrape(t, st); !strings.Contains(body, `gpuwarden_subscriber_dropped_notices_total{subscriber="slow"} `) {
		t.Error("subscriber drops are not exported")
	}
}

// Restored events are listed and weigh on health, but are not counted.
func TestRestoredEventsAreListedNotCounted(t *testing.T) {
	st, _ := demoWithClock(t)
	st.ApplyEvents(nil, []event.Event{kernelEvent(t, "NVRM: Xid (PCI:0000:3a:00): 79, pid=1, GPU has fallen off the bus.")})
	snap := st.Snapshot()
	if len(snap.XidCounts) != 0 || snap.GPUs[2].Health.Level != event.Critical {
		t.Errorf("restored Xid 79: counts %+v, GPU 2 %s", snap.XidCounts, snap.GPUs[2].Health.Level)
	}
	if evs := st.Events().Recent(10, nil); len(evs) != 1 || !evs[0].Restored {
		t.Errorf("events %+v, want the restored one", evs)
	}
}

// A file name with invalid UTF-8 (a kernel release from /boot) cannot
// break the exposition: the value is escaped at one place, every series
// stays, and two names that differ only in invalid bytes stay two series.
func TestInvalidUTF8LabelValuesKeepEverySeries(t *testing.T) {
	st, _ := demoWithClock(t)
	st.SetStats("dkms", []source.Metric{
		{Name: "gpuwarden_nvidia_module_present", Help: "h", Labels: []string{"kernel", "6.1.0-\xff-amd64"}, Value: 0},
		{Name: "gpuwarden_nvidia_module_present", Help: "h", Labels: []string{"kernel", "6.1.0-\xfe-amd64"}, Value: 1},
		{Name: "gpuwarden_reboot_pending", Help: "h", Value: 1},
	})
	st.Refresh()
	body := scrape(t, st)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := parser.TextToMetricFamilies(strings.NewReader(body)); err != nil {
		t.Fatalf("the exposition does not parse: %v", err)
	}
	for _, want := range []string{`gpuwarden_nvidia_module_present{kernel="6.1.0-\\xff-amd64"} 0`, `gpuwarden_nvidia_module_present{kernel="6.1.0-\\xfe-amd64"} 1`, "gpuwarden_reboot_pending 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s in:\n%s", want, grepLines(body, "gpuwarden_nvidia_module_present"))
		}
	}
}

// A gzip scrape is the same exposition as a plain one: the snapshot's
// member, compressed once, and the scrape's own lines.
func TestAGzipScrapeIsThePlainOne(t *testing.T) {
	st, _ := demoWithClock(t)
	h := MetricsHandler(st, nil)
	plain := httptest.NewRecorder()
	h.ServeHTTP(plain, httptest.NewRequest("GET", "/metrics", nil))
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip, deflate")
	for range 2 { // the second sends the stored member
		zipped := httptest.NewRecorder()
		h.ServeHTTP(zipped, req)
		if zipped.Header().Get("Content-Encoding") != "gzip" {
			t.Fatal("no gzip")
		}
		zr, err := gzip.NewReader(zipped.Body)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != plain.Body.String() {
			t.Fatalf("gzip scrape differs from the plain one (%d vs %d bytes)", len(b), plain.Body.Len())
		}
		if zipped.Body.Len() > plain.Body.Len()/4 {
			t.Errorf("compressed to %d of %d bytes", zipped.Body.Len(), plain.Body.Len())
		}
	}
	req.Header.Set("Accept-Encoding", "gzip;q=0")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Header().Get("Content-Encoding") != "" {
		t.Error("gzip;q=0 got gzip")
	}
}

// One PCIe AER reported by both the kernel log and the eBPF tracepoint is
// one event; two from one source are two.
func TestAnAERFromBothSourcesIsOneEvent(t *testing.T) {
	st, _ := demoWithClock(t)
	now := time.Date(2026, 1, 2, 3, 5, 5, 0, time.UTC)
	aer := func(source string, at time.Time) event.Event {
		return event.Event{Source: source, Kind: event.KindAER, Time: at, GPU: event.GPURef{Index: -1, PCIBusID: "0000:3a:00.0"},
			Fields: map[string]string{"aer_severity": "corrected"}, Raw: "AER"}
	}
	st.ApplyEvents([]event.Event{aer("kmsg", now), aer("ebpf", now.Add(100*time.Millisecond))}, nil)
	st.ApplyEvents([]event.Event{aer("kmsg", now.Add(10*time.Second)), aer("kmsg", now.Add(10*time.Second))}, nil)
	if n := st.Snapshot().EventCounts[EventKey{event.KindAER, event.Warning}]; n != 3 {
		t.Errorf("%d AER events counted, want 3 (one from both sources, two from the kernel log)", n)
	}
	if snap := st.Snapshot(); snap.JoinedAER != 1 || snap.JoinedXid != 0 {
		t.Errorf("joined: aer %d, xid %d; want the eBPF copy joined once", snap.JoinedAER, snap.JoinedXid)
	}
	if body := scrape(t, st); !strings.Contains(body, `gpuwarden_events_joined_total{kind="aer"} 1`) {
		t.Errorf("no joined AER series:\n%s", grepLines(body, "gpuwarden_events_joined"))
	}
}

// An OOM kill names no GPU; when its victim was a GPU process, it names
// the job that process belonged to (the demo's Slurm job on GPUs 0 and 1),
// as /v1/gpus names the owners of each GPU. A victim on no GPU names none.
func TestAnOOMKillOfAJobsGPUProcessNamesTheJob(t *testing.T) {
	st, _ := demoWithClock(t)
	oom := func(pid string) event.Event {
		return st.ApplyEvent(event.Event{Source: "ebpf", Kind: event.KindOOMKill, Time: time.Now(), GPU: event.GPURef{Index: -1},
			Fields: map[string]string{"pid": pid, "process_name": "python3", "gpu_process": "true"}, Raw: "oom/mark_victim"})
	}
	if got := oom("31338").Fields[FieldOwners]; got != "slurm job 4242.0 (demo)" {
		t.Errorf("the OOM kill of the job's process on GPU 1 names %q, want the job", got)
	}
	if got, ok := oom("777").Fields[FieldOwners]; ok {
		t.Errorf("the OOM kill of a process on no GPU names %q", got)
	}
	if got := oom("not-a-pid").Fields[FieldOwners]; got != "" {
		t.Errorf("an OOM kill without a pid names %q", got)
	}
	v := ViewGPUs(st.Snapshot(), time.Now())
	if len(v.GPUs) != 8 || !slices.Equal(v.GPUs[0].Owners, []string{"slurm job 4242.0 (demo)"}) || len(v.GPUs[2].Owners) != 0 {
		t.Errorf("owners in /v1/gpus: GPU 0 %v, GPU 2 %v", v.GPUs[0].Owners, v.GPUs[2].Owners)
	}
}

// An Xid on a GPU names the Slurm job that was on it, and the process's
// series carries the job: processes from NVML, owners from /proc.
func TestAnXidNamesTheJobOnItsGPU(t *testing.T) {
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "4242"), 0o755)
	os.WriteFile(filepath.Join(proc, "4242", "cgroup"), []byte("7:memory:/slurm/uid_1000/job_777/step_0/task_0\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "4242", "environ"), []byte("SLURM_JOB_ID=777\x00SLURM_JOB_USER=alice\x00"), 0o644)
	st := NewState("h", 0, time.Hour, nil)
	st.Attribute(proc)
	st.LabelJobs(true)
	smp := &gpu.Sample{GPU: gpu.Info{Index: 0, UUID: "GPU-00000000-0000-0000-0000-000000000000", PCIBusID: "00000000:3B:00.0"}, Time: time.Now(),
		Values: make([]float64, len(gpu.Fields)), Status: make([]gpu.Status, len(gpu.Fields)),
		Processes: []gpu.Process{{PID: 4242, UsedMemory: 1 << 30, Compute: true}}}
	st.ApplyRound(gpu.Round{Time: time.Now(), Samples: []*gpu.Sample{smp}})
	ev := st.ApplyEvent(kernelEvent(t, "NVRM: Xid (PCI:0000:3b:00): 79, pid=4242, GPU has fallen off the bus."))
	if got := ev.Fields[FieldOwners]; got != "slurm job 777.0 (alice)" {
		t.Errorf("the Xid names %q, want the job", got)
	}
	body := scrape(t, st)
	if !strings.Contains(body, `pid="4242",hpc_job="777",pod_uid="",container_id=""} 1.073741824e+09`) {
		t.Errorf("no process series with the job:\n%s", grepLines(body, "gpuwarden_gpu_process"))
	}
	// dcgm-exporter's hpc_job label on the GPU's own series.
	if !strings.Contains(body, `DCGM_FI_DRIVER_VERSION="",hpc_job="777"} `) {
		t.Errorf("GPU series without hpc_job:\n%s", grepLines(body, "gpuwarden_gpu_info"))
	}
}
