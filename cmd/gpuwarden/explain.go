package main

import (
	"bufio"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
)

func newExplainCmd() *cobra.Command {
	var (
		output string
		lines  bool
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
pci_bus_id, xid, pid and process_name.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "-"
			if len(args) == 1 {
				path = args[0]
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			in, err := explain.Open(path, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("explain: %w", err)
			}
			defer in.Close()
			out := cmd.OutOrStdout()
			if lines {
				if err := explain.Lines(in, out); err != nil {
					return fmt.Errorf("explain %s: %w", path, err)
				}
				return nil
			}
			// Streamed: memory does not grow with the log; a report (or
			// the JSON) of what was read is written even when the input
			// ends early, and the command then fails saying where.
			if output == "json" {
				bw := bufio.NewWriter(out)
				enc := json.NewEncoder(bw)
				enc.SetEscapeHTML(false)
				n, err := explain.Each(in, func(ev event.Event) error { return enc.Encode(&ev) })
				if ferr := bw.Flush(); ferr != nil {
					return ferr
				}
				if err != nil {
					return fmt.Errorf("explain %s: the input ended early after line %d: %w", path, n, err)
				}
				return nil
			}
			rep := explain.NewReport()
			n, err := explain.Each(in, func(ev event.Event) error { rep.Add(ev); return nil })
			if werr := rep.Write(out, n, err); werr != nil {
				return werr
			}
			if err != nil {
				return fmt.Errorf("explain %s: the input ended early after line %d: %w", path, n, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "Output format: text or json (JSON Lines of events).")
	cmd.Flags().BoolVar(&lines, "lines", false, "Print one JSON object per input line, each classified on its own.")
	return cmd
}
