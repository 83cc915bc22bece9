// Command gpuwarden is the GPU node agent: it samples every GPU, watches the
// kernel log, checks kernel/driver/DKMS consistency and exports all of it to
// Prometheus. See README.md.
package main

import (
	"errors"
	"fmt"
	"os"

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

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "gpuwarden",
		Short:         "Node agent for NVIDIA GPU hosts: metrics, kernel-log events, driver consistency",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newRunCmd(),
		newRecordCmd(),
		newStatusCmd(),
		newVersionCmd(),
		newExplainCmd(),
		newCheckCmd(),
		newDocsCmd(),
	)
	return root
}

func main() {
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
