package ebpf

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/source/sourcetest"
)

// waitEvents polls the sink until it holds n events, up to a second.
func waitEvents(t *testing.T, sink *sourcetest.Sink, n int) []event.Event {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		evs := sink.Snapshot().Events
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events within a second, want %d: %+v", len(evs), n, evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A trace's records go through the source as its ring buffer's do: the
// same decoder, the same counters and AER de-duplication, one event each.
// They happen now, on the replayed node: the memory cgroup is the trace's
// path, or the record's leaf name, never what this host's cgroup tree holds
// under the same id.
func TestATracesRecordsPlayThroughTheSource(t *testing.T) {
	sys := t.TempDir()
	hostCgroup := filepath.Join(sys, "fs/cgroup/memory/slurm/job_1")
	if err := os.MkdirAll(hostCgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(hostCgroup)
	hostIno := fi.Sys().(*syscall.Stat_t).Ino
	if got := memcgPath(hostfs.Paths{SysFS: sys}, hostIno); got != "/slurm/job_1" {
		t.Fatalf("the fixture's cgroup resolves to %q on this host", got)
	}

	s := &Source{Paths: hostfs.Paths{SysFS: sys}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.PlayTrace()
	s.SetGPUProcesses([]int{31337})
	sink := runSource(t, s)
	start := time.Now()
	s.Push(Record{Kind: kindOOM, PID: 31337, TID: 31337, UID: 1000, Comm: "python3", CgroupID: 99, Name: "step_0", Boottime: time.Hour}.EncodeTrace(),
		"/slurm/uid_1000/job_4242/step_0")
	s.Push(Record{Kind: kindOOM, PID: 555, Comm: "sh", CgroupID: hostIno, Name: "leaf"}.EncodeTrace(), "")
	aer := Record{Kind: kindAER, Name: "0000:3A:00.0", Severity: 2, Status: 1}.EncodeTrace()
	s.Push(aer, "")
	s.Push(aer, "") // the same error again within the window
	s.Push(Record{Kind: kindModuleLoad, Name: "nvidia"}.EncodeTrace(), "")
	s.Push([]byte{1, 2, 3}, "")
	evs := waitEvents(t, sink, 4)
	byKind := map[event.Kind][]event.Event{}
	for _, ev := range evs {
		byKind[ev.Kind] = append(byKind[ev.Kind], ev)
		if ev.Source != "ebpf" || ev.BootID != "" || ev.Time.Before(start) || time.Since(ev.Time) > time.Minute {
			t.Errorf("event %s: source %q, boot id %q, time %v (want ebpf, none, now)", ev.Kind, ev.Source, ev.BootID, ev.Time)
		}
	}
	ooms := byKind[event.KindOOMKill]
	if len(ooms) != 2 {
		t.Fatalf("%d oom_kill events, want 2", len(ooms))
	}
	job, other := ooms[0], ooms[1]
	if job.Fields[kmsg.FieldPID] != "31337" {
		job, other = other, job
	}
	if job.Fields[FieldMemcg] != "/slurm/uid_1000/job_4242/step_0" || job.Fields[FieldGPUProcess] != "true" || job.Fields[kmsg.FieldProcessName] != "python3" {
		t.Errorf("the job's OOM kill: %v", job.Fields)
	}
	if other.Fields[FieldMemcg] != "leaf" || other.Fields[FieldGPUProcess] != "false" {
		t.Errorf("a replayed record was resolved on this host: memcg %q, gpu_process %q; want the leaf name, false",
			other.Fields[FieldMemcg], other.Fields[FieldGPUProcess])
	}
	if a := byKind[event.KindAER]; len(a) != 1 || a[0].GPU.PCIBusID != "0000:3a:00.0" || a[0].Fields["aer_severity"] != "corrected" {
		t.Errorf("aer events %+v, want one on 0000:3a:00.0, corrected", a)
	}
	if m := byKind[event.KindDriverLoaded]; len(m) != 1 || m[0].Fields[FieldModule] != "nvidia" {
		t.Errorf("driver_loaded events %+v", m)
	}
	deadline := time.Now().Add(time.Second)
	for {
		stats := sink.Snapshot().Stats
		ok := metric(stats, "gpuwarden_oom_kills_total") == 2 &&
			metric(stats, "gpuwarden_ebpf_events_total", "program", "ras/aer_event") == 2 &&
			metric(stats, "gpuwarden_ebpf_aer_suppressed_total") == 1 &&
			metric(stats, "gpuwarden_ebpf_malformed_records_total") == 1
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters: %v", stats)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Without PlayTrace a pushed record is not the source's: a live agent
// plays no trace.
func TestALiveSourceTakesNoTraceRecords(t *testing.T) {
	s := &Source{}
	s.Push(Record{Kind: kindOOM, PID: 1, Comm: "sh"}.EncodeTrace(), "")
	if s.records[kindOOM] != 0 || s.replayed != nil {
		t.Fatal("a source not playing a trace took a record")
	}
}

// A trace's byte order is its own, whatever the host's: DecodeTrace reads
// what EncodeTrace wrote, little-endian.
func TestATraceRecordIsLittleEndian(t *testing.T) {
	b := Record{Kind: kindAER, PID: 0x01020304, Name: "0000:3b:00.0"}.EncodeTrace()
	if b[0] != kindAER || b[4] != 0x04 || b[7] != 0x01 {
		t.Fatalf("record bytes % x", b[:8])
	}
	r, err := DecodeTrace(b)
	if err != nil || r.PID != 0x01020304 || r.Name != "0000:3b:00.0" {
		t.Fatalf("%+v %v", r, err)
	}
}

// `gpuwarden record` keeps what the real program writes: an OOM kill in a
// memory cgroup is captured in a trace's layout with the cgroup's path as
// this host found it.
func TestCaptureKeepsARealOOMKillForATrace(t *testing.T) {
	needRoot(t)
	dir := memcg(t, 32<<20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := Capture(ctx, hostfs.Paths{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pid, exit := oomVictim(t, dir)
	waitOOMKilled(t, exit)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case got := <-c:
			r, err := DecodeTrace(got.Raw)
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != kindOOM || r.PID != uint32(pid) {
				continue // another OOM kill on this host
			}
			if got.Memcg != "/"+filepath.Base(dir) {
				t.Errorf("captured memcg %q, want %q", got.Memcg, "/"+filepath.Base(dir))
			}
			cancel()
			for range c { // closed once the capture has stopped
			}
			return
		case <-deadline:
			t.Fatalf("the OOM kill of pid %s was not captured", strconv.Itoa(pid))
		}
	}
}
