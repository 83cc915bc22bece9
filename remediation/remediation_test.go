package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/source"
	"github.com/gpuwarden/gpuwarden/remediation/fleet"
)

var quiet = slog.New(slog.DiscardHandler)

func mustConfig(t testing.TB, y string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(y), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c == nil {
		t.Fatal("no remediation section")
	}
	return c
}

// A State with two GPUs, as the GPU collector would leave it.
func twoGPUs(t testing.TB) *agent.State {
	st := agent.NewState("node1", 0, time.Hour, nil)
	now := time.Now()
	var smps []*gpu.Sample
	for i, bus := range []string{"00000000:3B:00.0", "00000000:5D:00.0"} {
		smps = append(smps, &gpu.Sample{GPU: gpu.Info{Index: i, UUID: fmt.Sprintf("GPU-0000000%d-aaaa-bbbb-cccc-dddddddddddd", i), PCIBusID: bus, Name: "H100"},
			Time: now, Values: make([]float64, len(gpu.Fields)), Status: make([]gpu.Status, len(gpu.Fields))})
	}
	st.ApplyRound(gpu.Round{Time: now, DriverVersion: "550.54.15", Samples: smps})
	return st
}

func xidNotice(t testing.TB, st *agent.State, line string) agent.Notice {
	t.Helper()
	ev := kmsg.RecordEvent(kmsg.Record{Message: line}, "", time.Now())
	if ev.Kind == event.KindUnrelated {
		t.Fatalf("not a driver line: %q", line)
	}
	ev.Source = "kmsg"
	ev = st.Locate(ev)
	return agent.Notice{Event: &ev}
}

type memAudit struct {
	mu   sync.Mutex
	recs []Decision
}

func (m *memAudit) Append(rec any) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, rec.(Decision))
	return nil
}

func (m *memAudit) outcomes() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for _, d := range m.recs {
		k := d.Outcome
		if d.Reason != "" {
			k += ":" + d.Reason
		}
		out[k]++
	}
	return out
}

const drainRule = `
remediation:
  dry_run: %s
  node: node1
  hooks:
    drain:
      argv: [%q, "--fixed", "arg"]
      class: drain
      timeout: 5s
  rules:
    - name: xid-drain
      match: {kind: [xid], code: [79, 13]}
      hooks: [drain]
      cooldown: %s
      rate: {count: %d, window: 1m}
`

// The hook gets the event as JSON on stdin and a few checked variables;
// a hostile process name in the kernel line is inert data: nothing it
// names runs, and it reaches neither argv nor the environment.
func TestAHostileProcessNameReachesTheHookAsInertData(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	os.WriteFile(hook, []byte("#!/bin/sh\ncat > "+dir+"/stdin.json\nenv > "+dir+"/env.txt\nprintf '%s\\n' \"$@\" > "+dir+"/argv.txt\n"), 0o755)
	canary := filepath.Join(dir, "pwned")
	st := twoGPUs(t)
	a := &memAudit{}
	e := New(mustConfig(t, fmt.Sprintf(drainRule, "false", hook, "0s", 100)), st, Options{StateDir: dir, Audit: a, BootID: "b1", Log: quiet})
	names := []string{"$(touch " + canary + ")", "`touch " + canary + "`", ";touch " + canary, "a\ntouch " + canary}
	for i, name := range names {
		n := xidNotice(t, st, fmt.Sprintf("NVRM: Xid (PCI:0000:3b:00): 13, pid=%d, name=%s, Graphics Exception", 100+i, name))
		e.Handle(context.Background(), n)
		waitFor(t, func() bool { return a.outcomes()[OutcomeRan] == i+1 })
		b, _ := os.ReadFile(filepath.Join(dir, "stdin.json"))
		var in hookInput
		if err := json.Unmarshal(b, &in); err != nil {
			t.Fatalf("stdin is not JSON: %v\n%s", err, b)
		}
		if in.Cause.Event == nil || in.Cause.Event.Fields[kmsg.FieldProcessName] == "" && !strings.Contains(in.Cause.Event.Raw, "touch") {
			t.Errorf("the event did not reach the hook's stdin: %s", b)
		}
		env, _ := os.ReadFile(filepath.Join(dir, "env.txt"))
		argv, _ := os.ReadFile(filepath.Join(dir, "argv.txt"))
		if strings.Contains(string(env), "touch") || string(argv) != "--fixed\narg\n" {
			t.Errorf("event text reached the environment or argv:\nenv:\n%s\nargv:\n%s", env, argv)
		}
		if !strings.Contains(string(env), "GPUWARDEN_GPU_UUID=GPU-00000000-aaaa") || !strings.Contains(string(env), "GPUWARDEN_EVENT_CODE=13") ||
			!strings.Contains(string(env), "GPUWARDEN_REASON=gpuwarden: xid-drain: xid 13 on GPU 0 (00000000:3B:00.0)") {
			t.Errorf("hook environment:\n%s", env)
		}
	}
	if _, err := os.Stat(canary); err == nil {
		t.Fatal("a process name in a kernel line ran a command")
	}
}

