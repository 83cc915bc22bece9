package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/profiling"
	"github.com/gpuwarden/gpuwarden/remediation"
	"github.com/gpuwarden/gpuwarden/remediation/control"
)

// controlSocket is where the control socket listens: control.socket when
// set, else remediation.socket where remediation is configured, else the
// default.
func controlSocket(cfg agent.Config, rcfg *remediation.Config) string {
	if !cfg.IsSet("control.socket") && rcfg != nil {
		return rcfg.Socket
	}
	return cfg.ControlSocket
}

// serveControl serves the operator's control socket: the profiling pause
// always, remediation's operations when it is configured (engine not nil).
// Without remediation it is served only to a root agent (a non-root agent
// could not answer root's requests with anything it may change); a failure
// to serve it is loud but never stops monitoring.
func serveControl(a *agent.Agent, path string, engine *remediation.Engine, log *slog.Logger) {
	if engine == nil && os.Geteuid() != 0 {
		log.Debug("control socket not served: the agent is not root and remediation is not configured", "socket", path)
		return
	}
	clog := log.With("component", "control")
	s := &control.Server{Profiling: profiling.Control{Log: clog}, Log: clog}
	if engine != nil {
		s.Handler = engine
	}
	a.Go(func(ctx context.Context) {
		if err := s.Serve(ctx, path); err != nil && ctx.Err() == nil {
			clog.Error("control socket unavailable; gpuwarden profiling and gpuwarden remediation will not reach this agent",
				"socket", path, "err", err)
		}
	})
}
