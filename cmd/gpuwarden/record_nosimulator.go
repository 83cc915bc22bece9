//go:build !simulator

package main

import (
	"errors"
	"log/slog"

	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// errNoSimulator is what `record --backend mock` says in the agent's own
// build, which leaves the simulator (go-nvml's mock) out: see
// record_simulator.go.
var errNoSimulator = errors.New("--backend mock: this binary is built without the scenario simulator, which the agent never runs; " +
	"build one with it (go build -tags simulator ./cmd/gpuwarden), or run make demo-trace for the demo trace")

func recordScenario(string, *slog.Logger) (*replay.Trace, error) { return nil, errNoSimulator }
