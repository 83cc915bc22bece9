package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/collectors/profiling"
	"github.com/gpuwarden/gpuwarden/remediation/control"
)

// newProfilingCmd pauses and resumes the agent's use of the GPUs' profiling
// counters over its control socket, so that a profiler (Nsight, CUPTI) can
// have them.
func newProfilingCmd() *cobra.Command {
	cmd, c := newControlCmd("profiling",
		"Pause or resume the agent's profiling counters for a profiler, or show who holds them",
		`  pause DURATION   release the profiling counters for DURATION (at most `+profiling.MaxPause.String()+`), e.g. 2h
  resume           take them back now
  status           who owns the counters, and whether and until when they are paused

While paused, gpuwarden_profiling_paused is 1 and no DCGM_FI_PROF_* series is served.`)
	call := func(cmd *cobra.Command, req control.Request) error {
		return c.call(cmd, "profiling", req, "")
	}
	pause := &cobra.Command{
		Use:   "pause DURATION",
		Short: "Release the profiling counters for DURATION (at most " + profiling.MaxPause.String() + ")",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Checked here too, for a message before the socket is reached.
			d, err := time.ParseDuration(args[0])
			if err != nil {
				return fmt.Errorf("pause %q: not a duration (e.g. 30m, 2h): %v", args[0], err)
			}
			if d <= 0 || d > profiling.MaxPause {
				return fmt.Errorf("pause %s: want a duration above 0 and at most %s", d, profiling.MaxPause)
			}
			return call(cmd, control.Request{Op: control.OpProfilingPause, Duration: d.String()})
		},
	}
	resume := &cobra.Command{
		Use:   "resume",
		Short: "Take the profiling counters back now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd, control.Request{Op: control.OpProfilingResume})
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show who owns the profiling counters and whether they are paused",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd, control.Request{Op: control.OpProfilingStatus})
		},
	}
	cmd.AddCommand(pause, resume, status)
	return cmd
}
