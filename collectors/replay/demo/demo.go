// Package demo embeds the demo trace that `make run` plays: five minutes of
// a simulated DGX H100 with a thermal slowdown, an ECC error and a GPU that
// falls off the bus. `make demo-trace` records it with `gpuwarden record`
// from testdata/scenarios/dgx-h100-demo.yaml through the real collector, into
// this package's traces/, the one copy: the binary embeds it and the tests
// read it there. The directory is embedded, not the file, so the binary that
// records the trace can be built before the trace exists.
package demo

import (
	"bytes"
	"embed"
	"fmt"

	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// Name is the embedded trace's file name.
const Name = "dgx-h100-demo.trace.jsonl.gz"

//go:embed traces
var files embed.FS

// Bytes is the embedded trace file.
func Bytes() ([]byte, error) {
	b, err := files.ReadFile("traces/" + Name)
	if err != nil {
		return nil, fmt.Errorf("the demo trace is not in this binary (run `make demo-trace` and rebuild): %w", err)
	}
	return b, nil
}

// Timeline reads the embedded trace as a player keeps it.
func Timeline() (*replay.Timeline, error) {
	b, err := Bytes()
	if err != nil {
		return nil, err
	}
	return replay.ReadTimeline(bytes.NewReader(b), "embedded:"+Name)
}

// Trace parses the embedded trace.
func Trace() (*replay.Trace, error) {
	b, err := Bytes()
	if err != nil {
		return nil, err
	}
	return replay.Read(bytes.NewReader(b), "embedded:"+Name)
}