// A hook that hangs is killed at its timeout with its children, and the
// next notice is decided as usual.
func TestAHangingHookIsKilledWithItsChildren(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hang")
	pidFile := filepath.Join(dir, "child.pid")
	os.WriteFile(hook, []byte("#!/bin/sh\nsleep 300 &\necho $! > "+pidFile+"\nwait\n"), 0o755)
	res := runHook(context.Background(), []string{hook}, nil, nil, 500*time.Millisecond)
	if !res.TimedOut || res.ExitCode == 0 {
		t.Fatalf("result %+v, want timed out", res)
	}
	if res.Duration > 4*time.Second {
		t.Errorf("took %s to kill", res.Duration)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	waitFor(t, func() bool { return syscall.Kill(pid, 0) != nil })
}

func TestHookOutputIsCappedAndExitCodeKept(t *testing.T) {
	res := runHook(context.Background(), []string{"/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; exit 7"}, nil, nil, 5*time.Second)
	if res.ExitCode != 7 || len(res.Output) > maxOutput+100 || !strings.Contains(res.Output, "more bytes not kept") {
		t.Errorf("exit %d, %d bytes of output", res.ExitCode, len(res.Output))
	}
}

// 1000 matching events in a second fire the hook at most as often as the
// rule's rate limit allows; the rest are audited as held.
func TestAThousandEventsFireAtMostTheRateLimit(t *testing.T) {
	dir := t.TempDir()
	st := twoGPUs(t)
	a := &memAudit{}
	e := New(mustConfig(t, fmt.Sprintf(drainRule, "true", "/bin/true", "0s", 3)), st, Options{StateDir: dir, Audit: a, Log: quiet})
	for i := range 1000 {
		e.Handle(context.Background(), xidNotice(t, st, fmt.Sprintf("NVRM: Xid (PCI:0000:%s:00): 13, pid=%d, name=x, Graphics Exception", []string{"3b", "5d"}[i%2], i)))
	}
	got := a.outcomes()
	if got[OutcomeWouldRun] != 3 || got[OutcomeSuppressed+":"+ReasonRuleRate] != 997 {
		t.Errorf("outcomes %v, want 3 would_run and 997 held by the rate limit", got)
	}
	if d := a.recs[0]; !d.DryRun || len(d.Argv) != 3 || d.Argv[0] != "/bin/true" || d.Detail != "dry run: nothing was run" {
		t.Errorf("dry run decision %+v: want the exact argv", d)
	}
}

// An agent restarted mid-cooldown honours it: the ledger outlives the
// process.
func TestACooldownSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	st := twoGPUs(t)
	cfg := fmt.Sprintf(drainRule, "true", "/bin/true", "1h", 100)
	a := &memAudit{}
	e := New(mustConfig(t, cfg), st, Options{StateDir: dir, Audit: a, Log: quiet})
	line := "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus."
	e.Handle(context.Background(), xidNotice(t, st, line))
	b := &memAudit{}
	again := New(mustConfig(t, cfg), st, Options{StateDir: dir, Audit: b, Log: quiet})
	again.Handle(context.Background(), xidNotice(t, st, line))
	again.Handle(context.Background(), xidNotice(t, st, "NVRM: Xid (PCI:0000:5d:00): 79, pid=1, GPU has fallen off the bus."))
	if got := b.outcomes(); got[OutcomeSuppressed+":"+ReasonCooldown] != 1 || got[OutcomeWouldRun] != 1 {
		t.Errorf("after a restart: %v, want GPU 0 held by its cooldown and GPU 1 (no cooldown yet) would run", got)
	}
}

