package remediation

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/source"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
	"github.com/gpuwarden/gpuwarden/internal/pattern"
	"github.com/gpuwarden/gpuwarden/remediation/fleet"
)

// Outcomes of a decision, as audited and counted.
const (
	OutcomeWouldRun   = "would_run"  // dry run: what would have run, argv and all
	OutcomeRan        = "ran"        // exit 0
	OutcomeFailed     = "failed"     // non-zero exit, timeout, or could not start
	OutcomeSuppressed = "suppressed" // a guard rail held it; Reason says which
)

// Reasons a decision is suppressed.
const (
	ReasonBlocked     = "blocked"      // the ledger was corrupt: waiting for ack
	ReasonBreaker     = "breaker"      // the circuit breaker is open
	ReasonCooldown    = "cooldown"     // the rule fired on this GPU within its cooldown
	ReasonRuleRate    = "rate_limit"   // the rule's rate limit
	ReasonHostRate    = "host_rate"    // the host's rate limit
	ReasonEscalation  = "escalation"   // seen after enough reboots: hardware
	ReasonDriverGuard = "driver_guard" // a reboot would come up without a GPU driver
	ReasonFleetGuard  = "fleet_guard"  // the fleet is at its limit
	ReasonBusy        = "busy"         // this GPU's hook queue is full
	ReasonEarlier     = "earlier_hook_failed"
)

