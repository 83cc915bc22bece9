package dkms

import (
	"context"
	"sync"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

func init() {
	source.Register(source.Registration{
		Name:    "dkms",
		Help:    "Check kernel, driver and DKMS consistency.",
		Default: true,
		Host:    true,
		New: func(env source.Env) (source.Source, error) {
			return &Source{Config: Config{Paths: env.Paths, Interval: env.Duration("collector.dkms.interval"), Logger: env.Log}}, nil
		},
	})
}

// firstRoundWait bounds the wait for the GPU collector's first round.
const firstRoundWait = 15 * time.Second

// Source runs the checks as a source of the agent: findings that change
// become events, every pass's health is the source's finding and its series
// the source's stats.
type Source struct {
	Config Config

	mu      sync.Mutex
	watcher *Watcher // the running one
}

// CheckNow asks the running checks for a pass at once (an NVIDIA module
// was just loaded or removed).
func (s *Source) CheckNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watcher != nil {
		s.watcher.CheckNow()
	}
}

// SetInterval changes the running checks' interval (a reload), and the
// next run's.
func (s *Source) SetInterval(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Config.Interval = d
	if s.watcher != nil {
		s.watcher.SetInterval(d)
	}
}

// Run runs a Watcher until ctx ends.
func (s *Source) Run(ctx context.Context, sink source.Sink) error {
	s.mu.Lock()
	cfg := s.Config
	s.mu.Unlock()
	// NVML's view comes from the sampler's last round: the checks must
	// never load NVML themselves (one guard owns it).
	cfg.NVML = func(context.Context) (string, error) { return sink.GPUs().DriverVersion() }
	cfg.OnEvent = func(ev event.Event) { sink.Events([]event.Event{ev}, nil) }
	cfg.OnReport = func(r Report) {
		h := r.Health()
		sink.Report(source.Finding{Level: h.Level, Reasons: h.Reasons, Fix: h.Fix})
		sink.Stats(Metrics(r))
		sink.Ran(r.Duration)
	}
	sink.Report(source.Finding{Level: event.Unknown, Reasons: []string{"first check not finished"}})
	// The first pass asks NVML's view, which is the sampler's first round:
	// waiting for it (briefly) keeps the first report from saying unknown
	// for NVML until the next pass, minutes later.
	sink.GPUs().WaitFirstRound(ctx, firstRoundWait)
	w := NewWatcher(cfg)
	s.mu.Lock()
	s.watcher = w
	s.mu.Unlock()
	return w.Run(ctx)
}
