// Package event holds the shapes every source and reader shares: the Event
// (one thing that happened, from any source) and the Level of health that the
// agent, `gpuwarden check` and the alert rules speak.
//
// It has no dependencies of its own so that collectors, dkms, the agent and
// remediation can all import it without importing each other.
package event

import (
	"encoding/json"
	"fmt"
	"time"
)

// Level is a health level. The order matters: a higher level is worse, except
// that Unknown sorts above Critical only for exit codes (Nagios convention),
// so use Worse to combine levels.
type Level int

const (
	OK Level = iota
	Warning
	Critical
	Unknown
)

var levelNames = [...]string{"ok", "warning", "critical", "unknown"}

func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return "unknown"
	}
	return levelNames[l]
}

// ExitCode is the Nagios plugin exit code for the level: 0, 1, 2 or 3.
func (l Level) ExitCode() int { return int(l) }

// MarshalJSON writes the level as its name.
func (l Level) MarshalJSON() ([]byte, error) { return json.Marshal(l.String()) }

// UnmarshalJSON reads a level written by MarshalJSON.
func (l *Level) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	p, err := ParseLevel(s)
	if err != nil {
		return err
	}
	*l = p
	return nil
}

// ParseLevel is the inverse of Level.String.
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if n == s {
			return Level(i), nil
		}
	}
	return Unknown, fmt.Errorf("unknown health level %q (want ok, warning, critical or unknown)", s)
}