// A ledger cut short mid-write is detected, moved aside, reported as a
// host reason, and blocks every action until an operator acknowledges.
func TestATruncatedLedgerBlocksUntilAck(t *testing.T) {
	dir := t.TempDir()
	st := twoGPUs(t)
	cfg := fmt.Sprintf(drainRule, "true", "/bin/true", "0s", 100)
	e := New(mustConfig(t, cfg), st, Options{StateDir: dir, Audit: &memAudit{}, Log: quiet})
	e.Handle(context.Background(), xidNotice(t, st, "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus."))
	path := filepath.Join(dir, LedgerFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, b[:len(b)/2], 0o600)

	a := &memAudit{}
	e = New(mustConfig(t, cfg), st, Options{StateDir: dir, Audit: a, Log: quiet})
	if matches, _ := filepath.Glob(path + ".corrupt-*"); len(matches) != 1 {
		t.Errorf("the corrupt ledger was not moved aside: %v", matches)
	}
	if h := st.Snapshot().Health; !strings.Contains(strings.Join(h.Reasons, ";"), "remediation ledger") || h.Fix != "gpuwarden remediation ack" {
		t.Errorf("host health does not report the corrupt ledger: %+v", h)
	}
	n := xidNotice(t, st, "NVRM: Xid (PCI:0000:5d:00): 79, pid=2, GPU has fallen off the bus.")
	e.Handle(context.Background(), n)
	if got := a.outcomes(); got[OutcomeSuppressed+":"+ReasonBlocked] != 1 {
		t.Errorf("with a corrupt ledger: %v, want held as blocked", got)
	}
	e.Ack("uid 0 pid 1")
	e.Handle(context.Background(), n)
	if got := a.outcomes(); got[OutcomeWouldRun] != 1 {
		t.Errorf("after ack: %v, want it to run", got)
	}
}

// The breaker opens on the Nth GPU and nothing fires until it is reset.
func TestTheBreakerOpensOnTheNthGPU(t *testing.T) {
	dir := t.TempDir()
	st := agent.NewState("node1", 0, time.Hour, nil)
	var smps []*gpu.Sample
	for i := range 4 {
		smps = append(smps, &gpu.Sample{GPU: gpu.Info{Index: i, UUID: fmt.Sprintf("GPU-%08d-0000-0000-0000-000000000000", i), PCIBusID: fmt.Sprintf("00000000:%02X:00.0", 0x10+i)},
			Time: time.Now(), Values: make([]float64, len(gpu.Fields)), Status: make([]gpu.Status, len(gpu.Fields))})
	}
	st.ApplyRound(gpu.Round{Time: time.Now(), Samples: smps})
	a := &memAudit{}
	cfg := mustConfig(t, fmt.Sprintf(drainRule, "true", "/bin/true", "0s", 100)+`  limits:
    breaker: {gpus: 2, window: 10m}
`)
	e := New(cfg, st, Options{StateDir: dir, Audit: a, Log: quiet})
	for i := range 4 {
		e.Handle(context.Background(), xidNotice(t, st, fmt.Sprintf("NVRM: Xid (PCI:0000:%02x:00): 79, pid=1, GPU has fallen off the bus.", 0x10+i)))
	}
	if got := a.outcomes(); got[OutcomeWouldRun] != 2 || got[OutcomeSuppressed+":"+ReasonBreaker] != 2 {
		t.Errorf("outcomes %v, want 2 run and the 3rd GPU to open the breaker", got)
	}
	if v := metric(st, "gpuwarden_remediation_breaker_open"); v != 1 {
		t.Errorf("gpuwarden_remediation_breaker_open = %v", v)
	}
	e.ResetBreaker("uid 0")
	e.Handle(context.Background(), xidNotice(t, st, "NVRM: Xid (PCI:0000:10:00): 13, pid=1, name=x, Graphics Exception"))
	if got := a.outcomes(); got[OutcomeWouldRun] != 3 {
		t.Errorf("after reset: %v", got)
	}
}

