package main

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/dkms"
)

// gpuProbe samples the GPUs once for `gpuwarden check`: one guarded NVML
// Init serves both NVML's driver version and the GPU checks.
type gpuProbe struct {
	lib      gpu.Library
	expected int
	once     sync.Once
	round    gpu.Round
}

func (p *gpuProbe) sample(ctx context.Context) gpu.Round {
	p.once.Do(func() {
		col := gpu.New(p.lib, gpu.Options{Log: newLogger(nopWriter{}, "error", "logfmt")})
		defer col.Close()
		p.round = col.Sample(ctx)
	})
	return p.round
}

// nvmlVersion is dkms.NVMLProbe.
func (p *gpuProbe) nvmlVersion(ctx context.Context) (string, error) {
	r := p.sample(ctx)
	if r.Err != nil {
		return "", r.Err
	}
	return r.DriverVersion, nil
}

// Check names of the GPU checks.
const (
	checkGPUHealth = "gpu_health"
)

// gpuChecks is dkms.ExtraCheck: every expected GPU visible, each GPU
// healthy, judged by the agent's own rules (a State fed the one round).
func (p *gpuProbe) gpuChecks(required bool) dkms.ExtraCheck {
	return func(ctx context.Context) []dkms.Finding {
		r := p.sample(ctx)
		if r.Err != nil {
			f := dkms.Finding{Check: checkGPUName, NotRun: r.Err.Error()}
			if required {
				f.Level = event.Unknown
			}
			f.Summary = "could not run: " + f.NotRun
			return []dkms.Finding{f}
		}
		st := agent.NewState("", p.expected, 0, nil)
		st.ApplyRound(r)
		snap := st.Snapshot()
		visible := dkms.Finding{Check: checkGPUName, Level: event.OK,
			Summary: fmt.Sprintf("%d GPUs visible", len(snap.GPUs))}
		if h := agent.VisibleHealth(len(snap.GPUs), p.expected); h.Level != event.OK {
			visible.Level, visible.Summary = h.Level, strings.Join(h.Reasons, "; ")
			visible.Fix = "a GPU fell off the bus or failed to initialise: drain the node, check the kernel log, reboot; reseat or replace if it recurs"
		} else if len(snap.GPUs) == 0 {
			// A one-off check has no inventory to remember GPUs by: NVML
			// up with no GPU at all is what it can still call wrong.
			visible.Level = event.Critical
			visible.Summary = "NVML is up but sees no GPU"
			visible.Fix = "check `lspci -d 10de:` and the kernel log (`gpuwarden explain` on `dmesg` output)"
		}
		health := dkms.Finding{Check: checkGPUHealth, Level: event.OK, Summary: "every GPU healthy"}
		var bad []string
		var action event.Action
		for _, g := range snap.GPUs {
			if g.Health.Level == event.OK {
				continue
			}
			health.Level = event.Worse(health.Level, g.Health.Level)
			line := fmt.Sprintf("GPU %d (%s, %s): %s", g.Info.Index, g.Info.PCIBusID, g.Info.UUID, strings.Join(g.Health.Reasons, "; "))
			bad = append(bad, line)
			if g.Health.Action.Rank() > action.Rank() {
				action = g.Health.Action
			}
		}
		if len(bad) > 0 {
			health.Summary = strings.Join(bad, "; ")
			health.Evidence = bad
			health.Fix = "action: " + string(action)
			if action == event.ActionDrainAndReset {
				health.Fix = "drain the node and reset the GPU (reboot if it does not come back); inspect the GPU, riser and power if it recurs"
			}
		}
		return []dkms.Finding{visible, health}
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
