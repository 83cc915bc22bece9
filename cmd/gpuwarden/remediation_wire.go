package main

import (
	"log/slog"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/remediation"
)

// startRemediation wires the remediation engine into the agent: a
// subscriber of its events and health changes, /v1/remediation, and the
// operator's control socket.
func startRemediation(a *agent.Agent, cfg agent.Config, rcfg *remediation.Config, log *slog.Logger) (*remediation.Engine, error) {
	bootID, err := hostPaths(cfg).BootID()
	if err != nil {
		log.Warn("no boot id: escalation after repeated reboots cannot tell boots apart", "err", err)
	}
	opts := remediation.Options{StateDir: cfg.StateDir, BootID: bootID, Log: log.With("component", "remediation")}
	e := remediation.New(rcfg, a.State(), opts)
	a.Handle("GET /v1/remediation", agent.JSONHandler(func() any { return e.Recent() }))
	a.Go(e.Run)
	if rcfg.Dry() {
		log.Info("remediation in dry run: decisions are audited with the argv they would run, and nothing runs",
			"rules", len(rcfg.Rules), "fix", "set remediation.dry_run: false to act")
	}
	return e, nil
}