// Decision is one audited decision: a hook that ran or would have, or
// what held it.
type Decision struct {
	Time     time.Time `json:"time"`
	Rule     string    `json:"rule"`
	Hook     string    `json:"hook,omitempty"`
	Outcome  string    `json:"outcome"`
	Reason   string    `json:"reason,omitempty"` // the suppression reason's name
	Detail   string    `json:"detail,omitempty"` // in words
	DryRun   bool      `json:"dry_run"`
	Argv     []string  `json:"argv,omitempty"`
	Env      []string  `json:"env,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	Subject  Cause     `json:"cause"`
	Operator string    `json:"operator,omitempty"` // for ack and reset-breaker
}

// Cause is the notice a decision answers, as the audit keeps it.
type Cause struct {
	GPU        event.GPURef      `json:"gpu"`
	Event      *event.Event      `json:"event,omitempty"`
	Transition *agent.Transition `json:"transition,omitempty"`
}

// Auditor is where decisions are recorded (the audit log).
type Auditor interface {
	Append(rec any) error
}

// Engine is the remediation subscriber: it matches notices against the
// rules, applies the guard rails, runs hooks (one at a time per GPU) and
// audits every decision.
type Engine struct {
	state    *agent.State
	stateDir string
	bootID   string
	log      *slog.Logger
	audit    Auditor
	guard    fleet.Guard
	run      func(ctx context.Context, argv []string, env map[string]string, stdin []byte, timeout time.Duration) Result
	now      func() time.Time

	mu         sync.Mutex
	cfg        *Config
	ledger     *Ledger
	ledgerErr  error
	recent     []Decision // newest last, bounded
	actions    map[[3]string]uint64
	suppressed map[[2]string]uint64
	workers    map[string]chan job
	wg         sync.WaitGroup
}

// Options are what an Engine needs besides its config.
type Options struct {
	StateDir string
	BootID   string
	Log      *slog.Logger
	Audit    Auditor
	// Guard overrides the config's fleet guard (tests).
	Guard fleet.Guard
}

// maxRecent is how many decisions /v1/remediation and `list` show.
const maxRecent = 200

// New returns an Engine over state. It loads the ledger: a corrupt one is
// moved aside, reported as a host reason, and blocks actions until ack.
func New(cfg *Config, state *agent.State, o Options) *Engine {
	e := &Engine{state: state, stateDir: o.StateDir, bootID: o.BootID, log: o.Log, audit: o.Audit, guard: o.Guard,
		run: runHook, now: time.Now, cfg: cfg,
		actions: map[[3]string]uint64{}, suppressed: map[[2]string]uint64{}, workers: map[string]chan job{}}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.guard == nil {
		e.guard = cfg.Fleet.Guard(e.node())
	}
	if o.StateDir != "" {
		if err := os.MkdirAll(o.StateDir, 0o750); err != nil {
			e.log.Error("cannot create the state directory for the remediation ledger", "dir", o.StateDir, "err", err)
		}
	}
	e.ledger, e.ledgerErr = LoadLedger(o.StateDir, mode(cfg))
	if e.ledgerErr != nil {
		e.log.Error("remediation ledger unusable: no action runs until an operator acknowledges", "err", e.ledgerErr,
			"fix", "gpuwarden remediation ack")
	}
	e.publish()
	return e
}

func mode(c *Config) string {
	if c.Dry() {
		return "dry-run"
	}
	return "live"
}

// Reload swaps in a new, already validated config. A change of dry run
// starts the counts of the new mode.
func (e *Engine) Reload(cfg *Config) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if mode(cfg) != e.ledger.Mode {
		fresh := newLedger(mode(cfg))
		fresh.Breaker, fresh.Blocked = e.ledger.Breaker, e.ledger.Blocked
		e.ledger = fresh
		e.saveLocked()
	}
	e.cfg = cfg
	e.publishLocked()
}

// Run consumes notices until ctx ends, then waits for running hooks.
func (e *Engine) Run(ctx context.Context) {
	sub := e.state.Subscribe("remediation", 4096)
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			e.mu.Lock()
			for k, ch := range e.workers {
				close(ch)
				delete(e.workers, k)
			}
			e.mu.Unlock()
			e.wg.Wait()
			return
		case n := <-sub.C():
			e.Handle(ctx, n)
		}
	}
}

// Handle decides on one notice: every matching rule, every guard rail.
func (e *Engine) Handle(ctx context.Context, n agent.Notice) {
	s := e.canonical(SubjectOf(n))
	e.mu.Lock()
	defer e.mu.Unlock()
	dirty := false
	for _, r := range e.cfg.Rules {
		if !r.Match.Matches(s) {
			continue
		}
		dirty = true
		e.decideLocked(ctx, r, s)
	}
	if dirty {
		e.saveLocked()
		e.publishLocked()
	}
}

// canonical names a notice's GPU as the GPU collector does, so selectors
// by UUID or bus id match whichever spelling the kernel used.
func (e *Engine) canonical(s Subject) Subject {
	snap := e.state.Snapshot()
	if s.GPU.Index >= 0 && s.GPU.Index < len(snap.GPUs) {
		info := snap.GPUs[s.GPU.Index].Info
		s.GPU = event.GPURef{Index: s.GPU.Index, UUID: info.UUID, PCIBusID: info.PCIBusID}
	}
	return s
}

func subjectKey(s Subject) string {
	if s.GPU.UUID != "" {
		return s.GPU.UUID
	}
	if s.GPU.Index >= 0 {
		return "gpu" + strconv.Itoa(s.GPU.Index)
	}
	return "host"
}

// decideLocked applies the rule-level guard rails, then queues or audits
// the rule's hooks. Callers hold mu.
func (e *Engine) decideLocked(ctx context.Context, r *Rule, s Subject) {
	now := e.now()
	key := subjectKey(s)
	l := e.ledger
	cfg := e.cfg
	hold := func(reason, detail string) {
		e.recordLocked(Decision{Time: now, Rule: r.Name, Outcome: OutcomeSuppressed, Reason: reason, Detail: detail, DryRun: cfg.Dry(), Subject: cause(s)})
	}
	if l.Blocked != "" {
		hold(ReasonBlocked, l.Blocked)
		return
	}
	if l.Breaker.Open {
		hold(ReasonBreaker, "the circuit breaker is open: "+l.Breaker.Reason+"; `gpuwarden remediation reset-breaker` closes it")
		return
	}
	if last, ok := l.LastFired[r.Name+"|"+key]; ok && r.Cooldown > 0 && now.Sub(last) < r.Cooldown {
		hold(ReasonCooldown, fmt.Sprintf("fired on %s %s ago; cooldown %s", key, now.Sub(last).Round(time.Second), r.Cooldown))
		return
	}
	if r.Rate.Count > 0 && countSince(l.RuleFired[r.Name], now.Add(-r.Rate.Window)) >= r.Rate.Count {
		hold(ReasonRuleRate, fmt.Sprintf("fired %d times in the last %s, the rule's limit", r.Rate.Count, r.Rate.Window))
		return
	}
	if b := cfg.Limits.Breaker; b.GPUs > 0 && key != "host" {
		l.Triggered[key] = now
		gpus := 0
		for k, t := range l.Triggered {
			if k != "host" && now.Sub(t) <= b.Window {
				gpus++
			}
		}
		if gpus > b.GPUs {
			l.Breaker = Breaker{Open: true, OpenedAt: now,
				Reason: fmt.Sprintf("%d GPUs triggered rules within %s (limit %d): a host-wide cause (power, cooling, a driver) is likelier than %d bad GPUs", gpus, b.Window, b.GPUs, gpus)}
			e.log.Error("remediation circuit breaker open: no action runs until an operator resets it", "reason", l.Breaker.Reason,
				"fix", "gpuwarden remediation reset-breaker")
			hold(ReasonBreaker, l.Breaker.Reason)
			return
		}
	}
	if hr := cfg.Limits.HostRate; hr.Count > 0 && countSince(l.HostFired, now.Add(-hr.Window)) >= hr.Count {
		hold(ReasonHostRate, fmt.Sprintf("%d actions on this host in the last %s, the host's limit", hr.Count, hr.Window))
		return
	}
	l.LastFired[r.Name+"|"+key] = now
	l.RuleFired[r.Name] = append(l.RuleFired[r.Name], now)
	l.HostFired = append(l.HostFired, now)
	l.prune(now, e.keepLocked())

	jobs := make([]job, 0, len(r.Hooks))
	for _, name := range r.Hooks {
		h := cfg.Hooks[name]
		env := e.envLocked(r, h, s)
		stdin, _ := json.Marshal(hookInput{Rule: r.Name, Hook: name, Node: env["GPUWARDEN_NODE"], Cause: cause(s), Env: env})
		jobs = append(jobs, job{rule: r, hook: h, env: env, stdin: stdin, subject: s})
	}
	if cfg.Dry() {
		for _, j := range jobs {
			d := e.preflightLocked(ctx, j, now)
			if d.Outcome == "" {
				d.Outcome, d.Detail = OutcomeWouldRun, "dry run: nothing was run"
			}
			e.recordLocked(d)
		}
		return
	}
	ch := e.workers[key]
	if ch == nil {
		ch = make(chan job, 8)
		e.workers[key] = ch
		e.wg.Go(func() { e.worker(ctx, ch) })
	}
	select {
	case ch <- job{chain: jobs}:
	default:
		hold(ReasonBusy, "hooks for "+key+" are still running and 8 more are queued")
	}
}

// keepLocked is how long the ledger must remember what fired: the longest
// cooldown or window.
func (e *Engine) keepLocked() time.Duration {
	keep := max(e.cfg.Limits.HostRate.Window, e.cfg.Limits.Breaker.Window)
	for _, r := range e.cfg.Rules {
		keep = max(keep, r.Cooldown, r.Rate.Window)
	}
	return keep
}

type job struct {
	rule    *Rule
	hook    *Hook
	env     map[string]string
	stdin   []byte
	subject Subject
	chain   []job
}

type hookInput struct {
	Rule  string            `json:"rule"`
	Hook  string            `json:"hook"`
	Node  string            `json:"node"`
	Cause Cause             `json:"cause"`
	Env   map[string]string `json:"env"`
}

// worker runs one GPU's hooks, one chain at a time: a rule's hooks in
// order, stopping at the first that fails or is held.
func (e *Engine) worker(ctx context.Context, ch chan job) {
	for j := range ch {
		failed := false
		for _, step := range j.chain {
			now := e.now()
			e.mu.Lock()
			d := e.preflightLocked(ctx, step, now)
			e.mu.Unlock()
			if failed {
				d = e.base(step, now)
				d.Outcome, d.Reason, d.Detail = OutcomeSuppressed, ReasonEarlier, "an earlier hook of the rule failed or was held"
			}
			var release fleet.Release
			if d.Outcome == "" {
				d, release = e.askFleet(ctx, step, d)
			}
			if d.Outcome == "" {
				res := e.run(ctx, step.hook.Argv, step.env, step.stdin, step.hook.Timeout)
				d.Result = &res
				d.Outcome = OutcomeRan
				if res.ExitCode != 0 || res.Err != "" {
					d.Outcome = OutcomeFailed
					d.Detail = fmt.Sprintf("exit %d %s", res.ExitCode, res.Err)
				}
			}
			if d.Outcome != OutcomeRan {
				failed = true
			}
			if release != nil && step.hook.Class != ClassReboot {
				// A reboot keeps its slot until the lease expires: the
				// host is going down with it.
				if err := release(ctx); err != nil {
					e.log.Warn("could not release the fleet guard's slot; it expires on its own", "err", err)
				}
			}
			e.mu.Lock()
			if d.Outcome == OutcomeRan && (step.hook.Class == ClassReset || step.hook.Class == ClassReboot) {
				e.noteBootLocked(step.subject)
			}
			e.recordLocked(d)
			e.saveLocked()
			e.publishLocked()
			e.mu.Unlock()
		}
	}
}

func (e *Engine) base(j job, now time.Time) Decision {
	return Decision{Time: now, Rule: j.rule.Name, Hook: j.hook.name, DryRun: e.cfg.Dry(), Argv: j.hook.Argv,
		Env: envList(j.env), Subject: cause(j.subject)}
}

// preflightLocked applies the hook-level guard rails: escalation, the
// driver guard and the fleet guard. Outcome "" means go.
func (e *Engine) preflightLocked(ctx context.Context, j job, now time.Time) Decision {
	d := e.base(j, now)
	hold := func(reason, detail string) Decision {
		d.Outcome, d.Reason, d.Detail = OutcomeSuppressed, reason, detail
		return d
	}
	if e.ledger.Blocked != "" {
		return hold(ReasonBlocked, e.ledger.Blocked)
	}
	if e.ledger.Breaker.Open {
		return hold(ReasonBreaker, "the circuit breaker is open: "+e.ledger.Breaker.Reason)
	}
	class := j.hook.Class
	if (class == ClassReset || class == ClassReboot) && e.cfg.Limits.Escalation.Boots > 0 {
		if k, ok := escalationKey(j.subject); ok {
			boots := e.ledger.Boots[k]
			if len(boots) >= e.cfg.Limits.Escalation.Boots && !slices.Contains(boots, e.bootID) {
				return hold(ReasonEscalation, fmt.Sprintf("%s came back after a reset or reboot in %d boots: it is the hardware; "+
					"stop resetting and rebooting, drain it and inspect or RMA the GPU", k, len(boots)))
			}
		}
	}
	if class == ClassReboot {
		if ok, why := e.driverReady(); !ok {
			return hold(ReasonDriverGuard, why)
		}
	}
	return d
}

// askFleet asks the fleet guard before a disruptive hook (drain, reboot),
// without holding the engine: the answer may take a network round trip.
func (e *Engine) askFleet(ctx context.Context, j job, d Decision) (Decision, fleet.Release) {
	if e.guard == nil || (j.hook.Class != ClassDrain && j.hook.Class != ClassReboot) {
		return d, nil
	}
	dec, release, err := e.guard.Check(ctx, j.hook.Class)
	switch {
	case err != nil:
		d.Outcome, d.Reason, d.Detail = OutcomeSuppressed, ReasonFleetGuard, "fleet guard: "+err.Error()
	case !dec.Allowed:
		d.Outcome, d.Reason, d.Detail = OutcomeSuppressed, ReasonFleetGuard, dec.Reason
	case dec.FailedOpen:
		d.Detail = "fleet guard failed open: " + dec.Reason
	default:
		d.Detail = dec.Reason
	}
	return d, release
}

// escalationKey names a GPU's event for escalation: the same code on the
// same GPU is the same fault.
func escalationKey(s Subject) (string, bool) {
	if s.Event == nil || s.GPU.UUID == "" {
		return "", false
	}
	k := s.GPU.UUID + " " + string(s.Event.Kind)
	if codeKind(s.Event.Kind) {
		k += " " + strconv.Itoa(s.Event.Code)
	}
	return k, true
}

func (e *Engine) noteBootLocked(s Subject) {
	k, ok := escalationKey(s)
	if !ok || e.bootID == "" || slices.Contains(e.ledger.Boots[k], e.bootID) {
		return
	}
	e.ledger.Boots[k] = append(e.ledger.Boots[k], e.bootID)
	if len(e.ledger.Boots[k]) > 16 {
		e.ledger.Boots[k] = e.ledger.Boots[k][len(e.ledger.Boots[k])-16:]
	}
}

// driverReady asks the DKMS checks whether the next boot comes up with a
// GPU driver. Without their answer a reboot is refused: it is the one
// action that cannot be undone from here.
func (e *Engine) driverReady() (bool, string) {
	status, ok := checkStatus(e.state.Snapshot(), "next_boot_module")
	switch {
	case !ok:
		return false, "refusing to reboot: the DKMS checks have not said whether the next boot kernel has an NVIDIA module (is collector.dkms on?)"
	case status == float64(event.OK.ExitCode()):
		return true, ""
	case status == float64(event.Critical.ExitCode()):
		return false, "refusing to reboot: the kernel the next boot starts has no NVIDIA module, so the host would come up without GPUs; rebuild it first (dkms autoinstall -k " + nextBootKernel(e.state.Snapshot()) + ")"
	}
	return false, fmt.Sprintf("refusing to reboot: the next-boot module check is %s, not ok", event.Level(int(status)))
}

// checkStatus reads gpuwarden_check_status{check=name} from the DKMS
// source's series in the snapshot.
func checkStatus(snap *agent.Snapshot, name string) (float64, bool) {
	for _, st := range snap.SourceStats {
		for _, m := range st.Metrics {
			if m.Name == "gpuwarden_check_status" && len(m.Labels) == 2 && m.Labels[1] == name {
				return m.Value, true
			}
		}
	}
	return 0, false
}

func nextBootKernel(snap *agent.Snapshot) string {
	for _, st := range snap.SourceStats {
		for _, m := range st.Metrics {
			if m.Name == "gpuwarden_kernel_info" {
				for i := 0; i+1 < len(m.Labels); i += 2 {
					if m.Labels[i] == "next_boot" {
						return m.Labels[i+1]
					}
				}
			}
		}
	}
	return ""
}

var (
	safeReason = pattern.MustCompile(`^gpuwarden: [A-Za-z0-9 :()._,/-]+$`, 0, 11+200)
	safeKernel = pattern.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`, 0, 128)
	safeUUID   = pattern.MustCompile(`^GPU-[0-9a-fA-F-]+$`, 0, 4+64)
	safeBus    = pattern.MustCompile(`^[0-9A-Fa-f:.]+$`, 0, 32)
	safeKind   = pattern.MustCompile(`^[a-z_]+$`, 0, 32)
)

