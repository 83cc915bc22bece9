package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func runExplain(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newExplainCmd()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true // as under the root command
	var out bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

const explainSample = "[ 1234.567880] NVRM: GPU at PCI:0000:3b:00: GPU-b6c3b2be-c55b-d076-fa0e-d464e4c7e08b\n" +
	"[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.\n" +
	"[ 1234.567900] usb 1-1: new high-speed USB device number 2 using xhci_hcd\n"

func TestExplainCommandLinesFromStdin(t *testing.T) {
	out, err := runExplain(t, explainSample, "--lines", "-")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d objects for 3 lines:\n%s", len(lines), out)
	}
	var o map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &o); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"line": 2.0, "kind": "xid", "pci_bus_id": "0000:3b:00.0", "xid": 79.0, "pid": 1234.0, "process_name": "python3"} {
		if o[k] != want {
			t.Errorf("%s = %v, want %v", k, o[k], want)
		}
	}
	if lines[2] != `{"line":3,"kind":"unrelated","pci_bus_id":"","xid":null,"pid":null,"process_name":""}` {
		t.Errorf("unrelated line: %s", lines[2])
	}
}

func TestExplainCommandReportAndJSONFromGzipFile(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(explainSample))
	zw.Close()
	p := filepath.Join(t.TempDir(), "nvidia-bug-report.log.gz")
	if err := os.WriteFile(p, z.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runExplain(t, "", p)
	if code := exitCodeOf(err); code != 2 {
		t.Fatalf("exit code %d (%v), want 2 for a critical report", code, err)
	}
	for _, s := range []string{"GPU 0000:3b:00.0 (GPU-b6c3b2be-c55b-d076-fa0e-d464e4c7e08b): critical", "what to do now: reboot", "what it means:"} {
		if !strings.Contains(out, s) {
			t.Errorf("report lacks %q:\n%s", s, out)
		}
	}
	out, err = runExplain(t, "", "--output", "json", p)
	if code := exitCodeOf(err); code != 2 {
		t.Fatalf("--output json: exit code %d (%v), want 2", code, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `"kind":"xid"`) || !strings.Contains(lines[1], `"severity":"critical"`) {
		t.Errorf("json events:\n%s", out)
	}
}

func TestExplainCommandRejectsUnknownOutput(t *testing.T) {
	if _, err := runExplain(t, "", "--output", "yaml"); err == nil || !strings.Contains(err.Error(), "want text or json") {
		t.Errorf("err %v", err)
	}
	if _, err := runExplain(t, "", filepath.Join(t.TempDir(), "missing.log")); err == nil || !strings.Contains(err.Error(), "missing.log") {
		t.Errorf("err %v: want the file named", err)
	}
}

// TestExplainLinesExamplesWithEveryClassifier runs the 250 labelled real
// lines through the command as shipped, with every registered line
// classifier in front of the kernel one, so none of them may claim a
// kernel line.
func TestExplainLinesExamplesWithEveryClassifier(t *testing.T) {
	b, err := os.ReadFile("../../collectors/kmsg/testdata/kmsg-examples.tsv")
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")[1:]
	var in strings.Builder
	for _, r := range rows {
		in.WriteString(strings.SplitN(r, "\t", 2)[0] + "\n")
	}
	out, err := runExplain(t, in.String(), "--lines")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	if len(got) != len(rows) {
		t.Fatalf("%d objects for %d lines", len(got), len(rows))
	}
	for i, r := range rows {
		f := strings.Split(r, "\t")
		var o struct{ Kind, PCIBusID, ProcessName string }
		var m map[string]any
		json.Unmarshal([]byte(got[i]), &m)
		o.Kind, _ = m["kind"].(string)
		o.PCIBusID, _ = m["pci_bus_id"].(string)
		o.ProcessName, _ = m["process_name"].(string)
		num := func(k string) string {
			if v, ok := m[k].(float64); ok {
				return strconv.FormatFloat(v, 'f', -1, 64)
			}
			return ""
		}
		if o.Kind != f[2] || o.PCIBusID != f[3] || num("xid") != f[4] || num("pid") != f[5] || o.ProcessName != f[6] {
			t.Errorf("example %d (%s): got %s\n  line %q", i+2, f[1], got[i], f[0])
		}
	}
}

// explain streams: two million lines are explained in bounded memory, and
// a .gz cut short is reported up to the cut, saying where it stopped.
func TestExplainStreamsALargeLogAndReportsACutOne(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.log.gz")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	bw := bufio.NewWriter(zw)
	const n = 2_000_000
	for i := range n {
		switch i % 4 {
		case 0:
			fmt.Fprintf(bw, "[%d.000000] NVRM: Xid (PCI:0000:%02x:00): 13, pid=%d, name=proc%d, Graphics Exception on GPC %d\n", i, i%8, i, i, i)
		case 1:
			fmt.Fprintf(bw, "[%d.000000] NVRM: Xid (PCI:0000:%02x:00): 31, pid=%d, name=python, Ch 0000%04x, intr 10000000. MMU Fault\n", i, i%8, i, i%65536)
		default:
			fmt.Fprintf(bw, "[%d.000000] usb 1-1: new high-speed USB device number %d using xhci_hcd\n", i, i)
		}
	}
	bw.Flush()
	zw.Close()
	f.Close()

	cmd := exec.Command(gpuwardenBinary(t), "explain", big)
	out, err := cmd.Output()
	if code := exitCodeOf(err); code != 1 {
		t.Fatalf("explain: %v, want exit 1 for a report of warnings\n%s", err, out)
	}
	maxRSS := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss / 1024 // KiB to MiB
	if !strings.Contains(string(out), "2000000 lines read, 1000000 events, 4 devices named") || !strings.Contains(string(out), "250000 times") {
		t.Errorf("report:\n%s", out)
	}
	if maxRSS > 200 {
		t.Errorf("explain of %d lines peaked at %d MiB, want under 200", n, maxRSS)
	}
	t.Logf("%d lines: peak RSS %d MiB", n, maxRSS)

	// The same file cut in the middle: the report of what came before.
	b, _ := os.ReadFile(big)
	cut := filepath.Join(dir, "cut.log.gz")
	os.WriteFile(cut, b[:len(b)/2], 0o644)
	out, err = exec.Command(gpuwardenBinary(t), "explain", cut).Output()
	if code := exitCodeOf(err); code != 1 {
		t.Fatalf("a cut .gz of warnings: %v, want exit 1 after the report", err)
	}
	if !strings.Contains(string(out), "The input ended early after line") || !strings.Contains(string(out), "GPU 0000:01:00") {
		t.Errorf("report of a cut file:\n%s", out)
	}
}

// exitCodeOf is the exit code an error from a command (run in-process or as
// the binary) stands for: 0 for none, 1 for a plain error.
func exitCodeOf(err error) int {
	var ee *exitError
	var pe *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &pe):
		return pe.ExitCode()
	}
	return 1
}