func metric(st *agent.State, name string) float64 {
	for _, s := range st.Snapshot().SourceStats {
		for _, m := range s.Metrics {
			if m.Name == name {
				return m.Value
			}
		}
	}
	return -1
}

const rebootRule = `
remediation:
  dry_run: true
  hooks:
    reboot: {argv: [/usr/lib/gpuwarden/hooks/reboot], class: reboot}
    reset: {argv: [/usr/lib/gpuwarden/hooks/gpu-reset], class: reset}
  limits:
    escalation: {boots: 2}
  rules:
    - name: reboot-on-79
      match: {kind: [xid], code: [79]}
      hooks: [reboot]
    - name: reset-on-13
      match: {kind: [xid], code: [13]}
      hooks: [reset]
`

// Never reboot into a kernel that would come up without a GPU driver.
func TestARebootIntoAKernelWithoutTheDriverIsRefused(t *testing.T) {
	st := twoGPUs(t)
	a := &memAudit{}
	e := New(mustConfig(t, rebootRule), st, Options{StateDir: t.TempDir(), Audit: a, Log: quiet})
	n := xidNotice(t, st, "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.")
	e.Handle(context.Background(), n) // no DKMS checks at all
	st.SetStats("dkms", []source.Metric{{Name: "gpuwarden_check_status", Labels: []string{"check", "next_boot_module"}, Value: 2},
		{Name: "gpuwarden_kernel_info", Labels: []string{"running", "6.1.0-18-amd64", "next_boot", "6.1.0-20-amd64"}, Value: 1}})
	st.Refresh()
	e.Handle(context.Background(), n)
	if got := a.outcomes(); got[OutcomeSuppressed+":"+ReasonDriverGuard] != 2 {
		t.Fatalf("outcomes %v, want both reboots refused", got)
	}
	if d := a.recs[1].Detail; !strings.Contains(d, "no NVIDIA module") || !strings.Contains(d, "6.1.0-20-amd64") {
		t.Errorf("refusal says %q", d)
	}
	st.SetStats("dkms", []source.Metric{{Name: "gpuwarden_check_status", Labels: []string{"check", "next_boot_module"}, Value: 0}})
	st.Refresh()
	e.Handle(context.Background(), n)
	if got := a.outcomes(); got[OutcomeWouldRun] != 1 {
		t.Errorf("with the module there: %v", got)
	}
}

// The same Xid on the same GPU after N boots that reset or rebooted for
// it is the hardware: resets and reboots stop, saying inspect or RMA.
func TestEscalationAfterNBoots(t *testing.T) {
	dir := t.TempDir()
	st := twoGPUs(t)
	cfg := strings.Replace(rebootRule, "dry_run: true", "dry_run: false", 1)
	line := "NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=x, Graphics Exception"
	for boot := 1; boot <= 3; boot++ {
		a := &memAudit{}
		e := New(mustConfig(t, cfg), st, Options{StateDir: dir, Audit: a, BootID: fmt.Sprintf("boot-%d", boot), Log: quiet})
		e.run = func(context.Context, []string, map[string]string, []byte, time.Duration) Result {
			return Result{ExitCode: 0}
		}
		ctx, cancel := context.WithCancel(context.Background())
		e.Handle(ctx, xidNotice(t, st, line))
		waitFor(t, func() bool { return len(a.outcomes()) > 0 })
		cancel()
		got := a.outcomes()
		switch boot {
		case 1, 2:
			if got[OutcomeRan] != 1 {
				t.Errorf("boot %d: %v, want the reset to run", boot, got)
			}
		case 3:
			if got[OutcomeSuppressed+":"+ReasonEscalation] != 1 || !strings.Contains(a.recs[0].Detail, "RMA") {
				t.Errorf("boot 3: %v %q, want escalation saying inspect or RMA", got, a.recs[0].Detail)
			}
		}
	}
}