// envLocked is the hook's environment: only values the agent checked
// against a strict pattern. Event text (process names, the raw line) is
// never in it; it reaches the hook as JSON on stdin only.
func (e *Engine) envLocked(r *Rule, h *Hook, s Subject) map[string]string {
	env := map[string]string{"GPUWARDEN_RULE": r.Name, "GPUWARDEN_HOOK": h.name, "GPUWARDEN_NODE": e.node()}
	set := func(k, v string, re pattern.Bounded) {
		if v != "" && re.MatchString(v) {
			env[k] = v
		}
	}
	if s.GPU.Index >= 0 {
		env["GPUWARDEN_GPU_INDEX"] = strconv.Itoa(s.GPU.Index)
	}
	set("GPUWARDEN_GPU_UUID", s.GPU.UUID, safeUUID)
	set("GPUWARDEN_GPU_PCI_BUS_ID", s.GPU.PCIBusID, safeBus)
	set("GPUWARDEN_NEXT_BOOT_KERNEL", nextBootKernel(e.state.Snapshot()), safeKernel)
	what := ""
	switch {
	case s.Event != nil:
		set("GPUWARDEN_EVENT_KIND", string(s.Event.Kind), safeKind)
		if codeKind(s.Event.Kind) {
			env["GPUWARDEN_EVENT_CODE"] = strconv.Itoa(s.Event.Code)
		}
		if s.Event.Action.Valid() {
			env["GPUWARDEN_ACTION"] = string(s.Event.Action)
		}
		what = string(s.Event.Kind)
		if codeKind(s.Event.Kind) {
			what += " " + strconv.Itoa(s.Event.Code)
		}
		if s.Event.Kind == event.KindFinding && safeKind.MatchString(s.Event.Fields["check"]) {
			what += " " + s.Event.Fields["check"]
		}
	case s.Transition != nil:
		what = "health " + s.Transition.To.String()
		if s.Transition.Health.Action.Valid() {
			env["GPUWARDEN_ACTION"] = string(s.Transition.Health.Action)
		}
	}
	where := "host"
	if env["GPUWARDEN_GPU_PCI_BUS_ID"] != "" {
		where = env["GPUWARDEN_GPU_PCI_BUS_ID"]
	}
	if s.GPU.Index >= 0 {
		where = "GPU " + strconv.Itoa(s.GPU.Index)
		if env["GPUWARDEN_GPU_PCI_BUS_ID"] != "" {
			where += " (" + env["GPUWARDEN_GPU_PCI_BUS_ID"] + ")"
		}
	}
	set("GPUWARDEN_REASON", "gpuwarden: "+r.Name+": "+what+" on "+where, safeReason)
	return env
}

