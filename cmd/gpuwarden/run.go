package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/dcgm"
	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/kubelet"
	"github.com/gpuwarden/gpuwarden/collectors/profiling"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/collectors/source"
	"github.com/gpuwarden/gpuwarden/dkms"
	"github.com/gpuwarden/gpuwarden/remediation"
)

// The sources register themselves; importing kmsg, ebpf and dcgm is what
// registers them.
var (
	_ = kmsg.Source{}
	_ = ebpf.Source{}
	_ = dcgm.Source{}
)

func newRunCmd() *cobra.Command {
	var configFile string
	var checkOnly bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: sample GPUs, watch the kernel log, serve /metrics and the API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := agent.Load(cmd.Flags(), configFile)
			if err != nil {
				return fmt.Errorf("config: %w", err)
			}
			var trace *replay.Timeline
			if cfg.Backend == "replay" {
				if trace, err = openReplay(cfg.ReplayFile); err != nil {
					return err
				}
			}
			rcfg, err := remediation.ParseConfig(cfg.FileBytes(), configFile)
			if err != nil {
				return fmt.Errorf("config: %w", err)
			}
			if checkOnly {
				fmt.Fprintln(cmd.OutOrStdout(), "config OK")
				return nil
			}
			cfg = withTraceHost(cfg, trace)
			level := new(slog.LevelVar)
			level.Set(logLevel(cfg.LogLevel))
			log := newLevelLogger(os.Stderr, level, cfg.LogFormat)
			// One logger for everything the process prints: libraries
			// that log through slog's default or the log package too.
			slog.SetDefault(log)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Caught from the start: SIGHUP's default action would kill the agent.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			a, err := buildAgent(ctx, cfg, trace, log)
			if err != nil {
				return err
			}
			var engine *remediation.Engine
			if rcfg != nil {
				if engine, err = startRemediation(a, cfg, rcfg, log); err != nil {
					return err
				}
			}
			serveControl(a, controlSocket(cfg, rcfg), engine, log)
			a.OnReload(func(c agent.Config) { level.Set(logLevel(c.LogLevel)) })
			go reloadOnHUP(ctx, hup, cmd, configFile, trace, a, engine)
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "YAML config file (keys as the flags, nested or dotted)")
	cmd.Flags().BoolVar(&checkOnly, "config.check", false, "Validate the configuration and exit")
	agent.RegisterFlags(cmd.Flags())
	return cmd
}

// buildAgent wires the backend and the sources into an agent. A replay
// feeds the trace's kernel records; the sources that read this host (its
// kernel log, its DKMS tree) run beside a replay only when switched on
// explicitly (by flag, environment or config file): a replayed node is not
// this host.
func buildAgent(ctx context.Context, cfg agent.Config, trace *replay.Timeline, log *slog.Logger) (*agent.Agent, error) {
	feed := replay.NewKernelFeed(log)
	// The trace's eBPF records go to the eBPF source, when it runs: it
	// decodes them as it decodes its ring buffer's.
	var bpf atomic.Pointer[ebpf.Source]
	opts := replay.PlayerOptions{Speed: cfg.ReplaySpeed, Loop: cfg.ReplayLoop, Kmsg: feed.Push,
		EBPF: func(raw []byte, memcg string) {
			if s := bpf.Load(); s != nil {
				s.Push(raw, memcg)
			}
		}}
	lib, player, err := backendLibrary(cfg.Backend, trace, opts, log)
	if err != nil {
		return nil, err
	}
	a := agent.New(cfg, lib, log)
	if player != nil {
		go func() {
			<-ctx.Done()
			player.Close() // releases a sample blocked in a replayed hang
		}()
		a.AddSource("replay_kmsg", feed)
	}
	env := source.Env{Paths: hostPaths(cfg), StateDir: cfg.StateDir, Replay: cfg.Backend == "replay", Setting: cfg.Get, Log: log}
	recorded := recordedHost(cfg, trace, player)
	for _, reg := range source.Registered() {
		host := reg.Host
		if reg.Name == "dkms" && recorded != nil {
			host = false // the trace's node speaks: on unless turned off
		}
		if !cfg.SourceOn(reg.Name, host) {
			continue
		}
		s, err := reg.New(env)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", reg.Name, err)
		}
		a.AddSource(reg.Name, s)
		if d, ok := s.(*dkms.Source); ok {
			d.Config.Recorded = recorded
			w := d
			a.OnReload(func(c agent.Config) { w.SetInterval(c.DKMSInterval) })
			a.Go(func(ctx context.Context) { recheckOnModuleEvents(ctx, a.State(), w, log) })
		}
		if e, ok := s.(*ebpf.Source); ok && player != nil {
			bpf.Store(e)
		}
	}
	if player != nil {
		if n := countEBPF(trace); n > 0 && bpf.Load() == nil {
			log.Info("the trace's eBPF records are not played: the ebpf source is off in a replay unless named", "records", n, "fix", "--collector.ebpf")
		}
		// Started once every source that takes the trace's records is in
		// place, so that none of them is missed.
		go player.Run(ctx)
	}
	if cfg.GPUKubernetes {
		// Pod labels on GPU series: the kubelet's pod-resources answer,
		// asked on its own interval; a scrape only reads it.
		a.AddSource("kubelet", &kubelet.Source{Client: &kubelet.Client{Socket: hostPaths(cfg).Root(cfg.PodResourcesSocket)},
			Apply: a.State().SetPods, Log: log})
	}
	// gpuwarden_profiling_paused, whichever source (if any) serves profiling.
	a.Go(func(ctx context.Context) {
		profiling.Default.Publish(ctx, func(m []source.Metric) { a.State().SetStats("profiling", m) })
	})
	return a, nil
}

