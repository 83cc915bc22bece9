package ebpf

import (
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
)

// The decoder's offsets are the C struct's, as the generated binding
// spells them.
func TestDecoderOffsetsAreTheObjects(t *testing.T) {
	var r gpuwardenGwRecord
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"pid", unsafe.Offsetof(r.Pid), 4}, {"tid", unsafe.Offsetof(r.Tid), 8}, {"status", unsafe.Offsetof(r.Status), 12},
		{"time_ns", unsafe.Offsetof(r.TimeNs), 16}, {"cgroup_id", unsafe.Offsetof(r.CgroupId), 24},
		{"uid", unsafe.Offsetof(r.Uid), 32}, {"severity", unsafe.Offsetof(r.Severity), 36},
		{"tlp_valid", unsafe.Offsetof(r.TlpValid), 37}, {"comm", unsafe.Offsetof(r.Comm), 40},
		{"name", unsafe.Offsetof(r.Name), 56}, {"size", unsafe.Sizeof(r), 120},
	} {
		if c.got != c.want {
			t.Errorf("%s at %d, decoder reads %d", c.name, c.got, c.want)
		}
	}
}

func TestAShortOrUnknownRecordIsAnError(t *testing.T) {
	if _, err := Decode(make([]byte, 10)); err == nil {
		t.Error("a 10-byte record decoded")
	}
	if _, err := Decode(Record{Kind: 9}.Encode()); err == nil {
		t.Error("a record of kind 9 decoded")
	}
}

var boot = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