// node is the host's name as the scheduler knows it: the configured one,
// or the agent's hostname (a replay's is the trace's node) up to the dot.
func (e *Engine) node() string {
	if e.cfg.Node != "" {
		return e.cfg.Node
	}
	h := e.state.Snapshot().Hostname
	h, _, _ = strings.Cut(h, ".")
	if nodeRE.MatchString(h) {
		return h
	}
	return ""
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// maxCauseText bounds the raw line kept with a decision: the audit log
// is for decisions, the event ring for the text.
const maxCauseText = 1024

func cause(s Subject) Cause {
	c := Cause{GPU: s.GPU, Transition: s.Transition}
	if s.Event != nil {
		ev := *s.Event
		ev.Raw = agent.Truncate(ev.Raw, maxCauseText)
		ev.Explanation = "" // the catalog's, not the event's
		c.Event = &ev
	}
	return c
}

// recordLocked audits, counts and keeps a decision.
func (e *Engine) recordLocked(d Decision) {
	if e.audit != nil {
		if err := e.audit.Append(d); err != nil {
			e.log.Error("cannot write the remediation audit log", "err", err)
		}
	}
	switch d.Outcome {
	case OutcomeSuppressed:
		e.suppressed[[2]string{d.Rule, d.Reason}]++
		e.log.Warn("remediation held", "rule", d.Rule, "hook", d.Hook, "reason", d.Reason, "detail", d.Detail)
	default:
		e.actions[[3]string{d.Rule, d.Hook, d.Outcome}]++
		e.log.Info("remediation", "rule", d.Rule, "hook", d.Hook, "outcome", d.Outcome, "argv", d.Argv, "dry_run", d.DryRun)
	}
	e.recent = append(e.recent, d)
	if len(e.recent) > maxRecent {
		e.recent = e.recent[len(e.recent)-maxRecent:]
	}
}

func (e *Engine) saveLocked() {
	if e.stateDir == "" {
		return
	}
	if err := e.ledger.Save(e.stateDir); err != nil {
		e.log.Error("cannot save the remediation ledger; cooldowns and limits may not survive a restart", "err", err)
	}
}

func (e *Engine) publish() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.publishLocked()
}

