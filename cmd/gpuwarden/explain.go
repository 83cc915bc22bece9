package main

import "github.com/spf13/cobra"

// placeholder: replaced by the real command.
func newExplainCmd() *cobra.Command { return &cobra.Command{Use: "explain", Short: "not yet built"} }
