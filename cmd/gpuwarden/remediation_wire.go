package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/remediation"
	"github.com/gpuwarden/gpuwarden/remediation/audit"
)

// startRemediation wires the remediation engine into the agent: a
// subscriber of its events and health changes and /v1/remediation. The
// control socket that reaches it is served by serveControl.
func startRemediation(a *agent.Agent, cfg agent.Config, rcfg *remediation.Config, log *slog.Logger) (*remediation.Engine, error) {
	bootID, err := hostPaths(cfg).BootID()
	if err != nil {
		log.Warn("no boot id: escalation after repeated reboots cannot tell boots apart", "err", err)
	}
	rlog := log.With("component", "remediation")
	auditLog, err := audit.Open(remediation.AuditPath(cfg.StateDir), rcfg.Audit.MaxBytes, rcfg.Audit.Keep)
	if err != nil {
		// Acting without a record of why is not an option: refuse to start.
		return nil, fmt.Errorf("remediation audit log: %w", err)
	}
	opts := remediation.Options{StateDir: cfg.StateDir, BootID: bootID, Log: rlog, Audit: auditLog}
	e := remediation.New(rcfg, a.State(), opts)
	a.Handle("GET /v1/remediation", agent.JSONHandler(func() any { return e.Recent() }))
	a.Go(func(ctx context.Context) {
		e.Run(ctx)
		auditLog.Close()
	})
	if rcfg.Dry() {
		log.Info("remediation in dry run: decisions are audited with the argv they would run, and nothing runs",
			"rules", len(rcfg.Rules), "fix", "set remediation.dry_run: false to act")
	}
	return e, nil
}
