// Package agent owns the agent's lifecycle and its one State: it runs the
// sources (GPU sampling, kernel log, DKMS checks), applies what they report,
// publishes immutable Snapshots, serves them over HTTP and tells systemd how
// it is doing. It does not talk to NVML or read kernel files itself.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpuwarden/gpuwarden/agent/sdnotify"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
	"github.com/gpuwarden/gpuwarden/collectors/profiling"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// Agent is a configured, not yet running agent.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	lib      gpu.Library
	state    *State
	sources  []namedSource
	routes   []Route
	tasks    []func(context.Context)
	notifier *sdnotify.Notifier
	ready    sync.Once
	mu       sync.Mutex    // guards cfg's reloadable fields
	reloaded chan struct{} // wakes the sampler after a reload
	// watchdogEvery is systemd's watchdog ping interval (0: none).
	watchdogEvery atomic.Int64
	onReload      []func(Config)
}

// New returns an agent sampling lib.
func New(cfg Config, lib gpu.Library, log *slog.Logger) *Agent {
	host := cfg.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	a := &Agent{cfg: cfg, log: log, lib: lib,
		state:    NewState(host, cfg.GPUExpected, cfg.EventWindow, time.Now),
		notifier: sdnotify.New(), reloaded: make(chan struct{}, 1)}
	if cfg.Backend == "nvml" {
		// The host's own GPUs only: a replayed node is not this host.
		inv, err := LoadInventory(cfg.StateDir)
		if err != nil {
			log.Warn("GPU inventory", "err", err)
		}
		a.state.KeepInventory(inv, cfg.StateDir, log)
		a.state.Attribute(hostfs.Paths{RootFS: cfg.RootFS, ProcFS: cfg.ProcFS, SysFS: cfg.SysFS}.WithDefaults().Proc(""))
		a.state.LabelJobs(cfg.GPUJobLabel)
		var corrupt *CorruptInventoryError
		if errors.As(err, &corrupt) {
			a.state.ApplyEvent(event.StateCorrupt(time.Now(), "agent", corrupt.Path, corrupt.MovedTo, err))
		}
	}
	// Pod labels come from the kubelet by GPU UUID, not from process ids,
	// so they hold for a replayed node too when a kubelet serves its UUIDs.
	a.state.LabelPods(cfg.GPUKubernetes)
	if c := cfg.Counters(); c != nil {
		a.state.SelectFields(c.Only)
		for _, w := range c.Warnings {
			log.Warn("counters file: a row is not exported", "row", w)
		}
	}
	// cfg was loaded just before: that is the first successful load.
	a.state.SetConfigReload(true, time.Now())
	return a
}

// Log is the agent's logger.
func (a *Agent) Log() *slog.Logger { return a.log }

// State is the agent's state, for sources and tests.
func (a *Agent) State() *State { return a.state }

// AddSource adds a source to run beside the GPU collector, under name
// (its collector label, its metrics and health reasons). Call it before Run.
func (a *Agent) AddSource(name string, s source.Source) {
	a.sources = append(a.sources, namedSource{name, s})
}

// Handle adds an endpoint to the agent's HTTP server. Call it before Run.
func (a *Agent) Handle(pattern string, h http.Handler) {
	a.routes = append(a.routes, Route{pattern, h})
}

// Go runs f beside the sources for the agent's lifetime (remediation's
// engine and control socket). Call it before Run.
func (a *Agent) Go(f func(context.Context)) { a.tasks = append(a.tasks, f) }

type namedSource struct {
	name string
	src  source.Source
}

// Run runs until ctx ends. It returns an error only when the agent cannot
// serve at all (the listen address is taken, the web config is bad).
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reg := NewRegistry()
	srv := httpServer(HandlerAt(a.state, reg, a.cfg.WebTelemetryPath, a.routes...), a.cfg)
	serveErr := make(chan error, 1)
	go func() { serveErr <- serve(srv, a.cfg, a.log) }()

	// Before the sampler starts: its waits count progress as often as the
	// watchdog's interval asks.
	if iv, err := a.notifier.StartWatchdog(ctx, a.notifier.Completed); err != nil {
		a.log.Warn("systemd watchdog misconfigured", "err", err)
	} else if iv > 0 {
		a.watchdogEvery.Store(int64(iv))
		a.log.Info("systemd watchdog on", "ping_every", iv)
	}
	var wg sync.WaitGroup
	col := gpu.New(a.lib, gpu.Options{Timeout: a.cfg.GPUTimeout, Log: a.log,
		// The profiling counters are shared: GPM lets go of them while an
		// operator has paused profiling (gpuwarden profiling pause), and
		// while DCGM's hostengine owns them (the choice rule in package
		// profiling), so no DCGM_FI_PROF_* family is written twice.
		ProfilingPaused: func() bool {
			paused, _ := profiling.Paused()
			return paused || profiling.Owner() == "dcgm"
		}})
	wg.Go(func() { a.sampleLoop(ctx, col) })
	for _, s := range a.sources {
		wg.Go(func() { a.runSource(ctx, s.name, s.src) })
	}
	for _, f := range a.tasks {
		wg.Go(func() { f(ctx) })
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("web server: %w", err)
		}
	}
	a.notifier.Stopping()
	shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	srv.Shutdown(shutdown)
	cancel()
	// A sample stuck in NVML must not hold up shutdown: wait briefly.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(3 * time.Second):
		a.log.Warn("a source did not stop in time; exiting anyway")
	}
	return err
}

