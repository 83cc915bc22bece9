// Package source is the shape every source of the agent has: the kernel-log
// watcher, the replayed kernel feed, the DKMS checks, and the sources to come
// (eBPF, job attribution). A Source runs until its context ends and tells a
// Sink what it saw; the agent implements the Sink and owns everything around
// it: the source's up state, durations and errors, the backoff after a
// failure, logging a cause once, and which sources run at all.
//
// The package imports neither the agent nor any source, so that every source
// can import it and the agent can run them all.
package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

// Source is one thing the agent runs beside the GPU sampler. Run blocks
// until ctx ends and then returns nil. An error means the source cannot
// work now (no device, no permission): the agent reports it down with the
// error (and the fix, see WithFix), logs the cause once, and runs it again
// on a backoff. A source never stops the agent.
type Source interface {
	Run(ctx context.Context, sink Sink) error
}

// Sink is what a source tells the agent. Its methods are safe to call from
// any goroutine and never block on a reader.
type Sink interface {
	// Events applies a batch in one step: fresh events are new; restored
	// ones were applied before a restart (re-read from a durable log) and
	// only bring back health, never counts or notifications.
	Events(fresh, restored []event.Event)
	// Ran marks the source up after a round of work that took took.
	Ran(took time.Duration)
	// Report replaces the source's host-level finding (its health
	// contribution): Level ok withdraws it.
	Report(f Finding)
	// Stats replaces the source's own series (its counters and gauges),
	// rendered in /metrics from the agent's snapshot.
	Stats(m []Metric)
	// Checkpoint is the agent's state that a source with a durable
	// position (a cursor) saves with that position, so that position and
	// counts commit together; nil when the agent keeps none. Restore gives
	// it back after a restart, before the first Events.
	Checkpoint() []byte
	Restore(b []byte) error
	// GPUs is the agent's view of the GPU collector.
	GPUs() GPUView
}

// GPUView is what a source may know of the GPU collector.
type GPUView interface {
	// WaitFirstRound returns once the GPU collector has reported a round
	// (with GPUs or the reason it has none), or after limit.
	WaitFirstRound(ctx context.Context, limit time.Duration)
	// DriverVersion is the driver version NVML reported last, or an error
	// saying why there is none.
	DriverVersion() (string, error)
	// GPUs are the GPUs of the GPU collector's last round, with the labels
	// the agent puts on their series; none before its first round.
	GPUs() []GPU
}

// GPU is one GPU as the agent labels its series.
type GPU struct {
	Index    int
	UUID     string
	PCIBusID string // dcgm-exporter's spelling: 00000000:18:00.0
	// SampleTime is when the GPU's newest sample was taken.
	SampleTime time.Time
	// Labels are dcgm-exporter's labels of the GPU's series, as name, value
	// pairs: gpu, UUID, pci_bus_id, device, modelName, Hostname,
	// DCGM_FI_DRIVER_VERSION. A source appends its own after them.
	Labels []string
	// PIDs are the processes using the GPU, as of its newest sample.
	PIDs []int
}

// Finding is a source's health contribution for the host.
type Finding struct {
	Level   event.Level
	Reasons []string
	Action  event.Action
	Fix     string // free text: a command to run, a file to edit
}

// Metric is one series of a source's own.
type Metric struct {
	Name    string
	Help    string
	Counter bool     // a counter; a gauge otherwise
	Labels  []string // name, value, name, value...
	Value   float64
}

// WithFix attaches the fix an operator should apply to err: the agent
// shows it in /v1/health beside the error.
func WithFix(err error, fix string) error {
	if err == nil || fix == "" {
		return err
	}
	return &fixError{err: err, fix: fix}
}

// Absent marks err as "what this source reads is not on this host" (an
// optional library that is not installed): the source is reported down,
// but the host's health does not turn unknown for it, and it is tried
// again only rarely. A source on by default for hosts that may lack its
// backend uses it.
func Absent(err error) error {
	if err == nil {
		return nil
	}
	return &absentError{err}
}

// IsAbsent says whether err was marked with Absent.
func IsAbsent(err error) bool {
	var a *absentError
	return errors.As(err, &a)
}

type absentError struct{ err error }

func (e *absentError) Error() string { return e.err.Error() }
func (e *absentError) Unwrap() error { return e.err }

// FixOf is the fix attached to err with WithFix, or "".
func FixOf(err error) string {
	var f *fixError
	if errors.As(err, &f) {
		return f.fix
	}
	return ""
}

type fixError struct {
	err error
	fix string
}

func (e *fixError) Error() string { return e.err.Error() }
func (e *fixError) Unwrap() error { return e.err }

// Env is what a source's factory gets: the host's paths, the state
// directory, its settings and a logger.
type Env struct {
	Paths    hostfs.Paths
	StateDir string
	// Replay is true when the GPUs are a replayed trace: a host source
	// runs only when named, and must not act on the host's state as if
	// it were the trace's node.
	Replay bool
	// Setting returns the value of a configuration key ("collector.kmsg.path").
	Setting func(key string) any
	Log     *slog.Logger
}

// String is the setting key as a string ("" when unset or not a string).
func (e Env) String(key string) string {
	s, _ := e.get(key).(string)
	return s
}

// Duration is the setting key as a duration (0 when unset).
func (e Env) Duration(key string) time.Duration {
	d, _ := e.get(key).(time.Duration)
	return d
}

func (e Env) get(key string) any {
	if e.Setting == nil {
		return nil
	}
	return e.Setting(key)
}

// Registration describes a source to the agent: its name (the flag is
// --collector.<name>, --no-collector.<name> turns it off), what it does,
// whether it runs by default, and how to make it.
type Registration struct {
	Name string
	Help string
	// Default is whether the source runs when not named.
	Default bool
	// Host marks a source that reads this host (its kernel log, its
	// modules): in a replay it runs only when named, since the replayed
	// node is not this host.
	Host bool
	New  func(Env) (Source, error)
}

var (
	mu       sync.Mutex
	registry = map[string]Registration{}
)

// Register adds a source; a name registered twice panics (a build defect).
func Register(r Registration) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[r.Name]; dup || r.Name == "" || r.New == nil {
		panic(fmt.Sprintf("source: bad or duplicate registration %q", r.Name))
	}
	registry[r.Name] = r
}

// Registered returns every registration, by name.
func Registered() []Registration {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Registration, 0, len(registry))
	for _, r := range registry {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
