package replay

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// KernelFeed is the source of a trace's kernel-log records: the player
// pushes each raw record (PlayerOptions.Kmsg = feed.Push) and the feed
// parses it as the live reader's records are parsed. Push never blocks the
// player: a full queue drops and counts.
type KernelFeed struct {
	ch      chan string
	dropped atomic.Uint64
	warn    sync.Once
	log     *slog.Logger
}

// NewKernelFeed returns a feed with a queue of 4096 records.
func NewKernelFeed(log *slog.Logger) *KernelFeed {
	if log == nil {
		log = slog.Default()
	}
	return &KernelFeed{ch: make(chan string, 4096), log: log}
}

// Push queues one raw /dev/kmsg record.
func (f *KernelFeed) Push(raw string) {
	select {
	case f.ch <- raw:
	default:
		f.dropped.Add(1)
		f.warn.Do(func() {
			f.log.Warn("replayed kernel records dropped: the trace plays faster than they are applied (lower --replay.speed)")
		})
	}
}

// Run applies what is pushed until ctx ends, in batches of what is queued.
func (f *KernelFeed) Run(ctx context.Context, sink source.Sink) error {
	sink.Ran(0)
	var batch []event.Event
	var truncated uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case raw := <-f.ch:
			batch = batch[:0]
			for {
				rec, err := kmsg.ParseRecord([]byte(raw))
				if err == nil {
					if rec.Truncated {
						truncated++
					}
					// A replayed record happens now: its monotonic stamp
					// is from another boot of another host.
					if ev := kmsg.RecordEvent(rec, "", time.Time{}); ev.Kind != event.KindUnrelated {
						ev.Source, ev.Time = "replay", time.Now()
						batch = append(batch, ev)
					}
				}
				if len(batch) >= 512 || len(f.ch) == 0 {
					break
				}
				raw = <-f.ch
			}
			sink.Events(batch, nil)
			sink.Stats([]source.Metric{
				{Name: "gpuwarden_replay_kmsg_dropped_records_total", Help: "Replayed kernel-log records dropped because they were played faster than applied.",
					Counter: true, Value: float64(f.dropped.Load())},
				{Name: "gpuwarden_replay_kmsg_truncated_records_total", Help: "Replayed kernel-log records whose message was cut to 8 KiB.",
					Counter: true, Value: float64(truncated)},
			})
		}
	}
}
