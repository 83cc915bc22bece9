package main

import "github.com/spf13/cobra"

// placeholder: replaced by the real command.
func newRunCmd() *cobra.Command { return &cobra.Command{Use: "run", Short: "not yet built"} }
