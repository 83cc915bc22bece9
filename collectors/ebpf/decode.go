package ebpf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
)

// Record kinds, as bpf/gpuwarden.bpf.c numbers them (enum record_kind).
const (
	kindOOM        = 1
	kindAER        = 2
	kindModuleLoad = 3
	kindModuleFree = 4
	kindMax        = 5
)

// KindDriverUnloaded is an NVIDIA kernel module being removed
// (module/module_free); its load is event.KindDriverLoaded.
const KindDriverUnloaded event.Kind = "driver_unloaded"

// Fields of this source's events beside kmsg's (pid, process_name) and
// xid's (aer_severity).
const (
	FieldTID        = "tid"         // oom: the killed task's own id
	FieldUID        = "uid"         // oom: the victim's uid
	FieldMemcgID    = "memcg_id"    // oom: the memory cgroup's id (its directory's inode)
	FieldMemcg      = "memcg"       // oom: its path in the memory hierarchy, or its leaf name
	FieldGPUProcess = "gpu_process" // oom: "true", "false", or "unknown" when no GPU process list was given
	FieldAERStatus  = "aer_status"  // aer: the error status register, 0x%08x
	FieldModule     = "module"      // driver_loaded, driver_unloaded: the module's name
)

// Record is one ring-buffer record, decoded. Comm and Name are as the kernel
// gave them: any user chooses a process's comm, so it is inert data, kept
// in Fields and never used as a label.
type Record struct {
	Kind     uint32
	PID      uint32 // oom: the victim's thread-group id
	TID      uint32
	Status   uint32 // aer
	Boottime time.Duration
	CgroupID uint64 // oom: memory cgroup id
	UID      uint32
	Severity uint8 // aer: 0 non-fatal, 1 fatal, 2 correctable
	TLPValid bool
	Comm     string
	Name     string // oom: memcg leaf name; aer: device; module: name
}

// recordSize is the record's size in the ring buffer: the generated
// binding's, which is the C struct's.
const recordSize = int(unsafe.Sizeof(gpuwardenGwRecord{}))

// RecordSize is the size of one record, in the ring buffer and in a trace.
const RecordSize = recordSize

// Layout numbers the record's layout (struct gw_record in
// bpf/gpuwarden.bpf.c) as traces keep it: a trace says which layout its
// records have, and one of another layout is refused, not misread. Change
// the struct, change this.
const Layout = 1

// Decode reads one ring-buffer record (host byte order, as the kernel wrote
// it). A short record is an error: the object and this decoder disagree.
func Decode(b []byte) (Record, error) { return decode(b, binary.NativeEndian) }

// DecodeTrace reads one record as a trace keeps it (little-endian, as on
// x86-64 and arm64): the same decoder as the ring buffer's.
func DecodeTrace(b []byte) (Record, error) { return decode(b, binary.LittleEndian) }

func decode(b []byte, e binary.ByteOrder) (Record, error) {
	if len(b) < recordSize {
		return Record{}, fmt.Errorf("ebpf record of %d bytes, want %d", len(b), recordSize)
	}
	r := Record{
		Kind:     e.Uint32(b[0:]),
		PID:      e.Uint32(b[4:]),
		TID:      e.Uint32(b[8:]),
		Status:   e.Uint32(b[12:]),
		Boottime: time.Duration(e.Uint64(b[16:])),
		CgroupID: e.Uint64(b[24:]),
		UID:      e.Uint32(b[32:]),
		Severity: b[36],
		TLPValid: b[37] != 0,
		Comm:     cString(b[40:56]),
		Name:     cString(b[56:120]),
	}
	if r.Kind == 0 || r.Kind >= kindMax {
		return r, fmt.Errorf("ebpf record of unknown kind %d", r.Kind)
	}
	return r, nil
}

// Encode is Decode's inverse, for replayed records in tests.
func (r Record) Encode() []byte { return r.encode(binary.NativeEndian) }

// EncodeTrace is DecodeTrace's inverse: the record as a trace keeps it.
func (r Record) EncodeTrace() []byte { return r.encode(binary.LittleEndian) }

