package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runBinary runs the built gpuwarden with stdin and returns its stdout,
// stderr and exit code.
func runBinary(t *testing.T, stdin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(gpuwardenBinary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestExplainExitsByItsVerdict(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		args        []string
		want        int
	}{
		{"nothing NVIDIA", "[    1.5] xhci_hcd 0000:00:14.0: xHCI Host Controller\n", nil, 0},
		{"the driver banner alone", "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.127.05  Tue Oct  8 03:12:01 UTC 2024\n", nil, 0},
		{"nvidia-smi's mismatch", "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 570.124\n", nil, 2},
		{"nvidia-container-cli's mismatch", "nvidia-container-cli: initialization error: nvml error: driver/library version mismatch: unknown\n", nil, 2},
		{"a module built, not installed", "nvidia/550.127.05, 6.1.0-28-amd64, x86_64: built\n", nil, 1},
		{"an elided timestamp", "[...] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.\n", nil, 2},
		{"JSON has the same verdict", "[...] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.\n", []string{"-o", "json"}, 2},
		{"--lines classifies, it does not judge", "Failed to initialize NVML: Driver/library version mismatch\n", []string{"--lines"}, 0},
		{"an unknown flag", "", []string{"--bogus"}, 3},
		{"two files", "", []string{"a", "b"}, 3},
		{"a file that is not there", "", []string{filepath.Join(t.TempDir(), "absent.log")}, 3},
		{"a bad --output", "", []string{"-o", "yaml"}, 3},
		{"a bad --color", "", []string{"--color", "sometimes"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runBinary(t, tc.input, nil, append([]string{"explain"}, tc.args...)...)
			if code != tc.want {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.want, out, errOut)
			}
		})
	}
	help, _, _ := runBinary(t, "", nil, "explain", "--help")
	if !strings.Contains(help, "Exit codes") || !strings.Contains(help, "2 critical") {
		t.Errorf("--help does not give the exit codes:\n%s", help)
	}
}

func TestExplainJSONOmitsAnUnknownTime(t *testing.T) {
	out, _, _ := runBinary(t, "[...] NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=x, GPU has fallen off the bus.\n", nil, "explain", "-o", "json")
	var ev map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ev); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, ok := ev["time"]; ok {
		t.Errorf("an event with no time in the input has \"time\": %s", out)
	}
	if ev["kind"] != "xid" {
		t.Errorf("kind %v, want xid: %s", ev["kind"], out)
	}
}

// openPTY opens a pseudo-terminal pair: the controlling side and the
// terminal a child is given.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// onTerminal runs gpuwarden with stdout (and stdin) on a real terminal and
// returns what the terminal showed. input, when not empty, is typed at it.
func onTerminal(t *testing.T, env []string, input string, args ...string) string {
	t.Helper()
	ptmx, tty := openPTY(t)
	cmd := exec.Command(gpuwardenBinary(t), args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	if input != "" {
		ptmx.WriteString(input)
	}
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(ptmx); done <- b }()
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%v did not end on a terminal", args)
	}
	// The child is gone: reading the controlling side ends (EIO).
	select {
	case b := <-done:
		return string(b)
	case <-time.After(5 * time.Second):
		t.Fatal("the terminal's output did not end")
	}
	return ""
}

