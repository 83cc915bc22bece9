package dkms

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// Report is the result of one pass: the facts and every check's finding.
type Report struct {
	Time     time.Time     `json:"time"`
	Duration time.Duration `json:"duration_ns"`
	Level    event.Level   `json:"level"` // the worst level of Checks (event.Worse)
	Checks   []Finding     `json:"checks"`
	Facts    Facts         `json:"facts"`
}

// Check returns the finding of the named check.
func (r *Report) Check(name string) (Finding, bool) {
	for _, c := range r.Checks {
		if c.Check == name {
			return c, true
		}
	}
	return Finding{}, false
}

// Findings returns the checks that are not OK, worst first.
func (r *Report) Findings() []Finding {
	var out []Finding
	for _, c := range r.Checks {
		if c.Level != event.OK {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int { return rank(b.Level) - rank(a.Level) })
	return out
}

// rank orders levels as event.Worse does: critical, warning, unknown, ok.
func rank(l event.Level) int {
	switch {
	case l == event.OK:
		return 0
	case event.Worse(l, event.Warning) == event.Warning && l != event.Warning:
		return 1 // unknown
	case l == event.Warning:
		return 2
	default:
		return 3
	}
}

// Health is the host-level summary the agent merges into /v1/health.
type Health struct {
	Level   event.Level `json:"level"`
	Reasons []string    `json:"reasons,omitempty"` // "check: summary", worst first
	Fix     string      `json:"fix,omitempty"`     // free text: the fix of the worst finding
}

// Health summarises the report.
func (r *Report) Health() Health {
	h := Health{Level: r.Level}
	for _, f := range r.Findings() {
		h.Reasons = append(h.Reasons, f.Check+": "+f.Summary)
		if h.Fix == "" && f.Fix != "" {
			h.Fix = f.Fix
		}
	}
	return h
}

// Config is what a Checker or Watcher needs. Only Paths is required.
type Config struct {
	Paths Paths
	// Modules are the DKMS module names that carry the NVIDIA driver;
	// empty: every module whose name starts with "nvidia".
	Modules []string
	// NVML, when set, is asked for NVML's driver version on every pass.
	NVML NVMLProbe
	// NVMLNotAsked says why NVML is not asked when NVML is nil (a fixture
	// root, say); the nvml_version check gives it as its reason.
	NVMLNotAsked string
	// Recorded, when set, gives the facts of the host a replayed trace was
	// recorded on, as of the trace's current time: every pass judges them
	// instead of reading Paths (this host is not the replayed node), and
	// nothing under Paths is watched. NVML is still asked. ok is false
	// while the trace holds no host facts: the checks then say unknown.
	Recorded func() (f Facts, ok bool)
	// Extra checks run after the built-in ones (the GPU checks).
	Extra []ExtraCheck
	// Now is the clock (default time.Now); replays and tests pass their own.
	Now func() time.Time
	// Interval between passes when nothing changes (default 5m).
	Interval time.Duration
	// Debounce is how long a burst of file events must be quiet before a
	// pass (default 250ms); a pass runs at least every 10 Debounces during
	// a long burst such as a DKMS build writing its make.log.
	Debounce time.Duration
	// TriggerFile, inside the root, is touched by the package-manager hooks
	// to ask for a pass now (default DefaultTriggerFile).
	TriggerFile string
	// Logger receives one line per change of a check (default slog.Default()).
	Logger *slog.Logger
	// OnEvent, when set, receives an event.Event (kind "finding") for every
	// check whose level or summary changed, the first pass included.
	OnEvent func(event.Event)
	// OnReport, when set, receives every pass's Report.
	OnReport func(Report)
}

// DefaultTriggerFile is the file the packaging hooks touch.
const DefaultTriggerFile = "/run/gpuwarden/check-now"

func (c Config) withDefaults() Config {
	c.Paths = c.Paths.WithDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Interval <= 0 {
		c.Interval = 5 * time.Minute
	}
	if c.Debounce <= 0 {
		c.Debounce = 250 * time.Millisecond
	}
	if c.TriggerFile == "" {
		c.TriggerFile = DefaultTriggerFile
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Checker runs one pass of every check; `gpuwarden check` uses it directly,
// the Watcher on every change.
type Checker struct {
	cfg Config
	g   *Gatherer
}

// NewChecker returns a Checker for the config.
func NewChecker(cfg Config) *Checker {
	cfg = cfg.withDefaults()
	return &Checker{cfg: cfg, g: NewGatherer(cfg.Paths, cfg.Modules, cfg.NVML)}
}

// Check reads the facts and runs every check once.
func (c *Checker) Check(ctx context.Context) Report {
	start := c.cfg.Now()
	var f Facts
	if c.cfg.Recorded != nil {
		f = c.recordedFacts(ctx)
	} else {
		f = c.g.Gather(ctx)
	}
	if c.cfg.NVML == nil {
		f.NVML.NotAsked = c.cfg.NVMLNotAsked
	}
	checks := Evaluate(&f, c.g.IsNVIDIAModule)
	for _, x := range c.cfg.Extra {
		checks = append(checks, x(ctx)...)
	}
	r := Report{Time: start, Checks: checks, Facts: f, Level: event.OK}
	for _, ch := range checks {
		r.Level = event.Worse(r.Level, ch.Level)
	}
	r.Duration = c.cfg.Now().Sub(start)
	return r
}

// changes compares two reports check by check and returns the findings
// that are new or differ in level or summary.
func changes(prev *Report, cur Report) []Finding {
	var out []Finding
	for _, c := range cur.Checks {
		var old Finding
		var ok bool
		if prev != nil {
			old, ok = prev.Check(c.Check)
		}
		if !ok || old.Level != c.Level || old.Summary != c.Summary {
			out = append(out, c)
		}
	}
	return out
}

// findingEvent turns a changed finding into the shared Event shape.
func findingEvent(t time.Time, f Finding) event.Event {
	fields := map[string]string{"check": f.Check, "level": f.Level.String()}
	if f.NotRun != "" {
		fields["not_run"] = f.NotRun
	}
	for i, e := range f.Evidence {
		fields[fmt.Sprintf("evidence_%d", i)] = e
	}
	return event.Event{
		Time:        t,
		Source:      "dkms",
		Kind:        event.KindFinding,
		GPU:         event.GPURef{Index: -1},
		Fields:      fields,
		Raw:         f.Check + ": " + f.Summary,
		Severity:    f.Level,
		Mnemonic:    f.Check,
		Explanation: f.Summary,
		Fix:         f.Fix,
	}
}