// publishLocked hands the agent the engine's series and its host finding.
func (e *Engine) publishLocked() {
	var ms []source.Metric
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	ms = append(ms,
		source.Metric{Name: "gpuwarden_remediation_dry_run", Help: "Whether remediation only reports what it would do (1) or runs hooks (0).", Value: b2f(e.cfg.Dry())},
		source.Metric{Name: "gpuwarden_remediation_breaker_open", Help: "Whether the remediation circuit breaker is open: no action runs until an operator resets it.", Value: b2f(e.ledger.Breaker.Open)},
		source.Metric{Name: "gpuwarden_remediation_blocked", Help: "Whether remediation is blocked until an operator acknowledges (the ledger was corrupt).", Value: b2f(e.ledger.Blocked != "")},
	)
	akeys := make([][3]string, 0, len(e.actions))
	for k := range e.actions {
		akeys = append(akeys, k)
	}
	sort.Slice(akeys, func(i, j int) bool { return strings.Join(akeys[i][:], "\x00") < strings.Join(akeys[j][:], "\x00") })
	for _, k := range akeys {
		ms = append(ms, source.Metric{Name: "gpuwarden_remediation_actions_total", Help: "Remediation decisions that ran or would run a hook, by rule, hook and outcome (would_run, ran, failed).",
			Counter: true, Labels: []string{"rule", k[0], "hook", k[1], "outcome", k[2]}, Value: float64(e.actions[k])})
	}
	skeys := make([][2]string, 0, len(e.suppressed))
	for k := range e.suppressed {
		skeys = append(skeys, k)
	}
	sort.Slice(skeys, func(i, j int) bool { return skeys[i][0]+"\x00"+skeys[i][1] < skeys[j][0]+"\x00"+skeys[j][1] })
	for _, k := range skeys {
		ms = append(ms, source.Metric{Name: "gpuwarden_remediation_suppressed_total", Help: "Remediation decisions a guard rail held, by rule and reason.",
			Counter: true, Labels: []string{"rule", k[0], "reason", k[1]}, Value: float64(e.suppressed[k])})
	}
	e.state.SetStats("remediation", ms)
	f := source.Finding{Level: event.OK}
	if e.ledger.Blocked != "" {
		f = source.Finding{Level: event.Warning, Reasons: []string{e.ledger.Blocked}, Fix: "gpuwarden remediation ack"}
	} else if e.ledger.Breaker.Open {
		f = source.Finding{Level: event.Warning, Reasons: []string{"circuit breaker open: " + e.ledger.Breaker.Reason}, Fix: "gpuwarden remediation reset-breaker"}
	}
	e.state.SetFinding("remediation", f)
}

