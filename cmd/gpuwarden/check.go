package main

import "github.com/spf13/cobra"

// placeholder: replaced by the real command.
func newCheckCmd() *cobra.Command { return &cobra.Command{Use: "check", Short: "not yet built"} }
