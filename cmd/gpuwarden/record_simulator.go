//go:build simulator

package main

import (
	"log/slog"

	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/collectors/replay/simulator"
)

// recordScenario plays the scenario file on go-nvml's simulated DGX H100
// (`record --backend mock`). Only a binary built with -tags simulator has
// the simulator (collectors/replay/simulator): the agent never runs it, and
// go-nvml's mock is some 1.6 MB of the binary, most of which a running agent
// would map in.
func recordScenario(path string, log *slog.Logger) (*replay.Trace, error) {
	sc, err := replay.LoadScenario(path)
	if err != nil {
		return nil, err
	}
	return replay.RecordScenario(sc, simulator.New(sc), log)
}