// Recent is the latest decisions, newest first.
func (e *Engine) Recent() []Decision {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Decision, len(e.recent))
	for i, d := range e.recent {
		out[len(out)-1-i] = d
	}
	return out
}

// List is what `gpuwarden remediation list` shows.
type List struct {
	DryRun    bool                 `json:"dry_run"`
	Blocked   string               `json:"blocked,omitempty"`
	Breaker   Breaker              `json:"breaker"`
	Cooldowns map[string]time.Time `json:"cooldowns_until,omitempty"` // rule|GPU -> until
	Rules     []string             `json:"rules"`
	Held      []Decision           `json:"held,omitempty"`
	Recent    []Decision           `json:"recent"`
}

// List is the engine's state for the operator.
func (e *Engine) List() (any, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	l := List{DryRun: e.cfg.Dry(), Blocked: e.ledger.Blocked, Breaker: e.ledger.Breaker, Cooldowns: map[string]time.Time{}}
	cool := map[string]time.Duration{}
	for _, r := range e.cfg.Rules {
		l.Rules = append(l.Rules, r.Name)
		cool[r.Name] = r.Cooldown
	}
	for k, t := range e.ledger.LastFired {
		rule, _, _ := strings.Cut(k, "|")
		if until := t.Add(cool[rule]); until.After(now) {
			l.Cooldowns[k] = until
		}
	}
	for i := len(e.recent) - 1; i >= 0 && len(l.Recent) < 50; i-- {
		d := e.recent[i]
		l.Recent = append(l.Recent, d)
		if d.Outcome == OutcomeSuppressed && len(l.Held) < 20 {
			l.Held = append(l.Held, d)
		}
	}
	return l, nil
}

