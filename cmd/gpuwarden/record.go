package main

import "github.com/spf13/cobra"

// placeholder: replaced by the real command.
func newRecordCmd() *cobra.Command { return &cobra.Command{Use: "record", Short: "not yet built"} }
