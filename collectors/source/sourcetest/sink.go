// Package sourcetest is a source.Sink for the sources' tests: it keeps
// what a source tells the agent, and shows it the GPUs and driver a test
// gives it.
package sourcetest

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// Sink records what a source tells the agent. Safe for the source's
// goroutines and the test's at once.
type Sink struct {
	mu      sync.Mutex
	driver  string
	gpus    []source.GPU
	events  []event.Event
	stats   []source.Metric
	finding *source.Finding
	// statsCalls counts Stats calls, rounds Ran calls.
	statsCalls, rounds int
}

// New is a sink whose GPU view answers driver and gpus (and, at once, that
// the GPU collector's first round is done).
func New(driver string, gpus ...source.GPU) *Sink {
	return &Sink{driver: driver, gpus: gpus}
}

// Snapshot is what a source has told the sink so far: the fresh events in
// order, the latest Stats and Report, and how many Stats and Ran calls.
type Snapshot struct {
	Events     []event.Event
	Stats      []source.Metric
	Finding    *source.Finding
	StatsCalls int
	Rounds     int
}

// Snapshot copies what the source has told the sink so far.
func (s *Sink) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{Events: append([]event.Event(nil), s.events...), Stats: append([]source.Metric(nil), s.stats...),
		Finding: s.finding, StatsCalls: s.statsCalls, Rounds: s.rounds}
}

// Value is the value of the latest Stats' series name with exactly these
// labels, and whether there is one.
func (s *Sink) Value(name string, labels ...string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.stats {
		if m.Name == name && strings.Join(m.Labels, "\x00") == strings.Join(labels, "\x00") {
			return m.Value, true
		}
	}
	return 0, false
}

// UpdateGPUs changes the GPUs the source is shown, under the sink's lock.
func (s *Sink) UpdateGPUs(f func(gpus []source.GPU)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.gpus)
}

// Events keeps the fresh events; the restored ones bring back health only,
// which the tests do not look at.
func (s *Sink) Events(fresh, _ []event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, fresh...)
}

func (s *Sink) Ran(time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rounds++
}

func (s *Sink) Report(f source.Finding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finding = &f
}

func (s *Sink) Stats(m []source.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats, s.statsCalls = m, s.statsCalls+1
}

func (s *Sink) Checkpoint() []byte   { return nil }
func (s *Sink) Restore([]byte) error { return nil }
func (s *Sink) GPUs() source.GPUView { return view{s} }

type view struct{ s *Sink }

func (view) WaitFirstRound(context.Context, time.Duration) {}
func (v view) DriverVersion() (string, error)              { return v.s.driver, nil }
func (v view) GPUs() []source.GPU {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	return append([]source.GPU(nil), v.s.gpus...)
}

var _ source.Sink = (*Sink)(nil)
