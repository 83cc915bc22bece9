package agent

import (
	"sync"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// EventRing keeps the most recent events, bounded in count and in bytes, so
// that neither a flood nor long lines can grow the agent or a /v1/events
// response past a known size.
type EventRing struct {
	mu       sync.RWMutex
	buf      []event.Event // grown as events come, up to max
	size     []int         // each slot's weight in bytes
	head, n  int           // the oldest slot and how many are in use
	bytes    int
	max      int
	maxBytes int
}

// Ring bounds of the agent's State: 1000 events and 4 MiB of their text
// (at most MaxEventText each, so at least 500 of the longest).
const (
	ringEvents = 1000
	ringBytes  = 4 << 20
)

// NewEventRing keeps up to n events weighing up to maxBytes together. Its
// slots are made as events come (an event.Event is a few hundred bytes, and
// an idle node has few events), not all at once.
func NewEventRing(n, maxBytes int) *EventRing {
	return &EventRing{max: n, maxBytes: maxBytes}
}

// grow makes room for more events, the oldest first in the new slots.
// Callers hold mu.
func (r *EventRing) grow() {
	n := min(max(2*len(r.buf), 16), r.max)
	buf, size := make([]event.Event, n), make([]int, n)
	for i := 0; i < r.n; i++ {
		j := (r.head + i) % len(r.buf)
		buf[i], size[i] = r.buf[j], r.size[j]
	}
	r.buf, r.size, r.head = buf, size, 0
}

// eventBytes is what an event weighs: its own text and fields, and a fixed
// allowance for the rest (the catalog's strings are shared, not copied).
func eventBytes(ev *event.Event) int {
	n := 256 + len(ev.Raw) + len(ev.BootID) + len(ev.GPU.UUID) + len(ev.GPU.PCIBusID)
	for k, v := range ev.Fields {
		n += len(k) + len(v) + 16
	}
	return n
}

// Add keeps ev, dropping the oldest while the ring is full in count or bytes.
func (r *EventRing) Add(ev event.Event) {
	w := eventBytes(&ev)
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && (r.n == r.max || r.bytes+w > r.maxBytes) {
		r.bytes -= r.size[r.head]
		r.buf[r.head] = event.Event{}
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
	if r.n == len(r.buf) {
		r.grow()
	}
	i := (r.head + r.n) % len(r.buf)
	r.buf[i], r.size[i] = ev, w
	r.n++
	r.bytes += w
}

// Len and Bytes say how much the ring holds.
func (r *EventRing) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

// Bytes is the weight of the events held (see eventBytes).
func (r *EventRing) Bytes() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.bytes
}

// Recent returns up to limit events, newest first, that match keep.
func (r *EventRing) Recent(limit int, keep func(*event.Event) bool) []event.Event {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []event.Event{}
	for i := 0; i < r.n && len(out) < limit; i++ {
		ev := &r.buf[(r.head+r.n-1-i)%len(r.buf)]
		if keep == nil || keep(ev) {
			out = append(out, *ev)
		}
	}
	return out
}