func TestCheckColoursLevelsOnATerminalOnly(t *testing.T) {
	args := []string{"check", "--path.rootfs", "testdata/rootfs/new-kernel-no-module", "--path.procfs", "proc", "--path.sysfs", "sys"}
	if _, err := os.Stat("testdata/rootfs/new-kernel-no-module"); err != nil {
		args[2] = "../../testdata/rootfs/new-kernel-no-module"
	}
	const red, grey = "\x1b[31m", "\x1b[90m"

	tty := onTerminal(t, []string{"TERM=xterm", "NO_COLOR="}, "", args...)
	if !strings.Contains(tty, red+"CRITICAL") || !strings.Contains(tty, red+"critical") || !strings.Contains(tty, grey+"skipped") {
		t.Errorf("on a terminal the levels are not coloured:\n%q", tty)
	}
	for name, env := range map[string][]string{
		"NO_COLOR":  {"TERM=xterm", "NO_COLOR=1"},
		"TERM=dumb": {"TERM=dumb", "NO_COLOR="},
	} {
		if out := onTerminal(t, env, "", args...); strings.Contains(out, "\x1b[") {
			t.Errorf("%s on a terminal still colours:\n%q", name, out)
		}
	}
	if out := onTerminal(t, []string{"TERM=xterm"}, "", append(args, "--color=never")...); strings.Contains(out, "\x1b[") {
		t.Errorf("--color=never on a terminal still colours:\n%q", out)
	}
	piped, _, code := runBinary(t, "", []string{"TERM=xterm", "NO_COLOR="}, args...)
	if code != 2 || strings.Contains(piped, "\x1b[") || !strings.Contains(piped, "critical") {
		t.Errorf("into a pipe (exit %d) the output is coloured or lost:\n%q", code, piped)
	}
	forced, _, _ := runBinary(t, "", []string{"TERM=xterm"}, append(args, "--color=always")...)
	if !strings.Contains(forced, red+"critical") {
		t.Errorf("--color=always into a pipe does not colour:\n%q", forced)
	}
	// The colours are ours alone: the table is escaped before it is painted.
	if strings.Count(forced, "\x1b[") != 2*strings.Count(strings.ReplaceAll(forced, "\x1b[0m", ""), "\x1b[") {
		t.Errorf("an escape sequence without its reset:\n%q", forced)
	}
}

func TestExplainOnATerminalSaysWhatItReads(t *testing.T) {
	// Typed at the terminal: a line, then Ctrl-D to end the input.
	out := onTerminal(t, []string{"TERM=xterm", "NO_COLOR="}, "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=x, GPU has fallen off the bus.\n\x04", "explain")
	if !strings.Contains(out, "reading kernel-log text from standard input") {
		t.Errorf("explain waiting on a terminal says nothing of it:\n%q", out)
	}
	if !strings.Contains(out, "\x1b[31mcritical") {
		t.Errorf("the report on a terminal is not coloured:\n%q", out)
	}
	if piped, errOut, _ := runBinary(t, "", nil, "explain"); strings.Contains(piped+errOut, "reading kernel-log text") {
		t.Errorf("explain on a pipe talks to nobody: %q", piped+errOut)
	}
}

func TestCheckSaysSkippedAndUnknownInWords(t *testing.T) {
	// A root with nothing in it: no kernel, no boot loader, no driver.
	root := t.TempDir()
	for _, d := range []string{"proc", "sys", "boot", "lib/modules"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	table, _, _ := runBinary(t, "", []string{"NO_COLOR=1"}, "check", "--path.rootfs", root)
	for _, bad := range []string{"- (-)", "loaded not loaded", "not wired"} {
		if strings.Contains(table, bad) {
			t.Errorf("the table says %q:\n%s", bad, table)
		}
	}
	for _, want := range []string{"next boot kernel unknown", "no NVIDIA module loaded", "--path.rootfs is " + root + ", not /"} {
		if !strings.Contains(table, want) {
			t.Errorf("the table does not say %q:\n%s", want, table)
		}
	}
	js, _, _ := runBinary(t, "", nil, "check", "--path.rootfs", root, "-o", "json")
	var doc struct {
		Checks []struct{ Check, Level, Status string }
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range doc.Checks {
		row := ""
		for _, l := range strings.Split(table, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[1] == c.Check {
				row = f[0]
			}
		}
		if row != c.Status {
			t.Errorf("%s: the table says %q, the JSON's status %q", c.Check, row, c.Status)
		}
		if c.Check == checkGPUName && (c.Status != "skipped" || c.Level != "ok") {
			t.Errorf("%s: status %q level %q, want skipped and ok", c.Check, c.Status, c.Level)
		}
	}
}
