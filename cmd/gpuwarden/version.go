package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/agent"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print gpuwarden's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "gpuwarden %s (revision %s, %s %s/%s)\n", agent.Version, agent.Revision, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