// sampleLoop samples every interval. While NVML is unavailable it retries on
// a backoff and logs the cause and fix once per distinct cause.
func (a *Agent) sampleLoop(ctx context.Context, col *gpu.Collector) {
	defer col.Close()
	backoff := time.Duration(0)
	lastErr := ""
	for {
		r := col.Sample(ctx)
		a.state.ApplyRound(r)
		wait := a.interval()
		if r.Err != nil {
			if r.Err.Error() != lastErr {
				lastErr = r.Err.Error()
				a.log.Error("GPU collector down; the agent keeps serving and retries on a backoff",
					"err", r.Err, "retry", "on a backoff up to 5m; the driver is picked up without a restart")
			}
			backoff = min(max(2*backoff, 5*time.Second), 5*time.Minute)
			wait = backoff
		} else {
			if lastErr != "" {
				a.log.Info("GPU collector up again", "gpus", len(r.Samples))
				lastErr = ""
			}
			backoff = 0
		}
		a.notifier.Progress()
		a.ready.Do(func() { a.notifier.Ready() })
		a.notifier.Status(StatusLine(a.state.Snapshot()))
		if !a.idle(ctx, wait) {
			return
		}
	}
}

// idle waits between samples, counting progress every second: a loop that
// waits (a long interval, a backoff while NVML is missing) is alive; only a
// loop stuck inside an NVML call stops the systemd watchdog's pings.
func (a *Agent) idle(ctx context.Context, wait time.Duration) bool {
	until := time.Now().Add(wait)
	for {
		left := time.Until(until)
		if left <= 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-a.reloaded:
			return true // a new interval takes effect now
		case <-time.After(min(left, a.progressEvery())):
			a.notifier.Progress()
		}
	}
}

// Reload applies cfg, which the caller has already loaded and validated:
// every setting marked Reload in Settings takes effect now (the sampling
// interval, the event window and expected GPU count in State, and what the
// OnReload functions apply), and the changed settings that need a restart
// are named in the log. RELOADING=1 and READY=1 bracket it for systemd.
func (a *Agent) Reload(cfg Config) {
	a.notifier.Reloading()
	defer a.notifier.Ready()
	a.mu.Lock()
	var applied []any
	var restart []string
	for _, s := range Settings {
		v := s.value(&cfg)
		switch {
		case s.Reload:
			reflect.ValueOf(s.field(&a.cfg)).Elem().Set(reflect.ValueOf(v))
			applied = append(applied, s.Name, v)
		case !reflect.DeepEqual(s.value(&a.cfg), v):
			// a.cfg keeps the value the agent started with: the key is
			// named on every reload until a restart applies it.
			restart = append(restart, s.Name)
		}
	}
	running, hooks := a.cfg, a.onReload
	a.mu.Unlock()
	a.state.Reconfigure(running.GPUExpected, running.EventWindow)
	for _, f := range hooks {
		f(running)
	}
	a.state.SetConfigReload(true, time.Now())
	a.log.Info("configuration reloaded", applied...)
	if len(restart) > 0 {
		a.log.Warn("changed settings that take effect only after a restart", "settings", restart)
	}
	select {
	case a.reloaded <- struct{}{}:
	default:
	}
}

// ReloadRefused records a reload whose configuration could not be loaded:
// the running configuration stays, and
// gpuwarden_config_last_reload_successful says 0 until a reload works.
func (a *Agent) ReloadRefused(err error) {
	a.log.Error("reload refused: the configuration is invalid; the running one stays", "err", err)
	a.state.SetConfigReload(false, time.Now())
}

// OnReload adds f to what Reload calls with the running configuration, for
// the reloadable settings the agent does not own itself (the log level, the
// DKMS checks' interval). Call it before Run.
func (a *Agent) OnReload(f func(Config)) { a.onReload = append(a.onReload, f) }

// progressEvery is how often a waiting sampler counts progress: often
// enough for every watchdog ping to see some (half its interval), and
// without a watchdog only when the wait ends. An idle agent wakes for
// nothing else.
func (a *Agent) progressEvery() time.Duration {
	if iv := time.Duration(a.watchdogEvery.Load()); iv > 0 {
		return max(iv/2, 100*time.Millisecond)
	}
	return time.Hour
}

func (a *Agent) interval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg.GPUInterval
}

// StatusLine is the one-line summary for systemd's STATUS= and logs:
// "8 GPUs, 1 unhealthy: GPU 3 fell off the bus". The GPU it names is the
// first of the worst: a lost GPU before another's warning.
func StatusLine(s *Snapshot) string {
	if c := s.Collector("gpu"); c != nil && !c.Up {
		return "GPU collector down: " + firstLine(c.Err)
	}
	bad := 0
	first := ""
	var firstLevel event.Level
	for _, g := range s.GPUs {
		if g.Health.Level == event.Critical || g.Health.Level == event.Warning {
			bad++
			if first == "" || (g.Health.Level == event.Critical && firstLevel != event.Critical) {
				firstLevel = g.Health.Level
				why := g.Health.Level.String()
				if len(g.Health.Reasons) > 0 {
					why = g.Health.Reasons[0]
				}
				first = fmt.Sprintf("GPU %d %s", g.Info.Index, why)
			}
		}
	}
	line := fmt.Sprintf("%d GPUs, %d unhealthy", len(s.GPUs), bad)
	if first != "" {
		line += ": " + first
	}
	return line
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
