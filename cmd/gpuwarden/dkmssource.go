package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/dkms"
)

// dkmsSource runs the kernel/driver/DKMS consistency checks beside the
// sampler: at start, on a timer and on change.
type dkmsSource struct {
	w *dkms.Watcher
}

func newDKMSSource(cfg agent.Config, state *agent.State, log *slog.Logger) *dkmsSource {
	s := &dkmsSource{}
	s.w = dkms.NewWatcher(dkms.Config{
		Paths:    dkms.Paths{RootFS: cfg.RootFS, ProcFS: cfg.ProcFS, SysFS: cfg.SysFS},
		Interval: cfg.DKMSInterval,
		Logger:   log,
		// NVML's view comes from the sampler's last round: the checks must
		// never load NVML themselves (one guard owns it).
		NVML: func(context.Context) (string, error) {
			snap := state.Snapshot()
			switch c := snap.Collector("gpu"); {
			case c == nil:
				return "", errors.New("the GPU collector has not run yet")
			case !c.Up:
				return "", errors.New(c.Err)
			}
			return snap.DriverVersion, nil
		},
		OnEvent: func(ev event.Event) { state.ApplyEvent(ev) },
	})
	state.AddHealthSource(func() (string, agent.Health) {
		h := s.w.Health()
		return "dkms", agent.Health{Level: h.Level, Reasons: h.Reasons, Fix: h.Fix}
	})
	return s
}

func (s *dkmsSource) Name() string { return "dkms" }

func (s *dkmsSource) Run(ctx context.Context, state *agent.State) error {
	done := make(chan error, 1)
	go func() { done <- s.w.Run(ctx) }()
	// Republish health and the collector's own state after every pass.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var last *dkms.Report
	for {
		select {
		case err := <-done:
			if err != nil && ctx.Err() == nil {
				state.SetCollector("dkms", false, err, "", 0)
			}
			return err
		case <-tick.C:
			if r, ok := s.w.Latest(); ok && (last == nil || !r.Time.Equal(last.Time)) {
				last = &r
				state.SetCollector("dkms", true, nil, "", r.Duration)
			}
		}
	}
}