// --config.check reports every problem at once, each with its line.
func TestEveryConfigProblemIsReportedWithItsLine(t *testing.T) {
	_, err := ParseConfig([]byte(`log:
  level: info
remediation:
  dry_run: maybe
  hooks:
    drain:
      argv: [relative/path]
      class: drainish
      extra: 1
  rules:
    - name: Bad Name
      match: {}
      hooks: [nope]
    - name: ok
      match: {kind: [xid], action: [explode]}
      hooks: [drain]
`), "gpuwarden.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"gpuwarden.yaml:4", "dry_run"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	_, err = ParseConfig([]byte(`remediation:
  hooks:
    drain:
      argv: [relative/path]
      class: drainish
      extra: 1
  rules:
    - name: Bad Name
      match: {}
      hooks: [nope]
    - name: ok
      match: {kind: [xid], action: [explode]}
      hooks: [drain]
`), "gpuwarden.yaml")
	var ce *ConfigError
	if err == nil || !errorsAs(err, &ce) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{
		"gpuwarden.yaml:6: unknown key remediation.hooks.drain.extra",
		"gpuwarden.yaml:3: hook drain: argv[0] \"relative/path\": want an absolute path",
		"gpuwarden.yaml:3: hook drain: class \"drainish\"",
		"gpuwarden.yaml:8: rule 1: name \"Bad Name\"",
		"gpuwarden.yaml:8: rule \"Bad Name\": hook \"nope\" is not defined",
		"a rule that matches everything is refused",
		"gpuwarden.yaml:11: rule \"ok\": match.action \"explode\"",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(ce.Problems, "\n"))
		}
	}
}

func errorsAs(err error, target **ConfigError) bool {
	ce, ok := err.(*ConfigError)
	if ok {
		*target = ce
	}
	return ok
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type stubGuard struct {
	allow    bool
	reason   string
	released int
}

func (g *stubGuard) Check(context.Context, string) (fleet.Decision, fleet.Release, error) {
	return fleet.Decision{Allowed: g.allow, Reason: g.reason}, func(context.Context) error { g.released++; return nil }, nil
}

// A drain is held while the fleet guard says the fleet is at its limit,
// and runs (giving its slot back) once it is not; a reboot keeps its slot.
func TestTheFleetGuardHoldsADrain(t *testing.T) {
	st := twoGPUs(t)
	a := &memAudit{}
	g := &stubGuard{reason: `drain held: Prometheus query "q" is 2, at or above the limit 2`}
	e := New(mustConfig(t, fmt.Sprintf(drainRule, "false", "/bin/true", "0s", 100)), st, Options{StateDir: t.TempDir(), Audit: a, Log: quiet, Guard: g})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.Handle(ctx, xidNotice(t, st, "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus."))
	waitFor(t, func() bool { return len(a.outcomes()) > 0 })
	if got := a.outcomes(); got[OutcomeSuppressed+":"+ReasonFleetGuard] != 1 || !strings.Contains(a.recs[0].Detail, "limit 2") {
		t.Fatalf("outcomes %v %q, want held by the fleet guard", got, a.recs[0].Detail)
	}
	g.allow, g.reason = true, ""
	e.Handle(ctx, xidNotice(t, st, "NVRM: Xid (PCI:0000:5d:00): 79, pid=1, GPU has fallen off the bus."))
	waitFor(t, func() bool { return a.outcomes()[OutcomeRan] == 1 })
	// The worker audits and saves the ledger under the engine's lock: once
	// Recent has the lock, the save is done and the state dir can go.
	e.Recent()
	if g.released != 2 {
		t.Errorf("released %d slots, want both drains' back", g.released)
	}
}
