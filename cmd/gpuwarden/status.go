package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

func newStatusCmd() *cobra.Command {
	var url, backend, replayFile string
	var once bool
	var output, colour string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print one row per GPU: model, temperature, power, utilisation, memory, health",
		Long: `status asks a running agent (--agent, default http://localhost:9400) for its
latest sample, or with --once samples the GPUs itself once (--backend nvml or
replay) without an agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var view agent.GPUsView
			if once {
				v, err := sampleOnce(cmd.Context(), backend, replayFile)
				if err != nil {
					return err
				}
				view = v
			} else {
				v, err := fetchGPUs(cmd.Context(), url)
				if err != nil {
					return fmt.Errorf("%w (is the agent running? try --once to sample without it)", err)
				}
				view = v
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(view); err != nil {
					return err
				}
			case "table":
				paint, err := colours(colour, cmd.OutOrStdout())
				if err != nil {
					return err
				}
				if err := printStatus(cmd.OutOrStdout(), view, paint); err != nil {
					return err
				}
			default:
				return unknown(fmt.Errorf("--output %q: want table or json", output))
			}
			// The same 0/1/2/3 as check: the worst GPU, a lost one critical.
			if lvl := statusLevel(view); lvl != event.OK {
				return &exitError{code: lvl.ExitCode()}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "agent", "http://localhost:9400", "URL of a running agent (host:port alone means http://host:port)")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	f.BoolVar(&once, "once", false, "sample the GPUs once here instead of asking an agent")
	f.StringVar(&backend, "backend", "nvml", "with --once: nvml or replay")
	f.StringVar(&replayFile, "replay", "", "with --once --backend replay: trace file (default: the embedded demo)")
	addColourFlag(cmd, &colour)
	return cmd
}

func fetchGPUs(ctx context.Context, base string) (agent.GPUsView, error) {
	var v agent.GPUsView
	err := agentGet(ctx, base, "/v1/gpus", 16<<20, &v)
	return v, err
}

// agentURL is a running agent's base URL: host:port alone means
// http://host:port.
func agentURL(base string) string {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return strings.TrimSuffix(base, "/")
}

// agentGet asks a running agent (a URL, or host:port) for path, within 5 s,
// and decodes its JSON answer, at most limit bytes, into v.
func agentGet(ctx context.Context, base, path string, limit int64, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, agentURL(base)+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", req.URL, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, limit)).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", req.URL, err)
	}
	return nil
}

func sampleOnce(ctx context.Context, backend, file string) (agent.GPUsView, error) {
	var tr *replay.Timeline
	if backend == "replay" {
		var err error
		if tr, err = openReplay(file); err != nil {
			return agent.GPUsView{}, err
		}
	}
	log := newLogger(io.Discard, "error", "logfmt")
	lib, player, err := backendLibrary(backend, tr, replay.PlayerOptions{}, log)
	if err != nil {
		return agent.GPUsView{}, err
	}
	if player != nil {
		defer player.Close()
	}
	col := gpu.New(lib, gpu.Options{Log: log})
	defer col.Close()
	r := col.Sample(ctx)
	if r.Err != nil {
		return agent.GPUsView{}, r.Err
	}
	st := agent.NewState("", 0, 0, nil)
	st.ApplyRound(r)
	return agent.ViewGPUs(st.Snapshot(), time.Now()), nil
}

// statusLevel is the worst health of the view's GPUs (critical for a lost
// one), or unknown when the GPU collector is down or there are no GPUs.
func statusLevel(v agent.GPUsView) event.Level {
	if (v.Collector != nil && !v.Collector.Up) || len(v.GPUs) == 0 {
		return event.Unknown
	}
	lvl := event.OK
	for _, g := range v.GPUs {
		lvl = event.Worse(lvl, g.Health.Level)
		if g.Lost {
			lvl = event.Worse(lvl, event.Critical)
		}
	}
	return lvl
}

func printStatus(w io.Writer, v agent.GPUsView, paint explain.Colours) error {
	// Everything in the view came from an agent or a trace: each cell is
	// made printable, and only then is the last (HEALTH) cell painted.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "GPU\tMODEL\tBUS\tTEMP\tPOWER\tUTIL\tMEMORY\tOWNERS\tHEALTH\n")
	for _, g := range v.GPUs {
		val := func(name, format string, scale float64) string {
			x, ok := g.Values[name]
			if !ok {
				return "-"
			}
			return fmt.Sprintf(format, x*scale)
		}
		mem := "-"
		if used, ok := g.Values["DCGM_FI_DEV_FB_USED"]; ok {
			total := used + g.Values["DCGM_FI_DEV_FB_FREE"] + g.Values["DCGM_FI_DEV_FB_RESERVED"]
			mem = fmt.Sprintf("%.1f/%.0f GiB", used/1024, total/1024)
		}
		level := g.Health.Level
		health := level.String()
		if len(g.Health.Reasons) > 0 {
			health += ": " + g.Health.Reasons[0]
		}
		if g.Lost {
			health = "LOST: " + health
			level = event.Worse(level, event.Critical)
		}
		// Whose work is on the GPU: the Slurm jobs and pods of its
		// processes, as its events name them.
		owners := "-"
		if len(g.Owners) > 0 {
			owners = strings.Join(g.Owners, "; ")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Index, explain.Printable(g.Name), explain.Printable(g.PCIBusID),
			val("DCGM_FI_DEV_GPU_TEMP", "%.0f C", 1), val("DCGM_FI_DEV_POWER_USAGE", "%.0f W", 1),
			val("DCGM_FI_DEV_GPU_UTIL", "%.0f %%", 1), mem, explain.Printable(owners), paint.Level(level, explain.Printable(health)))
	}
	if len(v.GPUs) == 0 {
		fmt.Fprintln(tw, "no GPUs")
	}
	return tw.Flush()
}
