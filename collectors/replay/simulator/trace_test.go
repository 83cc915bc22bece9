package simulator

import (
	"bytes"
	"os"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// The demo trace is what `make demo-trace` makes from its scenario, byte for
// byte, and the embedded copy is the same file.
func TestDemoTraceIsReproducibleFromItsScenario(t *testing.T) {
	sc := demoScenario(t)
	tr, err := replay.RecordScenario(sc, New(sc), quiet)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/demo.trace.jsonl.gz"
	if err := replay.WriteFile(tr, path); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want, err := os.ReadFile("../demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz is not what its scenario records: run make demo-trace")
	}
	embedded, err := os.ReadFile("../demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil || !bytes.Equal(embedded, want) {
		t.Error("the embedded demo trace differs from testdata/: run make demo-trace")
	}
	if len(want) > 1<<20 {
		t.Errorf("demo trace is %d bytes; keep it under 1 MiB", len(want))
	}
}
