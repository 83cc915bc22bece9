package main

import (
	"fmt"
	"log/slog"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/collectors/replay/demo"
)

// openReplay loads a trace file, or the embedded demo when file is "", as
// the player keeps it.
func openReplay(file string) (*replay.Timeline, error) {
	if file == "" {
		return demo.Timeline()
	}
	return replay.OpenTimeline(file)
}

// liveNVML is the real driver. Nothing calls it until the collector's
// guarded Init succeeds.
func liveNVML() gpu.Library { return gpu.FromNVML(nvml.New()) }

func backendLibrary(backend string, tr *replay.Timeline, opts replay.PlayerOptions, log *slog.Logger) (gpu.Library, *replay.Player, error) {
	switch backend {
	case "nvml":
		return liveNVML(), nil, nil
	case "replay":
		p := replay.NewTimelinePlayer(tr, opts)
		log.Info("replaying trace", "source", tr.Header.Source, "host", tr.Header.Hostname,
			"gpus", len(tr.Header.GPUs), "duration_s", tr.Header.DurationS, "speed", opts.Speed, "loop", opts.Loop)
		return p.Library(), p, nil
	}
	return nil, nil, fmt.Errorf("unknown backend %q (want nvml or replay)", backend)
}
