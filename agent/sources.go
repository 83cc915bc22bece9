package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// sourceBackoff is the first and the longest wait before a failed source
// runs again; a source that ran for longer than sourceHealthy before it
// failed starts again from the first.
const (
	sourceBackoff    = 5 * time.Second
	sourceBackoffMax = 5 * time.Minute
	sourceHealthy    = time.Minute
)

// runSource runs s until ctx ends: a failure marks it down with its error
// and fix, is logged once per distinct cause, and is followed by another
// run after a backoff. A source never stops the agent.
func (a *Agent) runSource(ctx context.Context, name string, s source.Source) {
	sk := &sink{name: name, state: a.state, log: a.log, checkpoints: a.cfg.Backend == "nvml"}
	backoff := sourceBackoff
	lastErr := ""
	for ctx.Err() == nil {
		start := time.Now()
		err := s.Run(ctx, sk)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stopped by itself")
		}
		absent := source.IsAbsent(err)
		// Logged before it is published: whoever sees the source down can
		// already read why in the log.
		if err.Error() != lastErr {
			lastErr = err.Error()
			attrs := []any{"source", name, "err", err, "retry", "on a backoff up to " + sourceBackoffMax.String()}
			if fix := source.FixOf(err); fix != "" {
				attrs = append(attrs, "fix", fix)
			}
			if absent {
				// Not installed here: worth a line, not an error.
				a.log.Info("source down; the agent keeps running", attrs...)
			} else {
				a.log.Error("source down; the agent keeps running", attrs...)
			}
		}
		a.state.SetCollector(name, false, err, source.FixOf(err), 0)
		a.state.SetCollectorAbsent(name, absent)
		sk.down.Store(true)
		if time.Since(start) > sourceHealthy {
			backoff = sourceBackoff
		}
		if absent {
			backoff = sourceBackoffMax // not installed: ask again now and then, not every few seconds
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, sourceBackoffMax)
	}
}

// sink is the agent's side of one source.
type sink struct {
	name        string
	state       *State
	log         *slog.Logger
	checkpoints bool // the agent keeps counters across restarts (a real host, not a replay)
	down        atomic.Bool
}

func (k *sink) Events(fresh, restored []event.Event) { k.state.ApplyEvents(fresh, restored) }

func (k *sink) Ran(took time.Duration) {
	if k.down.Swap(false) {
		k.log.Info("source up again", "source", k.name)
	}
	k.state.SetCollector(k.name, true, nil, "", took)
}

func (k *sink) Report(f source.Finding) { k.state.SetFinding(k.name, f) }

func (k *sink) Stats(m []source.Metric) { k.state.SetStats(k.name, m) }

func (k *sink) Checkpoint() []byte {
	if !k.checkpoints {
		return nil
	}
	return k.state.Checkpoint()
}

func (k *sink) Restore(b []byte) error {
	if !k.checkpoints || len(b) == 0 {
		return nil
	}
	return k.state.RestoreCheckpoint(b)
}

func (k *sink) GPUs() source.GPUView { return gpuView{k.state} }

type gpuView struct{ state *State }

func (v gpuView) WaitFirstRound(ctx context.Context, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil && v.state.Snapshot().Collector("gpu") == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

func (v gpuView) DriverVersion() (string, error) {
	snap := v.state.Snapshot()
	switch c := snap.Collector("gpu"); {
	case c == nil:
		return "", errors.New("the GPU collector has not run yet")
	case !c.Up:
		return "", errors.New(c.Err)
	}
	return snap.DriverVersion, nil
}

func (v gpuView) GPUs() []source.GPU {
	snap := v.state.Snapshot()
	out := make([]source.GPU, 0, len(snap.GPUs))
	for _, g := range snap.GPUs {
		if g.labels == nil {
			continue
		}
		kv := make([]string, 0, 2*len(gpuLabelNames))
		for i, n := range gpuLabelNames {
			kv = append(kv, n, g.labels[i])
		}
		var pids []int
		for _, p := range g.Processes {
			pids = append(pids, int(p.PID))
		}
		out = append(out, source.GPU{Index: g.Info.Index, UUID: g.Info.UUID, PCIBusID: g.Info.PCIBusID,
			SampleTime: g.SampleTime, Labels: kv, PIDs: pids})
	}
	return out
}
