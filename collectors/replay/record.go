package replay

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/attribution"
	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/dkms"
)

// A SimulatedNode is what a Scenario plays on: an NVML that Step moves to a
// time, the GPUs' PCI addresses its kernel-log lines name, and who owns a
// process. The simulator (collectors/replay/simulator) is one; it lives in a
// package of its own so that the agent, which imports replay, does not link
// go-nvml's mock.
type SimulatedNode interface {
	Library() gpu.Library
	Step(t float64)
	BusID(i int) string
	Owner(pid uint32) attribution.Owner
}

// RecordScenario plays a Scenario on sim, the simulated DGX H100 built from
// it, in simulated time (no sleeping) and returns the trace the collector's
// calls produced.
func RecordScenario(sc *Scenario, sim SimulatedNode, log *slog.Logger) (*Trace, error) {
	rec := NewRecorder(sim.Library())
	rec.Owners = sim.Owner
	now := time.Unix(0, 0).UTC()
	col := gpu.New(rec.Library(), gpu.Options{Clock: func() time.Time { return now }, Log: log, Timeout: time.Minute})
	defer col.Close()
	if sc.Host != nil {
		rec.Host(0, sc.Host.record())
	}
	kmsgSeq := uint64(1000)
	nextKmsg := 0
	nextBPF := 0
	hangs := 0
	for t := 0.0; t < sc.Duration; t += sc.Interval {
		now = time.Unix(0, 0).UTC().Add(time.Duration(t * float64(time.Second)))
		sim.Step(t)
		round := col.Sample(context.Background())
		if round.Err != nil {
			return nil, fmt.Errorf("sample at %gs: %w", t, round.Err)
		}
		rec.Commit(t)
		for ; nextKmsg < len(sc.Kmsg) && sc.Kmsg[nextKmsg].At < t+sc.Interval; nextKmsg++ {
			k := sc.Kmsg[nextKmsg]
			pri := k.Priority
			if pri == 0 {
				pri = 3
			}
			bus := strings.TrimSuffix(sim.BusID(k.GPU), ".0")
			text := strings.ReplaceAll(k.Text, "{pci}", bus)
			// The kernel's own record format, so replay feeds the same parser.
			rec.Kmsg(k.At, fmt.Sprintf("%d,%d,%d,-;%s", pri, kmsgSeq, int64(k.At*1e6), text))
			kmsgSeq++
		}
		for ; nextBPF < len(sc.EBPF) && sc.EBPF[nextBPF].At < t+sc.Interval; nextBPF++ {
			e := sc.EBPF[nextBPF]
			r, memcg := e.record(sim.BusID(e.GPU))
			rec.EBPF(e.At, r.EncodeTrace(), memcg)
		}
		for ; hangs < len(sc.Hangs) && sc.Hangs[hangs].At < t+sc.Interval; hangs++ {
			h := sc.Hangs[hangs]
			rec.Hang(h.At, h.GPU, h.Seconds)
		}
	}
	return rec.Trace(header(col, sc.Hostname, "simulated DGX H100 (go-nvml mock/dgxh100) + scenario", sc.Duration)), nil
}

// RecordLive samples lib every interval for duration and returns the trace.
// Kernel-log records (in /dev/kmsg's format) that arrive on kernel while it
// records are kept at their arrival time, and so are the eBPF source's
// records that arrive on bpf (ebpf.Capture); either may be nil.
func RecordLive(ctx context.Context, lib gpu.Library, interval, duration time.Duration, kernel <-chan string, bpf <-chan ebpf.Captured, log *slog.Logger) (*Trace, error) {
	rec := NewRecorder(lib)
	// Whose each GPU process is, from this host's /proc, kept in the trace.
	proc := attribution.Reader{}
	rec.Owners = func(pid uint32) attribution.Owner {
		o, _ := proc.Of(int(pid))
		return o
	}
	col := gpu.New(rec.Library(), gpu.Options{Log: log})
	defer col.Close()
	start := time.Now()
	// The host's kernel, driver and DKMS state, read as the checks read it.
	// NVML's side of it is the header's driver version and the GPUs' answers.
	if h := HostFromFacts(dkms.NewGatherer(dkms.DefaultPaths(), nil, nil).Gather(ctx)); h.validate() == nil {
		rec.Host(0, h)
	} else {
		log.Warn("host facts not recorded", "err", h.validate())
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	keepKernel := func() {
		for {
			select {
			case raw := <-kernel:
				rec.Kmsg(time.Since(start).Seconds(), raw)
			case c, ok := <-bpf:
				if !ok {
					bpf = nil // capture ended: nothing more to keep
					continue
				}
				rec.EBPF(time.Since(start).Seconds(), c.Raw, c.Memcg)
			default:
				return
			}
		}
	}
	for {
		round := col.Sample(ctx)
		if round.Err != nil {
			return nil, round.Err
		}
		rec.Commit(time.Since(start).Seconds())
		keepKernel()
		if time.Since(start)+interval > duration {
			break
		}
		select {
		case <-ctx.Done():
			return rec.Trace(header(col, hostname(), "live NVML", time.Since(start).Seconds())), nil
		case <-tick.C:
		}
	}
	return rec.Trace(header(col, hostname(), "live NVML", duration.Seconds())), nil
}

func header(col *gpu.Collector, host, source string, dur float64) Header {
	drv := ""
	if col != nil {
		drv = col.DriverVersion()
	}
	return Header{Format: Format, Version: Version, Source: source, Hostname: host,
		DriverVersion: drv, DurationS: dur, GPUs: col.GPUs()}
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// WriteFile writes t to path, gzip-compressed when the name ends in .gz.
// The gzip header carries no time or name, so the same trace gives the same
// bytes (the demo trace is reproducible).
func WriteFile(t *Trace, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var w io.Writer = f
	var zw *gzip.Writer
	if strings.HasSuffix(path, ".gz") {
		zw, _ = gzip.NewWriterLevel(f, gzip.BestCompression)
		w = zw
	}
	if err := t.Write(w); err != nil {
		f.Close()
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