// Worse returns the more severe of two levels. Critical outranks Unknown: a
// host with one critical finding and one check that could not run is critical.
func Worse(a, b Level) Level {
	rank := func(l Level) int {
		switch l {
		case OK:
			return 0
		case Unknown:
			return 1
		case Warning:
			return 2
		default:
			return 3
		}
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// Kind names what an Event is. Kernel-log kinds are the classifier's output
// (see collectors/kmsg); other sources add their own.
type Kind string

const (
	KindXid          Kind = "xid"
	KindSXid         Kind = "sxid"
	KindGPUIdentity  Kind = "gpu_identity"
	KindFallenOffBus Kind = "fallen_off_bus"
	KindRmInitFailed Kind = "rminit_failed"
	KindAPIMismatch  Kind = "api_mismatch"
	KindDriverLoaded Kind = "driver_loaded"
	KindAER          Kind = "aer"
	KindMCE          Kind = "mce"
	KindOtherNVRM    Kind = "other_nvrm"
	KindUnrelated    Kind = "unrelated"

	// Kinds from other sources.
	KindGPULost Kind = "gpu_lost" // NVML answered GPU_IS_LOST
	KindOOMKill Kind = "oom_kill" // eBPF mark_victim
	KindFinding Kind = "finding"  // a dkms/driver consistency finding changed
	// KindStateCorrupt: a state file (cursor, inventory) was corrupt or
	// implausible and was moved aside; what it held is rebuilt.
	KindStateCorrupt Kind = "state_corrupt"
)

// GPURef names the GPU an event concerns. Index is -1 when the bus id is not
// one the GPU collector knows (the event is kept all the same).
type GPURef struct {
	Index    int    `json:"index"`
	UUID     string `json:"uuid,omitempty"`
	PCIBusID string `json:"pci_bus_id,omitempty"`
}

// Event is one thing that happened, from any source.
type Event struct {
	Time   time.Time         `json:"time,omitzero"`
	BootID string            `json:"boot_id,omitempty"`
	Seq    uint64            `json:"seq,omitempty"` // kernel log sequence number, when from /dev/kmsg
	Source string            `json:"source"`        // kmsg, nvml, replay, ebpf, dkms
	Kind   Kind              `json:"kind"`
	GPU    GPURef            `json:"gpu"`
	Code   int               `json:"code,omitempty"` // Xid or SXid number
	Fields map[string]string `json:"fields,omitempty"`
	Raw    string            `json:"raw"`

	// From the catalog.
	Severity    Level  `json:"severity"`
	Mnemonic    string `json:"mnemonic,omitempty"`
	Explanation string `json:"explanation,omitempty"`
	Action      Action `json:"action,omitempty"` // from the vocabulary
	Fix         string `json:"fix,omitempty"`    // free-text advice, e.g. the command a dkms finding names

	// Policy from the catalog: how long the event weighs on health (at its
	// Severity), and whether it concerns the GPU its bus id names rather
	// than the host, the platform or an NVSwitch.
	HealthDuration HealthDuration `json:"health_duration,omitempty"`
	PointsAtGPU    bool           `json:"points_at_gpu,omitempty"`

	// Restored is true for an event applied before the agent restarted and
	// read again (a kernel-log record below the saved cursor): it is listed
	// and weighs on health, but is not counted or passed on again.
	Restored bool `json:"restored,omitempty"`
	// Backlog is true for an event from before the agent's first start in
	// this boot (read from the ring without a cursor): counted and
	// weighing on health, but not passed on to subscribers as news.
	Backlog bool `json:"backlog,omitempty"`
}

// Action is what an operator should do, from a fixed vocabulary so that
// remediation rules can match on it. Free-text advice (a command to run, a
// file to fix) is not an Action; it goes in a Fix field beside it.
type Action string

const (
	ActionNone               Action = "none"
	ActionRestartApplication Action = "restart the application"
	ActionResetGPU           Action = "reset the GPU"
	ActionReboot             Action = "reboot"
	ActionDrainAndReset      Action = "drain and reset"
	ActionHardwareInspection Action = "hardware inspection"
	ActionContactSupport     Action = "contact support"
)

// Actions is the vocabulary, from the least to the most an operator must do.
var Actions = []Action{ActionNone, ActionRestartApplication, ActionResetGPU, ActionReboot,
	ActionDrainAndReset, ActionHardwareInspection, ActionContactSupport}

// Rank orders actions by how much they ask of an operator (none and the
// empty action are 0), so that of several findings the strongest action can
// be recommended. An action outside the vocabulary ranks 0: it is not one.
func (a Action) Rank() int {
	for i, v := range Actions {
		if v == a {
			return i
		}
	}
	return 0
}

// Valid reports whether a is in the vocabulary.
func (a Action) Valid() bool {
	for _, v := range Actions {
		if v == a {
			return true
		}
	}
	return false
}

// HealthDuration says how long an event weighs on its GPU's health.
type HealthDuration string

const (
	// DurationUnset: no catalog has rated the event (not enriched).
	DurationUnset HealthDuration = ""
	// DurationNone: the event does not affect health.
	DurationNone HealthDuration = "none"
	// DurationWindow: the event counts for the agent's --health.event-window.
	DurationWindow HealthDuration = "window"
	// DurationBoot: the event keeps health down for the rest of the boot.
	DurationBoot HealthDuration = "boot"
)

// ParseHealthDuration reads none, window or boot.
func ParseHealthDuration(s string) (HealthDuration, error) {
	switch d := HealthDuration(s); d {
	case DurationNone, DurationWindow, DurationBoot:
		return d, nil
	}
	return DurationUnset, fmt.Errorf("health duration %q, want none, window or boot", s)
}

// StateCorrupt is the event for a state file that was corrupt or
// implausible and was moved aside: a warning on the host for the event
// window, so that /v1/health and gpuwarden_events_total show it, not only
// the log.
func StateCorrupt(at time.Time, source, file, movedTo string, err error) Event {
	return Event{Time: at, Source: source, Kind: KindStateCorrupt, GPU: GPURef{Index: -1},
		Fields: map[string]string{"file": file, "moved_to": movedTo}, Raw: err.Error(),
		Severity: Warning, Mnemonic: "STATE_FILE_MOVED_ASIDE", Action: ActionNone,
		Explanation:    "A state file of gpuwarden was unreadable or implausible; it was moved aside and what it held is being rebuilt.",
		HealthDuration: DurationWindow}
}
