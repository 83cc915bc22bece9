package explain

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

// exampleRow is one labelled real line from testdata/kmsg-examples.tsv
// (250 lines from 79 public sources; source_url names each one's origin).
type exampleRow struct {
	line, source, kind, bus, xid, pid, name string
	lineNo                                  int
}

func loadExamples(t testing.TB) []exampleRow {
	t.Helper()
	b, err := os.ReadFile("../testdata/kmsg-examples.tsv")
	if err != nil {
		t.Fatal(err)
	}
	var rows []exampleRow
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if i == 0 {
			continue // header
		}
		f := strings.Split(l, "\t")
		if len(f) != 7 {
			t.Fatalf("kmsg-examples.tsv line %d: %d columns, want 7", i+1, len(f))
		}
		rows = append(rows, exampleRow{f[0], f[1], f[2], f[3], f[4], f[5], f[6], i + 1})
	}
	return rows
}

// TestExamplesThroughExplainLines feeds every example line through the same
// code path as `gpuwarden explain --lines` (all lines as one input) and
// checks every labelled field.
func TestExamplesThroughExplainLines(t *testing.T) {
	rows := loadExamples(t)
	if len(rows) != 250 {
		t.Fatalf("want the 250 example rows, got %d", len(rows))
	}
	var in strings.Builder
	for _, r := range rows {
		in.WriteString(r.line + "\n")
	}
	var out bytes.Buffer
	if err := Lines(strings.NewReader(in.String()), &out); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&out)
	for i, r := range rows {
		var got struct {
			Line        int     `json:"line"`
			Kind        string  `json:"kind"`
			PCIBusID    string  `json:"pci_bus_id"`
			Xid         *int    `json:"xid"`
			PID         *int    `json:"pid"`
			ProcessName *string `json:"process_name"`
		}
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("output object %d: %v", i+1, err)
		}
		want := func(field, got, want string) {
			if got != want {
				t.Errorf("tsv line %d %s: got %q, want %q\n  line: %q\n  from: %s", r.lineNo, field, got, want, r.line, r.source)
			}
		}
		want("line", strconv.Itoa(got.Line), strconv.Itoa(i+1))
		want("kind", got.Kind, r.kind)
		want("pci_bus_id", got.PCIBusID, r.bus)
		want("xid", optInt(got.Xid), r.xid)
		want("pid", optInt(got.PID), r.pid)
		if got.ProcessName == nil {
			t.Errorf("tsv line %d: process_name missing", r.lineNo)
		} else {
			want("process_name", *got.ProcessName, r.name)
		}
	}
	if dec.More() {
		t.Error("more output objects than input lines")
	}
}

func optInt(p *int) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(*p)
}
