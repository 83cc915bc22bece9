package main

import (
	"context"
	"fmt"
	"strings"
	"sync"

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
	checkGPULost = "gpu_lost"
)

// gpuChecks is dkms.ExtraCheck: every expected GPU visible, none lost.
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
		visible := dkms.Finding{Check: checkGPUName, Level: event.OK,
			Summary: fmt.Sprintf("%d GPUs visible", len(r.Samples))}
		switch {
		case len(r.Samples) == 0:
			visible.Level = event.Critical
			visible.Summary = "NVML is up but sees no GPU"
			visible.Fix = "check `lspci -d 10de:` and the kernel log (`gpuwarden explain` on `dmesg` output)"
		case p.expected > 0 && len(r.Samples) < p.expected:
			visible.Level = event.Critical
			visible.Summary = fmt.Sprintf("%d of %d expected GPUs visible", len(r.Samples), p.expected)
			visible.Fix = "a GPU fell off the bus or failed to initialise: drain the node, check the kernel log, reboot; reseat or replace if it recurs"
		}
		lost := dkms.Finding{Check: checkGPULost, Level: event.OK, Summary: "no GPU lost"}
		var names []string
		for _, s := range r.Samples {
			if s.Lost {
				names = append(names, fmt.Sprintf("GPU %d (%s, %s)", s.GPU.Index, s.GPU.PCIBusID, s.GPU.UUID))
			}
		}
		if len(names) > 0 {
			lost.Level = event.Critical
			lost.Summary = "NVML reports GPUs lost: " + strings.Join(names, ", ")
			lost.Evidence = names
			lost.Fix = "drain the node and reboot; inspect the GPU, riser and power if it recurs"
		}
		return []dkms.Finding{visible, lost}
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
