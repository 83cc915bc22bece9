package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
)

// addColourFlag gives a command --color=auto|always|never, as ls and git
// spell it.
func addColourFlag(cmd *cobra.Command, mode *string) {
	cmd.Flags().StringVar(mode, "color", "auto", "colour the levels: auto (on a terminal, unless NO_COLOR is set or TERM=dumb), always or never")
}

// colours decides whether output to w is painted. auto paints only a
// terminal, and never when NO_COLOR (https://no-color.org) is set to
// anything or TERM is dumb.
func colours(mode string, w io.Writer) (explain.Colours, error) {
	switch mode {
	case "never":
		return false, nil
	case "always":
		return true, nil
	case "auto", "":
		if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
			return false, nil
		}
		return explain.Colours(isTerminal(w)), nil
	}
	return false, unknown(fmt.Errorf("--color %q: want auto, always or never", mode))
}

// isTerminal reports whether x is an open terminal (a tty answering TCGETS).
func isTerminal(x any) bool {
	f, ok := x.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
