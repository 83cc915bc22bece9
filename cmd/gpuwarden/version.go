package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/agent"
)

// versionLine is what `gpuwarden version`, --version and -v print.
func versionLine() string {
	return fmt.Sprintf("gpuwarden %s (revision %s, %s %s/%s)\n", agent.Version, agent.Revision, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print gpuwarden's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprint(cmd.OutOrStdout(), versionLine())
		},
	}
}
