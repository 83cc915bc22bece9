package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gpuwarden/gpuwarden/agent"
)

// kernelFeed carries replayed kernel-log records to the same parser the live
// /dev/kmsg reader uses. push never blocks the player: a full queue drops and
// counts.
type kernelFeed struct {
	ch      chan string
	dropped sync.Once
	log     *slog.Logger
}

func newKernelFeed(log *slog.Logger) *kernelFeed {
	return &kernelFeed{ch: make(chan string, 4096), log: log}
}

func (f *kernelFeed) push(raw string) {
	select {
	case f.ch <- raw:
	default:
		f.dropped.Do(func() {
			f.log.Warn("replayed kernel records dropped: the trace plays faster than they are applied (lower --replay.speed)")
		})
	}
}

func (f *kernelFeed) Name() string { return "replay_kmsg" }

func (f *kernelFeed) Run(ctx context.Context, state *agent.State) error {
	state.SetCollector("replay_kmsg", true, nil, "", 0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case raw := <-f.ch:
			// A replayed record happens now: its monotonic stamp is from
			// another boot of another host.
			if ev, ok := kernelEvent(raw, "replay", "", time.Time{}); ok {
				ev.Time = time.Now()
				state.ApplyEvent(ev)
			}
		}
	}
}
