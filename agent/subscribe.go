package agent

import (
	"sync/atomic"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// Notice is what a subscriber receives: a new event (after de-duplication,
// never one restored after a restart) or a change of health.
type Notice struct {
	Event      *event.Event
	Transition *Transition
}

// Transition is a change of health level of one GPU or of the host.
type Transition struct {
	Time time.Time
	// GPU is the GPU's index, or -1 for the host as a whole.
	GPU  int
	UUID string
	From event.Level
	To   event.Level
	// Health is the new health, with its reasons and action.
	Health Health
}

// Subscription is one subscriber's bounded queue. Delivery never waits: a
// full queue drops the notice and counts it, so a slow subscriber never
// slows ingestion or a scrape.
type Subscription struct {
	name      string
	ch        chan Notice
	delivered atomic.Uint64
	dropped   atomic.Uint64
	closed    atomic.Bool
}

// C is the subscriber's queue.
func (s *Subscription) C() <-chan Notice { return s.ch }

// Name is the name the subscriber gave.
func (s *Subscription) Name() string { return s.name }

// Dropped is how many notices did not fit in the queue.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Delivered is how many notices were queued.
func (s *Subscription) Delivered() uint64 { return s.delivered.Load() }

// Close stops delivery; the queue is left for the subscriber to drain.
func (s *Subscription) Close() { s.closed.Store(true) }

// SubscriberStats is one subscription's counters, in the Snapshot.
type SubscriberStats struct {
	Name      string `json:"name"`
	Delivered uint64 `json:"delivered_total"`
	Dropped   uint64 `json:"dropped_total"`
}

// Subscribe adds a subscriber with a queue of size notices (at least 1).
// Health transitions are judged against the health published when it
// subscribes, so it is not told of the state it found.
func (s *State) Subscribe(name string, size int) *Subscription {
	sub := &Subscription{name: name, ch: make(chan Notice, max(size, 1))}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, sub)
	return sub
}

// notify offers n to every open subscription. Callers hold mu.
func (s *State) notify(n Notice) {
	for _, sub := range s.subs {
		if sub.closed.Load() {
			continue
		}
		select {
		case sub.ch <- n:
			sub.delivered.Add(1)
		default:
			sub.dropped.Add(1)
		}
	}
}

// transitions notifies every change of level since the last publish.
// Callers hold mu.
func (s *State) transitions(snap *Snapshot) {
	levels := make(map[string]event.Level, len(snap.GPUs)+1)
	levels[""] = snap.Health.Level
	for i := range snap.GPUs {
		levels[snap.GPUs[i].Info.UUID] = snap.GPUs[i].Health.Level
	}
	if s.lastLevels != nil && len(s.subs) > 0 {
		if from := s.lastLevels[""]; from != snap.Health.Level {
			s.notify(Notice{Transition: &Transition{Time: snap.Built, GPU: -1, From: from, To: snap.Health.Level, Health: snap.Health}})
		}
		for i := range snap.GPUs {
			g := &snap.GPUs[i]
			from, seen := s.lastLevels[g.Info.UUID]
			if !seen {
				from = event.Unknown
			}
			if from != g.Health.Level {
				s.notify(Notice{Transition: &Transition{Time: snap.Built, GPU: g.Info.Index, UUID: g.Info.UUID,
					From: from, To: g.Health.Level, Health: g.Health}})
			}
		}
	}
	s.lastLevels = levels
}
