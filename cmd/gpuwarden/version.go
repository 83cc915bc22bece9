package main

import "github.com/spf13/cobra"

// placeholder: replaced by the real command.
func newVersionCmd() *cobra.Command { return &cobra.Command{Use: "version", Short: "not yet built"} }
