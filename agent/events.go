package agent

import (
	"sync"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// EventRing keeps the most recent events, bounded.
type EventRing struct {
	mu   sync.RWMutex
	buf  []event.Event
	next int
	full bool
}

// NewEventRing keeps up to n events.
func NewEventRing(n int) *EventRing { return &EventRing{buf: make([]event.Event, n)} }

// Add keeps ev, dropping the oldest when full.
func (r *EventRing) Add(ev event.Event) {
	r.mu.Lock()
	r.buf[r.next] = ev
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
	r.mu.Unlock()
}

// Recent returns up to limit events, newest first, that match keep.
func (r *EventRing) Recent(limit int, keep func(*event.Event) bool) []event.Event {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	out := []event.Event{}
	for i := 0; i < n && len(out) < limit; i++ {
		ev := &r.buf[(r.next-1-i+len(r.buf))%len(r.buf)]
		if keep == nil || keep(ev) {
			out = append(out, *ev)
		}
	}
	return out
}