// replay decodes a record as the kernel would have written it.
func replay(t *testing.T, r Record, m Meta) event.Event {
	t.Helper()
	got, err := Decode(r.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if m.Boot.IsZero() {
		m.Boot = boot
	}
	return got.Event(m)
}

// An AER from the tracepoint carries the same kind, bus id and
// aer_severity as the kernel log's copy, so the catalog rates both alike.
func TestAnAERRecordIsRatedLikeTheKernelLogsCopy(t *testing.T) {
	for _, c := range []struct {
		sev  uint8
		line string // the kernel log's line for the same error (Linux 6.x aer_print_error)
	}{
		{2, "nvidia 0000:3b:00.0: PCIe Bus Error: severity=Correctable, type=Physical Layer, (Receiver ID)"},
		{0, "nvidia 0000:3b:00.0: PCIe Bus Error: severity=Uncorrectable (Non-Fatal), type=Transaction Layer, (Requester ID)"},
		{1, "nvidia 0000:3b:00.0: PCIe Bus Error: severity=Uncorrectable (Fatal), type=Transaction Layer, (Receiver ID)"},
	} {
		ev := replay(t, Record{Kind: kindAER, Name: "0000:3b:00.0", Status: 0x1, Severity: c.sev, Boottime: 90 * time.Second}, Meta{})
		k := kmsg.NewEvent(kmsg.Classify(c.line), c.line)
		if ev.Kind != event.KindAER || ev.Kind != k.Kind {
			t.Fatalf("kind %s, kernel log's %s", ev.Kind, k.Kind)
		}
		if ev.GPU.PCIBusID != k.GPU.PCIBusID || ev.Fields[xid.FieldAERSeverity] != k.Fields[xid.FieldAERSeverity] {
			t.Errorf("severity %d: bus %q aer_severity %q, kernel log's %q %q", c.sev, ev.GPU.PCIBusID, ev.Fields[xid.FieldAERSeverity],
				k.GPU.PCIBusID, k.Fields[xid.FieldAERSeverity])
		}
		if ev.Severity != k.Severity || ev.Mnemonic != k.Mnemonic || ev.Action != k.Action || ev.HealthDuration != k.HealthDuration {
			t.Errorf("severity %d rated %s/%s/%s/%s, kernel log's %s/%s/%s/%s", c.sev, ev.Severity, ev.Mnemonic, ev.Action, ev.HealthDuration,
				k.Severity, k.Mnemonic, k.Action, k.HealthDuration)
		}
		if ev.Fields[FieldAERStatus] != "0x00000001" || ev.Source != "ebpf" || !ev.Time.Equal(boot.Add(90*time.Second)) {
			t.Errorf("status %q source %q time %v", ev.Fields[FieldAERStatus], ev.Source, ev.Time)
		}
	}
}

// The same error reported again within the window is one event; a new
// status, a new device or a later report is another.
func TestARepeatedAERWithinTheWindowIsOneEvent(t *testing.T) {
	s := &Source{}
	m := Meta{Boot: boot}
	recs := []Record{
		{Kind: kindAER, Name: "0000:3b:00.0", Status: 0x1, Severity: 2, Boottime: 10 * time.Second},
		{Kind: kindAER, Name: "0000:3b:00.0", Status: 0x1, Severity: 2, Boottime: 10*time.Second + 200*time.Microsecond},
		{Kind: kindAER, Name: "0000:3b:00.0", Status: 0x40, Severity: 2, Boottime: 10*time.Second + 300*time.Microsecond},
		{Kind: kindAER, Name: "0000:86:00.0", Status: 0x1, Severity: 2, Boottime: 10*time.Second + 400*time.Microsecond},
		{Kind: kindAER, Name: "0000:3b:00.0", Status: 0x1, Severity: 2, Boottime: 12 * time.Second},
	}
	var evs []event.Event
	for _, r := range recs {
		evs = s.events(item{r: r}, m, evs)
	}
	if len(evs) != 4 || s.dedup.suppressed != 1 {
		t.Fatalf("%d events, %d suppressed; want 4 and 1", len(evs), s.dedup.suppressed)
	}
}

// A storm over many devices keeps the cache at its bound.
func TestTheAERCacheIsBounded(t *testing.T) {
	var d aerDedup
	for i := range 10 * maxAERKeys {
		d.fresh(aerKey{dev: strings.Repeat("x", i%97), status: uint32(i)}, boot.Add(time.Duration(i)*time.Microsecond))
	}
	if len(d.last) > maxAERKeys {
		t.Fatalf("%d keys cached, bound %d", len(d.last), maxAERKeys)
	}
}

func TestModuleRecordsAreDriverLoadAndUnload(t *testing.T) {
	load := replay(t, Record{Kind: kindModuleLoad, Name: "nvidia_uvm"}, Meta{})
	if load.Kind != event.KindDriverLoaded || load.Fields[FieldModule] != "nvidia_uvm" || load.Mnemonic != "DRIVER_LOADED" || load.HealthDuration != event.DurationNone {
		t.Errorf("load: %+v", load)
	}
	free := replay(t, Record{Kind: kindModuleFree, Name: "nvidia"}, Meta{})
	if free.Kind != KindDriverUnloaded || free.Fields[FieldModule] != "nvidia" || free.HealthDuration != event.DurationNone {
		t.Errorf("free: %+v", free)
	}
}

// A process name is the victim's own choice: it stays data, quoted in Raw.
func TestAnOOMVictimsNameIsInertData(t *testing.T) {
	name := "NVRM: Xid (PCI"
	ev := replay(t, Record{Kind: kindOOM, PID: 4242, TID: 4243, Comm: name, CgroupID: 77, Name: "job_42"}, Meta{
		Memcg:      func(id uint64) string { return map[uint64]string{77: "/slurm/job_42"}[id] },
		GPUProcess: func(pid int) (bool, bool) { return pid == 4242, true },
	})
	if ev.Kind != event.KindOOMKill || ev.Fields[kmsg.FieldPID] != "4242" || ev.Fields[kmsg.FieldProcessName] != name ||
		ev.Fields[FieldMemcg] != "/slurm/job_42" || ev.Fields[FieldMemcgID] != "77" || ev.Fields[FieldGPUProcess] != "true" {
		t.Errorf("fields %v", ev.Fields)
	}
	if ev.Code != 0 || ev.GPU.PCIBusID != "" || !strings.Contains(ev.Raw, `comm="NVRM: Xid (PCI"`) {
		t.Errorf("code %d bus %q raw %q", ev.Code, ev.GPU.PCIBusID, ev.Raw)
	}
	if ev.Action != event.ActionRestartApplication {
		t.Errorf("a killed GPU process: action %q", ev.Action)
	}
	// A cgroup removed before the record is read: its leaf name; no GPU
	// process list: unknown.
	ev = replay(t, Record{Kind: kindOOM, PID: 7, Comm: "python3", CgroupID: 78, Name: "job_43"}, Meta{Memcg: func(uint64) string { return "" }})
	if ev.Fields[FieldMemcg] != "job_43" || ev.Fields[FieldGPUProcess] != "unknown" {
		t.Errorf("fields %v", ev.Fields)
	}
}

func TestTheGPUProcessSetMarksVictims(t *testing.T) {
	s := &Source{}
	if _, known := s.gpuProcess(1); known {
		t.Error("known before any set was given")
	}
	s.SetGPUProcesses([]int{10, 11})
	if open, known := s.gpuProcess(11); !open || !known {
		t.Error("pid 11 not a GPU process")
	}
	if open, _ := s.gpuProcess(12); open {
		t.Error("pid 12 a GPU process")
	}
}
