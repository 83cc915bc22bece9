package main

import (
	"bytes"
	"strings"
	"testing"
)

// --version and -v print the version line, as `gpuwarden version` does, and
// the bare command its help.
func TestTheVersionFlagPrintsTheVersionLine(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-v"}, {"version"}, {}} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		switch {
		case len(args) == 0:
			if !strings.Contains(out.String(), "Usage:") || !strings.Contains(out.String(), "Available Commands:") {
				t.Errorf("bare gpuwarden printed %q, want its help", out.String())
			}
		case out.String() != versionLine() || !strings.HasPrefix(out.String(), "gpuwarden "):
			t.Errorf("%q printed %q, want %q", args, out.String(), versionLine())
		}
	}
}
