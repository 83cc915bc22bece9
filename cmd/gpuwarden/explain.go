package main

import (
	"fmt"

	"github.com/spf13/cobra"

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
			evs, n, err := explain.Events(in)
			if err != nil {
				return fmt.Errorf("explain %s: %w", path, err)
			}
			if output == "json" {
				return explain.WriteJSON(out, evs)
			}
			return explain.WriteReport(out, evs, n)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "Output format: text or json (JSON Lines of events).")
	cmd.Flags().BoolVar(&lines, "lines", false, "Print one JSON object per input line, each classified on its own.")
	return cmd
}
