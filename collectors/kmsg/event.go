package kmsg

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
)

// Keys of event.Event.Fields that kernel-log events may carry.
const (
	FieldPID           = "pid"
	FieldProcessName   = "process_name"
	FieldUUID          = "uuid"
	FieldGPUInstance   = "gpu_instance"
	FieldSwitch        = "switch"
	FieldLink          = "link"
	FieldDriverVersion = "driver_version"
	FieldClientVersion = "client_version"
	FieldSubsystem     = "subsystem"
	FieldDevice        = "device"
	FieldFacility      = "facility"
)

// NewEvent builds the Event for a classified message and fills its advice
// from the XID catalog. raw is kept verbatim (it is data, never a command or
// a label). The GPU index is -1: only the agent knows the bus-id-to-index map.
func NewEvent(c Class, raw string) event.Event {
	ev := event.Event{
		Source: "kmsg",
		Kind:   c.Kind,
		GPU:    event.GPURef{Index: -1, PCIBusID: c.PCIBusID, UUID: c.UUID},
		Raw:    raw,
	}
	if c.HasCode {
		ev.Code = c.Code
	}
	set := func(k, v string) {
		if v == "" {
			return
		}
		if ev.Fields == nil {
			ev.Fields = make(map[string]string, 4)
		}
		ev.Fields[k] = v
	}
	if c.HasPID {
		set(FieldPID, strconv.Itoa(c.PID))
	}
	set(FieldProcessName, c.ProcessName)
	set(FieldUUID, c.UUID)
	set(FieldGPUInstance, c.GPUInstance)
	set(FieldSwitch, c.Switch)
	if c.HasLink {
		set(FieldLink, strconv.Itoa(c.Link))
	}
	set(FieldDriverVersion, c.DriverVersion)
	set(FieldClientVersion, c.ClientVersion)
	switch c.Kind {
	case event.KindAER:
		set(xid.FieldAERSeverity, c.Severity)
	case event.KindSXid:
		set(xid.FieldSXidSeverity, c.Severity)
	case event.KindMCE:
		set(xid.FieldMCESeverity, c.Severity)
	}
	xid.Enrich(&ev)
	return ev
}

// RecordEvent classifies a record and builds its Event. bootTime is the wall
// time of boot (the agent derives it once from its clock and the uptime), so
// the event's time is bootTime plus the record's monotonic stamp.
//
// Events outlive their batch, so an event of any kind but unrelated gets its
// own copy of the text rather than pinning the reader's memory.
func RecordEvent(rec Record, bootID string, bootTime time.Time) event.Event {
	msg := rec.Message
	c := Classify(msg)
	if c.Kind != event.KindUnrelated {
		msg = strings.Clone(msg)
		c = Classify(msg)
	}
	ev := NewEvent(c, msg)
	ev.Time = bootTime.Add(rec.Monotonic)
	ev.BootID = bootID
	ev.Seq = rec.Seq
	if rec.Subsystem != "" || rec.Device != "" || !rec.FromKernel() {
		if ev.Fields == nil {
			ev.Fields = make(map[string]string, 3)
		}
		// Copies: a Reader's record strings are its batch's memory, parsed
		// into again once the batch is released.
		if rec.Subsystem != "" {
			ev.Fields[FieldSubsystem] = strings.Clone(rec.Subsystem)
		}
		if rec.Device != "" {
			ev.Fields[FieldDevice] = strings.Clone(rec.Device)
		}
		if !rec.FromKernel() {
			// Written to /dev/kmsg by a process, not by the kernel.
			ev.Fields[FieldFacility] = strconv.Itoa(int(rec.Facility))
		}
	}
	return ev
}

// MaxLabelBytes bounds a label value made from kernel-log text.
const MaxLabelBytes = 64

// LabelValue makes text from the kernel log safe to use as a Prometheus
// label value: valid UTF-8, no control characters (replaced by '?'), at most
// MaxLabelBytes bytes (cut on a character boundary, marked with "…").
//
// Use it only for values from a small set (a kind, a bus id, a mnemonic).
// Process names and free text must not become labels at all: anyone who can
// start a process chooses its name, and every new name is a new series.
func LabelValue(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean && len(s) <= MaxLabelBytes {
		return s
	}
	const ellipsis = "…"
	out := make([]byte, 0, MaxLabelBytes+utf8.UTFMax)
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				r = '?' // invalid UTF-8
			}
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		out = utf8.AppendRune(out, r)
		if len(out) > MaxLabelBytes {
			break
		}
	}
	if len(out) > MaxLabelBytes {
		cut := MaxLabelBytes - len(ellipsis)
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = append(out[:cut], ellipsis...)
	}
	return string(out)
}
