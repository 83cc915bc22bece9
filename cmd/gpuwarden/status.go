package main

import "github.com/spf13/cobra"

// placeholder: replaced by the real command.
func newStatusCmd() *cobra.Command { return &cobra.Command{Use: "status", Short: "not yet built"} }
