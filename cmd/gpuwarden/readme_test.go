package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

var updateREADME = flag.Bool("update", false, "rewrite the README's generated command-flags table")

// The README's table of the commands' flags is made from the command tree,
// so a flag added to a command (--color, -o) cannot be missing from it.
// `run`'s flags are the settings table's (agent/readme_test.go).
func TestREADMECommandFlagsMatchTheCommands(t *testing.T) {
	var b strings.Builder
	b.WriteString("| command | flag | default | meaning |\n| --- | --- | --- | --- |\n")
	root := newRootCmd()
	root.InitDefaultVersionFlag()
	var visit func(c *cobra.Command)
	visit = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Name() != "run" {
			flags := c.NonInheritedFlags()
			if c == root {
				flags = c.Flags()
			}
			flags.VisitAll(func(f *pflag.Flag) {
				if f.Name == "help" || f.Hidden {
					return
				}
				name := "`--" + f.Name + "`"
				if f.Shorthand != "" {
					name = "`-" + f.Shorthand + "`, " + name
				}
				def := f.DefValue
				if def == "" || def == "[]" {
					def = "-"
				} else {
					def = "`" + def + "`"
				}
				fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", c.CommandPath(), name, def, strings.ReplaceAll(f.Usage, "|", `\|`))
			})
		}
		for _, sub := range c.Commands() {
			visit(sub)
		}
	}
	visit(root)

	const path = "../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	begin := strings.Index(s, "<!-- command-flags:begin")
	end := strings.Index(s, "<!-- command-flags:end -->")
	if begin < 0 || end < begin {
		t.Fatal("README.md has no command-flags:begin/end markers")
	}
	begin += strings.Index(s[begin:], "-->\n") + len("-->\n")
	if s[begin:end] == b.String() {
		return
	}
	if !*updateREADME {
		t.Fatal("README.md: the command-flags table is out of date: run go test ./cmd/gpuwarden -run TestREADMECommandFlags -update")
	}
	if err := os.WriteFile(path, []byte(s[:begin]+b.String()+s[end:]), 0o644); err != nil {
		t.Fatal(err)
	}
}
