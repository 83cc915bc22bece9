package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

func newRecordCmd() *cobra.Command {
	var backend, scenario, out string
	var withKmsg, withEBPF bool
	var interval, duration time.Duration
	cmd := &cobra.Command{
		Use:   "record --out FILE",
		Short: "Record a trace of what NVML says, live or from the simulated DGX H100 and a scenario",
		Long: `record samples GPUs through the same collector the agent runs and writes every
NVML answer (values and error returns) into a trace that 'gpuwarden run
--backend replay --replay FILE' plays back. A name ending in .gz is gzipped.
The trace starts with the host's kernel, driver and DKMS facts (a scenario
declares its node's): a replay's kernel and driver checks judge those, so it
shows the findings of the host it was recorded on. The simulated DGX H100
(--backend mock, go-nvml's mock) is only in a binary built with -tags
simulator, as make demo-trace builds one; the agent's own build leaves it out.

  gpuwarden record --backend nvml --interval 1s --duration 10m --out h100-idle.trace.jsonl.gz
  gpuwarden record --backend mock --scenario testdata/scenarios/dgx-h100-demo.yaml --out demo.trace.jsonl.gz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required")
			}
			log := stderrLogger()
			var tr *replay.Trace
			var err error
			switch backend {
			case "mock":
				if scenario == "" {
					return errors.New("--backend mock needs --scenario FILE")
				}
				if tr, err = recordScenario(scenario, log); err != nil {
					return err
				}
			case "nvml":
				if interval < 100*time.Millisecond || duration < interval {
					return errors.New("--interval must be at least 100ms and --duration at least one interval")
				}
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				var kernel <-chan string
				if withKmsg {
					kernel = recordKernel(ctx, log)
				}
				var bpf <-chan ebpf.Captured
				if withEBPF {
					bpf = recordEBPF(ctx, log)
				}
				if tr, err = replay.RecordLive(ctx, liveNVML(), interval, duration, kernel, bpf, log); err != nil {
					return err
				}
			default:
				return fmt.Errorf("--backend %q: want nvml or mock", backend)
			}
			if err := replay.WriteFile(tr, out); err != nil {
				return err
			}
			st, _ := os.Stat(out)
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %d GPUs, %d records, %.0f s, %d bytes\n",
				out, len(tr.Header.GPUs), len(tr.Records), tr.Header.DurationS, st.Size())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&backend, "backend", "nvml", "nvml (the driver) or mock (go-nvml's DGX H100 mock driven by --scenario; a build with -tags simulator)")
	f.StringVar(&scenario, "scenario", "", "scenario file for --backend mock")
	f.StringVar(&out, "out", "", "trace file to write (.gz compresses)")
	f.DurationVar(&interval, "interval", time.Second, "sampling interval for --backend nvml")
	f.DurationVar(&duration, "duration", time.Minute, "how long to record for --backend nvml")
	f.BoolVar(&withKmsg, "kmsg", true, "with --backend nvml: also record the NVIDIA-related kernel-log records that appear while recording")
	f.BoolVar(&withEBPF, "ebpf", true, "with --backend nvml: also record the eBPF source's records (OOM kills, PCIe AER, NVIDIA module loads) that appear while recording")
	return cmd
}

// recordEBPF runs the eBPF source's programs while recording and passes on
// their records. Without them (no BTF, no privilege) it says so and the
// trace has no eBPF records.
func recordEBPF(ctx context.Context, log *slog.Logger) <-chan ebpf.Captured {
	c, err := ebpf.Capture(ctx, hostfs.DefaultPaths(), log)
	if err != nil {
		log.Warn("eBPF records not recorded", "err", err)
		return nil
	}
	return c
}

// recordKernel reads /dev/kmsg while recording and passes on the records
// that appear from now on and are about NVIDIA hardware (the rest of the
// host's log stays out of the trace). Without the kernel log it says so and
// the trace has GPU answers only.
func recordKernel(ctx context.Context, log *slog.Logger) <-chan string {
	out := make(chan string, 1024)
	r, err := kmsg.Open(kmsg.Config{Logger: log})
	if err != nil {
		log.Warn("kernel log not recorded", "err", err)
		return out
	}
	boot, err := hostfs.DefaultPaths().BootTime()
	if err != nil {
		boot = time.Now()
	}
	since := time.Since(boot)
	go r.Run(ctx)
	go func() {
		for batch := range r.Batches() {
			for _, rec := range batch.Records {
				if rec.Monotonic < since || kmsg.Classify(rec.Message).Kind == event.KindUnrelated {
					continue
				}
				select {
				case out <- strings.TrimSuffix(rec.String(), "\n"):
				default: // a storm: the trace keeps what fits
				}
			}
			batch.Release() // the lines sent are copies
		}
	}()
	return out
}
