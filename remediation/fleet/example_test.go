package fleet_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/gpuwarden/gpuwarden/remediation/fleet"
)

// How a remediation engine asks before a drain: validate the configured
// guards once, then Check each time, act only when allowed, audit a
// decision that failed open, and give back the Release when done.
func ExampleAll() {
	prom := &fleet.Prometheus{URL: "http://prometheus:9090", Query: "count(kube_node_spec_unschedulable == 1)", Limit: 3}
	lease := &fleet.Lease{Namespace: "gpu-ops", Prefix: "gpuwarden-disruption", Holder: "node-a", Limit: 2, Duration: 2 * time.Hour}
	for _, v := range []interface{ Validate() error }{prom, lease} {
		if err := v.Validate(); err != nil {
			slog.Error("fleet guard config", "err", err) // a *fleet.FieldError names the key
			return
		}
	}
	guard := fleet.All(prom, lease)

	ctx := context.Background()
	d, release, err := guard.Check(ctx, "drain")
	if err != nil || !d.Allowed {
		slog.Info("drain held", "reason", d.Reason, "err", err)
		return
	}
	if d.FailedOpen {
		slog.Warn("drain allowed without a fleet answer", "reason", d.Reason)
	}
	// ... drain ...
	if release != nil {
		if err := release(ctx); err != nil {
			slog.Warn("giving back the fleet permit", "err", err)
		}
	}
}
