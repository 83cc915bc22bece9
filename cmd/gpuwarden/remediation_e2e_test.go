package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/remediation"
	"github.com/gpuwarden/gpuwarden/remediation/audit"
)

// remediationAgent runs a replay agent beside the live kernel log with
// one live (not dry-run) rule per line kind, whose hook records what it
// was given: its stdin, one JSON document a line, and its environment.
func remediationAgent(t *testing.T) (a *agentProc, bus, dir string) {
	t.Helper()
	a, bus, dir, _ = remediationAgentArgs(t)
	return a, bus, dir
}

// remediationAgentArgs is remediationAgent, and the arguments to start it
// again on the same state.
func remediationAgentArgs(t *testing.T) (a *agentProc, bus, dir string, args []string) {
	t.Helper()
	trace, bus, _ := uniqueGPUTrace(t)
	dir = t.TempDir()
	os.Chmod(dir, 0o755)
	hook := filepath.Join(dir, "record-hook")
	script := "#!/bin/sh\n{ cat; echo; } >> " + dir + "/stdin.jsonl\nenv >> " + dir + "/env.txt\necho '--' >> " + dir + "/env.txt\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gpuwarden.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`remediation:
  dry_run: false
  node: e2e-node
  socket: %s
  hooks:
    record: {argv: [%q, fixed-arg], class: other, timeout: 10s}
  rules:
    - name: xid-13
      match: {kind: [xid], code: [13]}
      hooks: [record]
      rate: {count: 100, window: 1m}
    - name: gpu-gone
      match: {kind: [fallen_off_bus, xid], action: [reboot]}
      hooks: [record]
    - name: xid-31
      match: {kind: [xid], code: [31]}
      hooks: [record]
      cooldown: 1h
`, filepath.Join(dir, "control.sock"), hook)), 0o644)
	args = []string{"--config", cfg, "--backend", "replay", "--replay", trace, "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.kmsg=true", "--collector.dkms=false", "--state.dir", filepath.Join(dir, "state")}
	a = startKmsgAgent(t, args)
	return a, bus, dir, args
}

func startKmsgAgent(t *testing.T, args []string) *agentProc {
	a := startAgent(t, nil, args...)
	eventually(t, 10*time.Second, "kmsg collector up", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="kmsg"`)
		return v == "1"
	})
	return a
}

