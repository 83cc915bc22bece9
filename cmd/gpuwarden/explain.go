package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
)

func newExplainCmd() *cobra.Command {
	var (
		output, agentAddr string
		lines             bool
		colour            string
	)
	cmd := &cobra.Command{
		Use:   "explain [FILE|-]",
		Short: "Explain NVIDIA kernel-log lines: what happened to each GPU, what it means, what to do",
		Long: `Reads kernel-log text (stdin when FILE is "-" or absent) in any common wrapper:
raw /dev/kmsg records, dmesg (-T, -H, --decode), kern.log and syslog, journalctl -k,
talosctl, or an nvidia-bug-report.log, gzipped or not, and reports per GPU what
happened, what it means and what to do.

--output json prints the events as JSON Lines. --lines prints one JSON object per
input line, in order, each line classified on its own, with the keys line, kind,
pci_bus_id, xid, pid and process_name.

Exit codes, as check's (Nagios): 0 nothing wrong found, 1 warning, 2 critical,
by the report's overall verdict (with --output json too); 3 a usage error or
input that could not be read. An input that ends early (a truncated .gz) is
3, unless what was read before the cut is a warning (1) or critical (2).
--lines exits 0 once every line is printed.

--agent URL explains a running agent's recent events (/v1/events, every source:
the kernel log, eBPF, NVML, the driver checks) instead, with the Slurm jobs and
pods each event hit, and exits by their verdict as above.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if agentAddr != "" {
				if len(args) > 0 || lines || output != "text" {
					return unknown(errors.New("--agent takes no FILE, --lines or --output"))
				}
				paint, err := colours(colour, cmd.OutOrStdout())
				if err != nil {
					return err
				}
				return explainAgent(cmd.Context(), cmd.OutOrStdout(), agentAddr, paint)
			}
			path := "-"
			if len(args) == 1 {
				path = args[0]
			}
			if output != "text" && output != "json" {
				return unknown(fmt.Errorf("--output %q: want text or json", output))
			}
			out := cmd.OutOrStdout()
			paint, err := colours(colour, out)
			if err != nil {
				return err
			}
			if path == "-" && isTerminal(cmd.InOrStdin()) {
				// A person typed `gpuwarden explain` alone: say what it waits for.
				fmt.Fprintln(cmd.ErrOrStderr(), "gpuwarden explain: reading kernel-log text from standard input; paste it and end with Ctrl-D, or give a FILE (gpuwarden explain --help)")
			}
			in, err := explain.Open(path, cmd.InOrStdin())
			if err != nil {
				return unknown(fmt.Errorf("explain: %w", err))
			}
			defer in.Close()
			if lines {
				if err := explain.Lines(in, out); err != nil {
					return unknown(fmt.Errorf("explain %s: %w", path, err))
				}
				return nil
			}
			// Streamed: memory does not grow with the log; a report (or
			// the JSON) of what was read is written even when the input
			// ends early, and the command then fails saying where. The
			// report, bounded, also gives the JSON its verdict.
			rep := explain.NewReport()
			rep.Colours = paint
			var n int
			var readErr error
			if output == "json" {
				bw := bufio.NewWriter(out)
				enc := json.NewEncoder(bw)
				enc.SetEscapeHTML(false)
				n, readErr = explain.Each(in, func(ev event.Event) error { rep.Add(ev); return enc.Encode(&ev) })
				if ferr := bw.Flush(); ferr != nil {
					return unknown(ferr)
				}
			} else {
				n, readErr = explain.Each(in, func(ev event.Event) error { rep.Add(ev); return nil })
				if werr := rep.Write(out, n, readErr); werr != nil {
					return unknown(werr)
				}
			}
			level := rep.Level()
			if readErr != nil {
				level = event.Worse(level, event.Unknown)
				return &exitError{code: level.ExitCode(), err: fmt.Errorf("explain %s: the input ended early after line %d: %w", path, n, readErr)}
			}
			if level != event.OK {
				return &exitError{code: level.ExitCode()}
			}
			return nil
		},
	}
	cmd.Args = func(c *cobra.Command, args []string) error {
		if err := cobra.MaximumNArgs(1)(c, args); err != nil {
			return unknown(err)
		}
		return nil
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return unknown(err) })
	cmd.Flags().StringVarP(&output, "output", "o", "text", "Output format: text or json (JSON Lines of events).")
	cmd.Flags().BoolVar(&lines, "lines", false, "Print one JSON object per input line, each classified on its own.")
	addColourFlag(cmd, &colour)
	cmd.Flags().StringVar(&agentAddr, "agent", "", "Explain the recent events of the agent at this URL (host:port alone means http://host:port) instead of kernel-log text.")
	return cmd
}

// explainAgent writes the explain report of a running agent's recent
// events, oldest first, as they name the jobs and pods they hit, and exits
// by its verdict; an agent that cannot be asked is exit 3.
func explainAgent(ctx context.Context, w io.Writer, base string, paint explain.Colours) error {
	var evs []event.Event
	if err := agentGet(ctx, base, "/v1/events?limit=1000", 64<<20, &evs); err != nil {
		return unknown(fmt.Errorf("explain --agent: %w (is the agent running?)", err))
	}
	slices.Reverse(evs) // the agent lists the newest first
	rep := explain.NewReport()
	rep.Colours = paint
	rep.From("the agent at " + agentURL(base))
	for _, ev := range evs {
		rep.Add(ev)
	}
	if err := rep.Write(w, 0, nil); err != nil {
		return unknown(err)
	}
	if level := rep.Level(); level != event.OK {
		return &exitError{code: level.ExitCode()}
	}
	return nil
}