// Ack unblocks actions after a corrupt ledger.
func (e *Engine) Ack(who string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	was := e.ledger.Blocked
	e.ledger.Blocked = ""
	e.recordLocked(Decision{Time: e.now(), Rule: "-", Outcome: "ack", Detail: "unblocked; was: " + was, DryRun: e.cfg.Dry(), Operator: who})
	e.saveLocked()
	e.publishLocked()
	return nil
}

// ResetBreaker closes the circuit breaker and forgets what tripped it.
func (e *Engine) ResetBreaker(who string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ledger.Breaker = Breaker{}
	e.ledger.Triggered = map[string]time.Time{}
	e.recordLocked(Decision{Time: e.now(), Rule: "-", Outcome: "reset_breaker", DryRun: e.cfg.Dry(), Operator: who})
	e.saveLocked()
	e.publishLocked()
	return nil
}

// TestResult is what `gpuwarden remediation test` shows: what a rule
// would do with an event, argv and all, nothing run and nothing recorded.
type TestResult struct {
	Rule      string     `json:"rule"`
	Matches   bool       `json:"matches"`
	Decisions []Decision `json:"decisions,omitempty"`
}

// Test says what rule would do for an event given as JSON.
func (e *Engine) Test(rule string, raw json.RawMessage) (any, error) {
	var ev event.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	if ev.HealthDuration == event.DurationUnset {
		xid.Enrich(&ev)
	}
	if ev.GPU.PCIBusID == "" && ev.GPU.UUID == "" && ev.GPU.Index == 0 && !strings.Contains(string(raw), `"index"`) {
		ev.GPU.Index = -1
	}
	ev = e.state.Locate(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	var r *Rule
	for _, x := range e.cfg.Rules {
		if x.Name == rule {
			r = x
		}
	}
	if r == nil {
		return nil, fmt.Errorf("no rule %q (rules: %s)", rule, strings.Join(ruleNames(e.cfg), ", "))
	}
	s := e.canonical(Subject{Event: &ev, GPU: ev.GPU})
	out := TestResult{Rule: rule, Matches: r.Match.Matches(s)}
	if !out.Matches {
		return out, nil
	}
	for _, name := range r.Hooks {
		h := e.cfg.Hooks[name]
		j := job{rule: r, hook: h, env: e.envLocked(r, h, s), subject: s}
		d := e.preflightLocked(context.Background(), j, e.now())
		if d.Outcome == "" {
			d.Outcome, d.Detail = OutcomeWouldRun, "test: nothing was run"
		}
		out.Decisions = append(out.Decisions, d)
	}
	return out, nil
}

func ruleNames(c *Config) []string {
	var out []string
	for _, r := range c.Rules {
		out = append(out, r.Name)
	}
	return out
}

// AuditPath is the audit log's path in the state directory.
func AuditPath(stateDir string) string { return filepath.Join(stateDir, "remediation-audit.jsonl") }