func (r Record) encode(e binary.ByteOrder) []byte {
	b := make([]byte, recordSize)
	e.PutUint32(b[0:], r.Kind)
	e.PutUint32(b[4:], r.PID)
	e.PutUint32(b[8:], r.TID)
	e.PutUint32(b[12:], r.Status)
	e.PutUint64(b[16:], uint64(r.Boottime))
	e.PutUint64(b[24:], r.CgroupID)
	e.PutUint32(b[32:], r.UID)
	b[36] = r.Severity
	if r.TLPValid {
		b[37] = 1
	}
	copy(b[40:55], r.Comm)
	copy(b[56:119], r.Name)
	return b
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// aerSeverity is the kmsg classifier's word for the AER driver's severity
// (include/linux/aer.h: AER_NONFATAL 0, AER_FATAL 1, AER_CORRECTABLE 2), so
// the catalog's aer rows rate both copies alike.
func aerSeverity(s uint8) string {
	switch s {
	case 0:
		return "uncorrected"
	case 1:
		return "fatal"
	case 2:
		return "corrected"
	}
	return ""
}

// Meta is what turns a record into an event besides the record: the wall
// time of boot (CLOCK_BOOTTIME zero), the boot id, and what the source
// knows about the victim of an OOM kill.
type Meta struct {
	Boot   time.Time
	BootID string
	// Memcg is the path of the memory cgroup with this id ("" if unknown).
	Memcg func(id uint64) string
	// GPUProcess says whether pid had a GPU open; known false when the
	// source was given no list of GPU processes.
	GPUProcess func(pid int) (open, known bool)
}

// Event is the record as an event.Event, rated by the catalog where it has
// a row (aer, driver_loaded) and by this source otherwise.
func (r Record) Event(m Meta) event.Event {
	ev := event.Event{Time: m.Boot.Add(r.Boottime), BootID: m.BootID, Source: "ebpf", GPU: event.GPURef{Index: -1}}
	switch r.Kind {
	case kindOOM:
		ev.Kind = event.KindOOMKill
		memcg := r.Name
		if m.Memcg != nil && r.CgroupID != 0 {
			if p := m.Memcg(r.CgroupID); p != "" {
				memcg = p
			}
		}
		gpuProc := "unknown"
		if m.GPUProcess != nil {
			if open, known := m.GPUProcess(int(r.PID)); known {
				gpuProc = strconv.FormatBool(open)
			}
		}
		ev.Fields = map[string]string{
			kmsg.FieldPID:         strconv.FormatUint(uint64(r.PID), 10),
			FieldTID:              strconv.FormatUint(uint64(r.TID), 10),
			FieldUID:              strconv.FormatUint(uint64(r.UID), 10),
			kmsg.FieldProcessName: r.Comm,
			FieldMemcgID:          strconv.FormatUint(r.CgroupID, 10),
			FieldMemcg:            memcg,
			FieldGPUProcess:       gpuProc,
		}
		// The process name is quoted: it is the victim's to choose.
		ev.Raw = fmt.Sprintf("oom/mark_victim pid=%d comm=%q memcg=%q", r.PID, r.Comm, memcg)
		ev.Mnemonic = "OOM_KILL"
		ev.Severity, ev.Action, ev.HealthDuration = event.Warning, event.ActionNone, event.DurationNone
		ev.Explanation = "The kernel's OOM killer killed this process: its memory cgroup reached its limit, or the host ran out of memory. A GPU job killed this way leaves its GPU to be cleaned up by the driver."
		if gpuProc == "true" {
			ev.Action = event.ActionRestartApplication
		}
	case kindAER:
		dev := strings.ToLower(r.Name)
		sev := aerSeverity(r.Severity)
		ev.Kind = event.KindAER
		ev.GPU.PCIBusID = dev
		ev.Fields = map[string]string{FieldAERStatus: fmt.Sprintf("0x%08x", r.Status)}
		if sev != "" {
			ev.Fields[xid.FieldAERSeverity] = sev
		}
		ev.Raw = fmt.Sprintf("ras/aer_event dev=%q status=0x%08x severity=%d tlp_header_valid=%t", r.Name, r.Status, r.Severity, r.TLPValid)
		xid.Enrich(&ev)
	case kindModuleLoad, kindModuleFree:
		ev.Fields = map[string]string{FieldModule: r.Name}
		if r.Kind == kindModuleLoad {
			ev.Kind = event.KindDriverLoaded
			ev.Raw = fmt.Sprintf("module/module_load name=%q", r.Name)
			xid.Enrich(&ev)
		} else {
			ev.Kind = KindDriverUnloaded
			ev.Raw = fmt.Sprintf("module/module_free name=%q", r.Name)
			ev.Mnemonic = "DRIVER_UNLOADED"
			ev.Severity, ev.Action, ev.HealthDuration = event.OK, event.ActionNone, event.DurationNone
			ev.Explanation = "An NVIDIA kernel module was removed; its GPUs cannot be used until it is loaded again."
		}
	}
	return ev
}
