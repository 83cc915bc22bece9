// Package profiling is what the sources that can read the GPUs' profiling
// counters (DCGM_FI_PROF_*) share: who owns the counters now, and whether an
// operator has paused profiling so that a profiler (Nsight, CUPTI) can have
// the GPUs.
//
// The choice rule, when both DCGM and NVML's GPM could serve profiling:
// DCGM wins when its hostengine is reachable and its profiling module
// answers, because the counters are a system-wide resource and a running
// hostengine already owns them (a second reader through GPM would collide
// with it on pre-Hopper GPUs and double every series on Hopper). The DCGM
// source claims ownership as "dcgm" before it watches a profiling field and
// releases it when it stops; the GPM source reads Owner() before each round
// and does not sample profiling while the owner is another source. Claim is
// first come, first served, so a GPM source that claims "gpm" keeps the
// counters until it releases them; the DCGM source then serves no profiling
// series. Either way one source writes a DCGM_FI_PROF_* family, never two.
package profiling

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// The owners' names.
const (
	OwnerDCGM = "dcgm"
	OwnerGPM  = "gpm"
)

// MaxPause is the longest pause an operator may ask for at once; a longer
// one is refused rather than shortened, so nobody believes a week was set.
const MaxPause = 24 * time.Hour

// Registry holds the owner and the pause. The package's functions use
// Default; tests make their own.
type Registry struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	owner   string
	until   time.Time // paused until; zero: not paused
	by      string
	changed chan struct{} // closed and replaced on every change
}

// Default is the agent's registry.
var Default = &Registry{}

// Claim makes owner the owner of the profiling counters when nobody owns
// them (or owner already does) and says whether owner owns them now.
func Claim(owner string) bool { return Default.Claim(owner) }

// Owner is the owner of the profiling counters, "" when nobody owns them.
func Owner() string { return Default.Owner() }

// Release gives the counters up, if owner owns them.
func Release(owner string) { Default.Release(owner) }

// Pause pauses profiling until the time until; who is recorded for status.
func Pause(until time.Time, who string) { Default.Pause(until, who) }

// Resume ends a pause.
func Resume() { Default.Resume() }

// Paused says whether profiling is paused now and until when.
func Paused() (bool, time.Time) { return Default.Paused() }

// Claim: see the package function.
func (r *Registry) Claim(owner string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if owner == "" {
		return false
	}
	if r.owner == "" {
		r.owner = owner
		r.notify()
	}
	return r.owner == owner
}

// Owner: see the package function.
func (r *Registry) Owner() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owner
}

// Release: see the package function.
func (r *Registry) Release(owner string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owner == owner && owner != "" {
		r.owner = ""
		r.notify()
	}
}

// Pause: see the package function. A time in the past resumes.
func (r *Registry) Pause(until time.Time, who string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.until, r.by = until, who
	r.notify()
}

// Resume: see the package function.
func (r *Registry) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.until, r.by = time.Time{}, ""
	r.notify()
}

// Paused: see the package function.
func (r *Registry) Paused() (bool, time.Time) {
	st := r.Status()
	return st.Paused, st.Until
}

// Status is the registry as `gpuwarden profiling status` shows it.
type Status struct {
	Owner  string    `json:"owner"`
	Paused bool      `json:"paused"`
	Until  time.Time `json:"until,omitzero"`
	By     string    `json:"paused_by,omitempty"`
}

// Status is the owner and the pause now; a pause that has run out is none.
func (r *Registry) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{Owner: r.owner}
	if !r.until.IsZero() && r.now().Before(r.until) {
		st.Paused, st.Until, st.By = true, r.until, r.by
	}
	return st
}

// Changed is closed at the next change of owner or pause.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

func (r *Registry) notify() {
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

func (r *Registry) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// PausedMetricName is the gauge that says whether profiling is paused.
const PausedMetricName = "gpuwarden_profiling_paused"

// Metrics are the registry's own series: gpuwarden_profiling_paused.
func (r *Registry) Metrics() []source.Metric {
	st := r.Status()
	v := 0.0
	if st.Paused {
		v = 1
	}
	return []source.Metric{{Name: PausedMetricName, Value: v,
		Help: "Whether an operator paused profiling (gpuwarden profiling pause): 1 while the profiling counters are released."}}
}

// Publish calls publish with the registry's series now, at every change and
// when a pause runs out, until ctx ends.
func (r *Registry) Publish(ctx context.Context, publish func([]source.Metric)) {
	for {
		changed := r.Changed()
		publish(r.Metrics())
		var t *time.Timer
		var expiry <-chan time.Time
		if st := r.Status(); st.Paused {
			t = time.NewTimer(st.Until.Sub(r.now()))
			expiry = t.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-expiry:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// PauseFor pauses profiling for d from now, as an operator asks: d must be
// positive and at most MaxPause. It returns when the pause ends.
func (r *Registry) PauseFor(d time.Duration, who string) (time.Time, error) {
	if d <= 0 {
		return time.Time{}, fmt.Errorf("pause duration %s: must be positive", d)
	}
	if d > MaxPause {
		return time.Time{}, fmt.Errorf("pause duration %s: over the %s limit; pause again when it ends", d, MaxPause)
	}
	until := r.now().Add(d)
	r.Pause(until, who)
	return until, nil
}
