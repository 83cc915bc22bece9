package kmsg

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

func init() {
	source.Register(source.Registration{
		Name:    "kmsg",
		Help:    "Watch the kernel log for NVIDIA driver events.",
		Default: true,
		Host:    true,
		New: func(env source.Env) (source.Source, error) {
			return &Source{Path: env.String("collector.kmsg.path"), StateDir: env.StateDir, Paths: env.Paths, Log: env.Log}, nil
		},
	})
}

// Source runs the one kernel-log reader as a source of the agent: every
// batch of records becomes one step of the agent's state, and the cursor
// moves past the batch, with the agent's counters, only once it is applied.
type Source struct {
	Path     string // default DefaultPath
	StateDir string // "" keeps no cursor
	Paths    hostfs.Paths
	Log      *slog.Logger

	// The counters outlive a reader reopened after an error.
	rejectedName, rejectedMalformed atomic.Uint64
	base                            Stats // counters of earlier readers of this process
}

// firstRoundWait bounds the wait for the GPU collector's first round: the
// ring buffer holds what happened since boot, read in a burst at start, and
// those events must find their GPU (an Xid 79 from before the agent started
// must still mark it).
const firstRoundWait = 15 * time.Second

// Run reads until ctx ends. A reader that cannot open (no device, no
// permission) or that fails returns the error, with the fix, for the agent
// to report and retry.
func (s *Source) Run(ctx context.Context, sink source.Sink) error {
	sink.GPUs().WaitFirstRound(ctx, firstRoundWait)
	r, err := Open(Config{Path: s.Path, StateDir: s.StateDir, BootIDPath: s.Paths.WithDefaults().Proc("sys/kernel/random/boot_id"),
		RereadSeen: true, Logger: s.Log})
	if err != nil {
		return err
	}
	var corrupt *CorruptStateError
	var ahead *CursorAheadError
	switch err := r.StateError(); {
	case errors.As(err, &corrupt):
		sink.Events([]event.Event{event.StateCorrupt(time.Now(), "kmsg", corrupt.Path, corrupt.MovedTo, err)}, nil)
	case errors.As(err, &ahead):
		sink.Events([]event.Event{event.StateCorrupt(time.Now(), "kmsg", ahead.Path, ahead.MovedTo, err)}, nil)
	}
	if err := sink.Restore(r.Checkpoint()); err != nil {
		// Counters start over; the position stays, so nothing is counted twice.
		s.logger().Warn("the counters saved with the kernel-log cursor are unusable; they start from zero", "err", err)
	}
	boot, err := s.Paths.BootTime()
	if err != nil {
		s.logger().Warn("cannot read the uptime; kernel events are stamped with the time they are read", "err", err)
		boot = time.Time{}
	}
	// Without a cursor of this boot, what the ring holds from before this
	// start is backlog: it is counted and weighs on health, but is not
	// passed on to subscribers as news (remediation must not reset a GPU
	// now for an Xid of two days ago; the health it left is a transition
	// rules can match).
	backlogUntil := time.Duration(0)
	if !r.Resumed() && !boot.IsZero() {
		backlogUntil = time.Since(boot)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	sink.Ran(0)
	var fresh, restored []event.Event
	for batch := range r.Batches() {
		start := time.Now()
		fresh, restored = s.events(batch.Records, r.BootID(), boot, backlogUntil, fresh[:0], restored[:0])
		sink.Events(fresh, restored)
		// Applied: a restart resumes after it, with the counters as they
		// are now, in one write.
		r.AckCheckpoint(batch.Last, sink.Checkpoint())
		batch.Release() // the events copied what they keep
		if len(r.Batches()) == 0 {
			r.Trim() // caught up: a burst's memory goes back
		}
		sink.Stats(s.metrics(r.Stats()))
		sink.Ran(time.Since(start))
	}
	st := r.Stats()
	r.Close() // writes the last acknowledged cursor
	s.base = addStats(s.base, st)
	sink.Stats(s.metrics(Stats{}))
	return <-done
}

// events classifies each record once: almost every record is unrelated
// and ends at that check; only the rest become events.
func (s *Source) events(recs []Record, bootID string, boot time.Time, backlogUntil time.Duration, fresh, restored []event.Event) ([]event.Event, []event.Event) {
	for _, rec := range recs {
		if c := Classify(rec.Message); c.Kind == event.KindUnrelated {
			if !rec.Seen {
				switch c.Rejected {
				case RejectProcessName:
					s.rejectedName.Add(1)
				case RejectMalformed:
					s.rejectedMalformed.Add(1)
				}
			}
			continue
		}
		var ev event.Event
		if boot.IsZero() {
			ev = RecordEvent(rec, bootID, time.Now().Add(-rec.Monotonic))
		} else {
			ev = RecordEvent(rec, bootID, boot)
		}
		ev.Source = "kmsg"
		ev.Backlog = rec.Monotonic < backlogUntil
		if rec.Seen {
			restored = append(restored, ev) // applied before a restart: health back, no count
		} else {
			fresh = append(fresh, ev)
		}
	}
	return fresh, restored
}

func (s *Source) logger() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

func addStats(a, b Stats) Stats {
	return Stats{Records: a.Records + b.Records, Lost: a.Lost + b.Lost, Overruns: a.Overruns + b.Overruns,
		Dropped: a.Dropped + b.Dropped, Malformed: a.Malformed + b.Malformed, Skipped: a.Skipped + b.Skipped,
		SaveFails: a.SaveFails + b.SaveFails, Truncated: a.Truncated + b.Truncated}
}

// metrics are the source's series: every reader counter, and the records
// the trust rules refused, by reason.
func (s *Source) metrics(cur Stats) []source.Metric {
	st := addStats(s.base, cur)
	counter := func(name, help string, v uint64, labels ...string) source.Metric {
		return source.Metric{Name: name, Help: help, Counter: true, Value: float64(v), Labels: labels}
	}
	return []source.Metric{
		counter("gpuwarden_kmsg_records_total", "Kernel-log records gpuwarden read, NVIDIA-related or not.", st.Records),
		counter("gpuwarden_kmsg_lost_records_total", "Kernel-log records the kernel overwrote before gpuwarden read them (SEQ gaps after EPIPE).", st.Lost),
		counter("gpuwarden_kmsg_overruns_total", "Times the kernel log overran gpuwarden's reader (read returned EPIPE).", st.Overruns),
		counter("gpuwarden_kmsg_dropped_records_total", "Kernel-log records read but dropped because the consumer's queue was full.", st.Dropped),
		counter("gpuwarden_kmsg_malformed_records_total", "Kernel-log records that did not parse as /dev/kmsg records.", st.Malformed),
		counter("gpuwarden_kmsg_skipped_records_total", "Kernel-log records at or before the saved cursor, not counted again.", st.Skipped),
		counter("gpuwarden_kmsg_cursor_save_failures_total", "Kernel-log cursor writes that failed.", st.SaveFails),
		counter("gpuwarden_kmsg_truncated_records_total", "Kernel-log records whose message was longer than 8 KiB and was cut.", st.Truncated),
		counter("gpuwarden_kmsg_rejected_records_total", rejectedHelp, s.rejectedName.Load(), "reason", RejectProcessName),
		counter("gpuwarden_kmsg_rejected_records_total", rejectedHelp, s.rejectedMalformed.Load(), "reason", RejectMalformed),
	}
}

const rejectedHelp = "Kernel-log records that look like NVIDIA driver lines but fail the trust rules (a process name first, or the driver's grammar broken), by reason."