func hookInputs(t *testing.T, dir string) []map[string]any {
	f, err := os.Open(filepath.Join(dir, "stdin.jsonl"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("the hook's stdin is not JSON: %v\n%s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// Process names in real kernel lines that a shell would run reach the hook
// only as JSON on stdin: nothing they name runs, and neither argv nor the
// environment carries them.
func TestHostileProcessNamesReachAHookAsInertData(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	a, bus, dir := remediationAgent(t)
	canary := filepath.Join(dir, "pwned")
	names := []string{"$(touch " + canary + ")", "`touch " + canary + "`", ";touch " + canary, "x\ntouch " + canary}
	for i, name := range names {
		writeKmsgEach(t, []string{fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=%d, name=%s, Graphics Exception", bus, 4000+i, name)})
	}
	eventually(t, 10*time.Second, "the hook ran for each line", func() bool { return len(hookInputs(t, dir)) == len(names) })
	if _, err := os.Stat(canary); err == nil {
		t.Fatal("a process name in a kernel line ran a command")
	}
	raw := ""
	for _, in := range hookInputs(t, dir) {
		b, _ := json.Marshal(in["cause"])
		raw += string(b)
	}
	for _, name := range names[:3] {
		if !strings.Contains(raw, strings.ReplaceAll(name, "`", "`")) {
			t.Errorf("the hook's stdin does not carry the name %q verbatim", name)
		}
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env.txt"))
	if strings.Contains(string(env), "touch") {
		t.Errorf("event text reached the hook's environment:\n%s", env)
	}
	if !strings.Contains(string(env), "GPUWARDEN_NODE=e2e-node") || !strings.Contains(string(env), "GPUWARDEN_EVENT_CODE=13") ||
		!strings.Contains(string(env), "PATH=/usr/sbin:/usr/bin:/sbin:/bin") {
		t.Errorf("hook environment:\n%s", env)
	}
	// The decision is recorded once the hook has exited: wait for all.
	var decisions []remediation.Decision
	ran := func() int {
		decisions = nil
		if err := json.Unmarshal([]byte(a.mustGet(t, "/v1/remediation")), &decisions); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, d := range decisions {
			if d.Outcome == remediation.OutcomeRan && d.Rule == "xid-13" {
				n++
			}
		}
		return n
	}
	eventually(t, 10*time.Second, "every run listed in /v1/remediation", func() bool { return ran() == len(names) })
	for _, d := range decisions {
		if d.Outcome == remediation.OutcomeRan && (len(d.Argv) != 2 || d.Argv[1] != "fixed-arg" || d.Result == nil || d.Result.ExitCode != 0) {
			t.Errorf("decision %+v", d)
		}
	}
}

// The unprivileged forgery of the kernel-log issue triggers nothing.
func TestAnUnprivilegedForgeryTriggersNoHook(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a program as nobody and reads /dev/kmsg")
	}
	for _, tool := range []string{"gcc", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	if b, err := os.ReadFile("/proc/sys/debug/exception-trace"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Skip("the kernel prints segfault reports only with debug.exception-trace=1")
	}
	a, bus, dir := remediationAgent(t)
	rejected := func() string {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_kmsg_rejected_records_total", `reason="process_name_prefix"`)
		return v
	}
	before := rejected()
	forgeFallenOffTheBus(t, bus)
	eventually(t, 10*time.Second, "the forgery counted as rejected", func() bool { return rejected() != before })
	time.Sleep(500 * time.Millisecond)
	if in := hookInputs(t, dir); len(in) != 0 {
		t.Errorf("a forgery ran the hook: %v", in)
	}
	// And a real line does, so the rule was live all along.
	writeKmsgEach(t, []string{fmt.Sprintf("<3>NVRM: GPU %s.0: GPU has fallen off the bus.", bus)})
	eventually(t, 10*time.Second, "the real line ran the hook", func() bool { return len(hookInputs(t, dir)) == 1 })
}

// A reload with a bad rule is refused before anything changes: the
// running rules keep acting, and the reload metric says it failed.
func TestABadRuleOnReloadKeepsTheRunningRules(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	a, bus, dir := remediationAgent(t)
	cfg := filepath.Join(dir, "gpuwarden.yaml")
	good, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(good), "hooks: [record]", "hooks: [no-such-hook]", 1)), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the reload refused", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_config_last_reload_successful")
		return v == "0"
	})
	// The log line comes through a pipe: it may trail the metric.
	eventually(t, 5*time.Second, "the refusal names the bad rule", func() bool {
		return strings.Contains(a.log.String(), `hook \"no-such-hook\" is not defined`)
	})
	writeKmsgEach(t, []string{fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=77, name=after-reload, Graphics Exception", bus)})
	eventually(t, 10*time.Second, "the running rule still fires", func() bool { return len(hookInputs(t, dir)) == 1 })
}

// An agent restarted mid-cooldown honours it: the ledger outlives the
// process, whichever way it ends.
func TestARestartedAgentHonoursACooldown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	a, bus, dir, args := remediationAgentArgs(t)
	line := func(pid int) string {
		return fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 31, pid=%d, name=cooldown, Ch 00000010, intr 00000000. MMU Fault", bus, pid)
	}
	writeKmsgEach(t, []string{line(1)})
	eventually(t, 10*time.Second, "the first Xid 31 ran the hook", func() bool { return len(hookInputs(t, dir)) == 1 })
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	b := startKmsgAgent(t, args)
	writeKmsgEach(t, []string{line(2)})
	eventually(t, 10*time.Second, "the second held by the cooldown", func() bool {
		v, _ := metricValue(b.mustGet(t, "/metrics"), "gpuwarden_remediation_suppressed_total", `rule="xid-31"`, `reason="cooldown"`)
		return v == "1"
	})
	if n := len(hookInputs(t, dir)); n != 1 {
		t.Errorf("the hook ran %d times across the restart, want once", n)
	}
}

// A ledger cut short mid-write blocks every action of a real agent until
// an operator acknowledges over the control socket; list shows why.
func TestATruncatedLedgerBlocksTheAgentUntilAck(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	a, bus, dir, args := remediationAgentArgs(t)
	writeKmsgEach(t, []string{fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=1, name=before, Graphics Exception", bus)})
	eventually(t, 10*time.Second, "the hook ran", func() bool { return len(hookInputs(t, dir)) == 1 })
	a.stop()
	ledger := filepath.Join(dir, "state", remediation.LedgerFile)
	b, err := os.ReadFile(ledger)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(ledger, b[:len(b)/2], 0o600)

	a = startKmsgAgent(t, args)
	if h := a.mustGet(t, "/v1/health"); !strings.Contains(h, "remediation ledger") || !strings.Contains(h, "gpuwarden remediation ack") {
		t.Errorf("/v1/health does not report the corrupt ledger:\n%s", h)
	}
	sock := filepath.Join(dir, "control.sock")
	list, err := exec.Command(gpuwardenBinary(t), "remediation", "list", "--socket", sock).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "corrupt") {
		t.Errorf("remediation list: %v\n%s", err, list)
	}
	writeKmsgEach(t, []string{fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=2, name=blocked, Graphics Exception", bus)})
	eventually(t, 10*time.Second, "the line held as blocked", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_remediation_suppressed_total", `reason="blocked"`)
		return v == "1"
	})
	if out, err := exec.Command(gpuwardenBinary(t), "remediation", "ack", "--socket", sock).CombinedOutput(); err != nil {
		t.Fatalf("ack: %v\n%s", err, out)
	}
	writeKmsgEach(t, []string{fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=3, name=after-ack, Graphics Exception", bus)})
	eventually(t, 10*time.Second, "the hook ran after ack", func() bool { return len(hookInputs(t, dir)) == 2 })
	// Every decision is in the audit log, the ack with who made it.
	recs, err := audit.Read(remediation.AuditPath(filepath.Join(dir, "state")), 0)
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []string
	for _, r := range recs {
		var d remediation.Decision
		json.Unmarshal(r, &d)
		outcomes = append(outcomes, d.Outcome+"/"+d.Reason)
		if d.Outcome == "ack" && !strings.HasPrefix(d.Operator, "uid 0 pid ") {
			t.Errorf("ack audited without who: %+v", d)
		}
	}
	if got := strings.Join(outcomes, " "); got != "ran/ suppressed/blocked ack/ ran/" {
		t.Errorf("audit log outcomes %q", got)
	}
}
