// Command gpuwarden is the GPU node agent: it samples every GPU, watches the
// kernel log, checks kernel/driver/DKMS consistency and exports all of it to
// Prometheus. See README.md.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra (check's Nagios codes).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// unknown is exit 3 (UNKNOWN, "could not tell"): a usage error, or input,
// a host or an agent that could not be read. Never 1, which NRPE and Ansible
// read as a warning about the node.
func unknown(err error) error {
	return &exitError{code: event.Unknown.ExitCode(), err: err}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "gpuwarden",
		Short:         "Node agent for NVIDIA GPU hosts: metrics, kernel-log events, driver consistency",
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version and -v, as well as `version`, by hand rather than
		// cobra's Version: a version template would link text/template's
		// evaluator, whose reflective method lookup keeps every exported
		// method of every type in the binary (the linker cannot tell which
		// a template might call).
		RunE: func(cmd *cobra.Command, _ []string) error {
			if v, _ := cmd.Flags().GetBool("version"); v {
				_, err := fmt.Fprint(cmd.OutOrStdout(), versionLine())
				return err
			}
			return cmd.Help()
		},
	}
	root.Flags().BoolP("version", "v", false, "version for gpuwarden")
	root.AddCommand(
		newRunCmd(),
		newRecordCmd(),
		newStatusCmd(),
		newVersionCmd(),
		newExplainCmd(),
		newCheckCmd(),
		newRemediationCmd(),
		newProfilingCmd(),
		newFleetCmd(),
	)
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	return root
}

// extraCommands are added by files behind build tags (gen-docs, with gendocs).
var extraCommands []func() *cobra.Command

func main() {
	if os.Getenv("GOGC") == "" {
		// The agent's live heap is a few MB; the default GOGC=100 lets the
		// heap double before each collection. Half the headroom keeps the
		// resident set of a node agent small for little CPU (one short GC
		// per second or so at a 100 ms sampling interval).
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// The agent's work is a sample and a scrape now and then; one P is
		// plenty (a goroutine stuck in a hung NVML call gives its P up).
		// Each P costs its own span caches and, during GC, a worker thread:
		// on a 100-core GPU host the default turns into megabytes of
		// resident memory for no throughput anyone needs. Like
		// node_exporter's --runtime.gomaxprocs=1; GOMAXPROCS overrides it.
		runtime.GOMAXPROCS(1)
	}
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "gpuwarden:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "gpuwarden:", err)
	os.Exit(1)
}