// recordedHost is where the kernel, driver and DKMS checks read a replayed
// node's facts: the host records of its trace, as of the trace's time, so a
// replay shows the findings of the host it was recorded on. Nil (this
// host's files) without a replay, for a trace without host records, and
// when --path.rootfs points the checks at a tree on purpose.
func recordedHost(cfg agent.Config, trace *replay.Timeline, player *replay.Player) func() (dkms.Facts, bool) {
	if player == nil || trace == nil || !trace.HasHost() || cfg.IsSet("path.rootfs") {
		return nil
	}
	return player.HostFacts
}

// recheckOnModuleEvents runs the DKMS checks at once when an NVIDIA module
// is loaded or removed (the eBPF source sees both), instead of at the next
// timer tick or file change.
func recheckOnModuleEvents(ctx context.Context, state *agent.State, d *dkms.Source, log *slog.Logger) {
	sub := state.Subscribe("dkms-recheck", 64)
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-sub.C():
			if n.Event != nil && (n.Event.Kind == event.KindDriverLoaded || n.Event.Kind == ebpf.KindDriverUnloaded) {
				log.Info("NVIDIA driver module event: checking the driver now", "kind", string(n.Event.Kind), "source", n.Event.Source, "module", n.Event.Fields[ebpf.FieldModule])
				d.CheckNow()
			}
		}
	}
}

// countEBPF is the number of eBPF records in trace.
func countEBPF(trace *replay.Timeline) int {
	if trace == nil {
		return 0
	}
	return trace.EBPFRecords()
}

// hostPaths is the one view of --path.rootfs, --path.procfs and
// --path.sysfs every source gets.
func hostPaths(cfg agent.Config) hostfs.Paths {
	return hostfs.Paths{RootFS: cfg.RootFS, ProcFS: cfg.ProcFS, SysFS: cfg.SysFS}.WithDefaults()
}

// withTraceHost is cfg as the agent runs it: a replay is another host
// speaking, so with no hostname set it is labelled as the trace's host. The
// same at start and on reload, so a reload does not see a change.
func withTraceHost(cfg agent.Config, trace *replay.Timeline) agent.Config {
	if trace != nil && cfg.Hostname == "" {
		cfg.Hostname = trace.Header.Hostname
	}
	return cfg
}

// reloadOnHUP re-reads the configuration on SIGHUP (systemctl reload). A bad
// file is refused before anything changes: the running configuration stays.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, cmd *cobra.Command, file string, trace *replay.Timeline, a *agent.Agent, engine *remediation.Engine) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			cfg, err := agent.Load(cmd.Flags(), file)
			if err != nil {
				a.ReloadRefused(err)
				continue
			}
			// The rules are checked before anything changes: a bad rule
			// keeps the running rules and the running settings.
			rcfg, err := remediation.ParseConfig(cfg.FileBytes(), file)
			if err != nil {
				a.ReloadRefused(err)
				continue
			}
			if engine != nil && rcfg != nil {
				engine.Reload(rcfg)
			} else if (engine == nil) != (rcfg == nil) {
				a.Log().Warn("turning remediation on or off needs a restart", "config", file)
			}
			a.Reload(withTraceHost(cfg, trace))
		}
	}
}
