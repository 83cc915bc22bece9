package remediation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/internal/pattern"
	"github.com/gpuwarden/gpuwarden/remediation/fleet"
)

// Config is the `remediation:` section of the agent's config file.
type Config struct {
	// DryRun reports what would run, with the exact argv, and runs
	// nothing. On unless the file says false.
	DryRun *bool `yaml:"dry_run"`
	// Socket is the operator's control socket.
	Socket string `yaml:"socket"`
	// Node is the host's name as Slurm or Kubernetes know it (default:
	// the hostname, up to the first dot).
	Node   string           `yaml:"node"`
	Audit  AuditConfig      `yaml:"audit"`
	Limits Limits           `yaml:"limits"`
	Fleet  FleetConfig      `yaml:"fleet"`
	Hooks  map[string]*Hook `yaml:"hooks"`
	Rules  []*Rule          `yaml:"rules"`
}

// AuditConfig sizes the audit log (state.dir/remediation-audit.jsonl).
type AuditConfig struct {
	MaxBytes int64 `yaml:"max_bytes"`
	Keep     int   `yaml:"keep"`
}

// Limits are the host-wide guard rails.
type Limits struct {
	// HostRate bounds actions (hooks run) on the host over a sliding window.
	HostRate Rate `yaml:"host_rate"`
	// Breaker opens, stopping every action until an operator resets it,
	// when more than GPUs distinct GPUs trigger rules within Window.
	Breaker struct {
		GPUs   int           `yaml:"gpus"`
		Window time.Duration `yaml:"window"`
	} `yaml:"breaker"`
	// Escalation: once an event has been met by a reset or a reboot in
	// Boots distinct boots of the same GPU, those stop: the GPU needs
	// inspection or RMA, not another reboot.
	Escalation struct {
		Boots int `yaml:"boots"`
	} `yaml:"escalation"`
}

// Rate is at most Count in any Window.
type Rate struct {
	Count  int           `yaml:"count"`
	Window time.Duration `yaml:"window"`
}

// FleetConfig configures the fleet guard asked before a disruptive hook:
// a Prometheus query with a limit, a Kubernetes Lease semaphore, or both.
type FleetConfig struct {
	Prometheus *fleet.Prometheus `yaml:"prometheus"`
	Lease      *fleet.Lease      `yaml:"lease"`
}

// Guard is the configured fleet guard, or nil for none. node is the
// Lease holder's name.
func (f FleetConfig) Guard(node string) fleet.Guard {
	var gs []fleet.Guard
	if f.Prometheus != nil {
		gs = append(gs, f.Prometheus)
	}
	if f.Lease != nil {
		l := *f.Lease
		if l.Holder == "" {
			l.Holder = node
		}
		gs = append(gs, &l)
	}
	if len(gs) == 0 {
		return nil
	}
	return fleet.All(gs...)
}

// Hook classes: what a hook does, which decides the guard rails it passes.
const (
	ClassDrain   = "drain"   // takes the node out of service: fleet guard
	ClassUndrain = "undrain" // returns it
	ClassReset   = "reset"   // resets a GPU: escalation
	ClassRebuild = "rebuild" // rebuilds the driver for a kernel
	ClassReboot  = "reboot"  // fleet guard, escalation, driver guard
	ClassOther   = "other"
)

var hookClasses = []string{ClassDrain, ClassUndrain, ClassReset, ClassRebuild, ClassReboot, ClassOther}

// Hook is an executable run with a fixed argv.
type Hook struct {
	Argv    []string      `yaml:"argv"`
	Class   string        `yaml:"class"`
	Timeout time.Duration `yaml:"timeout"`

	name string
	line int
}

// Rule says which notices fire which hooks.
type Rule struct {
	Name     string        `yaml:"name"`
	Match    Match         `yaml:"match"`
	Hooks    []string      `yaml:"hooks"`
	Cooldown time.Duration `yaml:"cooldown"`
	Rate     Rate          `yaml:"rate"`

	line int
}

// Match is what a notice must be: every condition given holds, and a list
// holds when any of its items does.
type Match struct {
	// Kind is event kinds (xid, sxid, fallen_off_bus, finding...).
	Kind []event.Kind `yaml:"kind"`
	// Code is Xid or SXid codes.
	Code []int `yaml:"code"`
	// Action is the catalog's actions.
	Action []event.Action `yaml:"action"`
	// Severity is the event's levels (warning, critical).
	Severity []string `yaml:"severity"`
	// Finding is DKMS/driver check names whose finding is not ok.
	Finding []string `yaml:"finding"`
	// Transition matches a change of health instead of an event.
	Transition *TransitionMatch `yaml:"transition"`
	// GPU selects GPUs by index, UUID or PCI bus id; "host" selects
	// notices that concern no GPU.
	GPU []string `yaml:"gpu"`
}

// TransitionMatch matches a change of health level.
type TransitionMatch struct {
	From []string `yaml:"from"`
	To   []string `yaml:"to"`
}

// Defaults for what the file leaves out.
const (
	DefaultSocket      = "/run/gpuwarden/control.sock"
	defaultHookTimeout = 2 * time.Minute
	defaultAuditBytes  = 16 << 20
	defaultAuditKeep   = 4
)

// ConfigError is every problem found in the section, each with file and line.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return "remediation config: " + strings.Join(e.Problems, "; ")
}

var (
	nameRE = pattern.MustCompile(`^[a-z0-9][a-z0-9_-]*$`, 0, 64)
	levels = map[string]bool{"ok": true, "warning": true, "critical": true, "unknown": true}
)

// LoadConfig reads the `remediation:` section of a config file, strictly:
// every unknown key, bad value and dangling reference is reported at once,
// with the file and the line. No file, or no section, is no remediation.
func LoadConfig(file string) (*Config, error) {
	if file == "" {
		return nil, nil
	}
	b, err := agent.ReadConfigFile(file)
	if err != nil {
		return nil, fmt.Errorf("remediation config: %w", err)
	}
	return ParseConfig(b, file)
}

// ParseConfig is LoadConfig on the file's bytes (the agent passes the
// bytes its own load read: agent.Config.FileBytes).
func ParseConfig(b []byte, file string) (*Config, error) {
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, nil // the agent's loader says what is wrong with the file
	}
	top := root.Content[0]
	var sec *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "remediation" {
			sec = top.Content[i+1]
		}
	}
	if sec == nil {
		return nil, nil
	}
	var problems []string
	bad := func(line int, format string, a ...any) {
		problems = append(problems, fmt.Sprintf("%s:%d: %s", file, line, fmt.Sprintf(format, a...)))
	}
	strictKeys(sec, reflect.TypeOf(Config{}), "remediation", bad)
	var c Config
	if err := sec.Decode(&c); err != nil {
		// yaml.v3 names the line of each value it could not decode, and
		// decodes the rest: report them with the others.
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &ConfigError{append(problems, fmt.Sprintf("%s: %v", file, err))}
		}
		for _, e := range te.Errors {
			if rest, ok := strings.CutPrefix(e, "line "); ok {
				if n, msg, ok := strings.Cut(rest, ": "); ok {
					if !reported(problems, file+":"+n+":") {
						problems = append(problems, fmt.Sprintf("%s:%s: %s", file, n, msg))
					}
					continue
				}
			}
			problems = append(problems, file+": "+e)
		}
	}
	lines := ruleLines(sec)
	for i, r := range c.Rules {
		if r != nil && i < len(lines.rules) {
			r.line = lines.rules[i]
		}
	}
	for name, h := range c.Hooks {
		if h != nil {
			h.name, h.line = name, lines.hooks[name]
		}
	}
	c.validate(bad, sec.Line)
	if len(problems) > 0 {
		return nil, &ConfigError{problems}
	}
	c.defaults()
	return &c, nil
}

// Dry says whether actions are only reported.
func (c *Config) Dry() bool { return c.DryRun == nil || *c.DryRun }

func (c *Config) defaults() {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.Audit.MaxBytes == 0 {
		c.Audit.MaxBytes = defaultAuditBytes
	}
	if c.Audit.Keep == 0 {
		c.Audit.Keep = defaultAuditKeep
	}
	for _, h := range c.Hooks {
		if h.Timeout == 0 {
			h.Timeout = defaultHookTimeout
		}
		if h.Class == "" {
			h.Class = ClassOther
		}
	}
}

func (c *Config) validate(bad func(int, string, ...any), line int) {
	for name, h := range c.Hooks {
		if !nameRE.MatchString(name) {
			bad(h.lineOr(line), "hook name %q: want [a-z0-9_-], at most 64", name)
		}
		if h == nil {
			bad(line, "hook %s: empty", name)
			continue
		}
		switch {
		case len(h.Argv) == 0:
			bad(h.line, "hook %s: argv: want the executable and its fixed arguments", name)
		case !filepath.IsAbs(h.Argv[0]):
			bad(h.line, "hook %s: argv[0] %q: want an absolute path (no PATH lookup, no shell)", name, h.Argv[0])
		}
		for i, a := range h.Argv {
			if strings.ContainsRune(a, 0) {
				bad(h.line, "hook %s: argv[%d] holds a NUL byte", name, i)
			}
		}
		if h.Class != "" && !slices.Contains(hookClasses, h.Class) {
			bad(h.line, "hook %s: class %q: want one of %s", name, h.Class, strings.Join(hookClasses, ", "))
		}
		if h.Timeout < 0 || h.Timeout > time.Hour {
			bad(h.line, "hook %s: timeout %s: want (0, 1h]", name, h.Timeout)
		}
	}
	seen := map[string]bool{}
	for i, r := range c.Rules {
		if r == nil {
			bad(line, "rule %d: empty", i+1)
			continue
		}
		where := fmt.Sprintf("rule %q", r.Name)
		if !nameRE.MatchString(r.Name) {
			bad(r.line, "rule %d: name %q: want [a-z0-9_-], at most 64", i+1, r.Name)
		}
		if seen[r.Name] {
			bad(r.line, "%s: listed twice", where)
		}
		seen[r.Name] = true
		if len(r.Hooks) == 0 {
			bad(r.line, "%s: hooks: name at least one", where)
		}
		for _, h := range r.Hooks {
			if c.Hooks[h] == nil {
				bad(r.line, "%s: hook %q is not defined under hooks", where, h)
			}
		}
		if r.Cooldown < 0 || r.Rate.Count < 0 || r.Rate.Window < 0 || (r.Rate.Count > 0) != (r.Rate.Window > 0) {
			bad(r.line, "%s: cooldown and rate must be positive, and rate needs both count and window", where)
		}
		m := r.Match
		for _, k := range m.Kind {
			if k == "" || strings.ContainsFunc(string(k), func(r rune) bool { return (r < 'a' || r > 'z') && r != '_' }) {
				bad(r.line, "%s: match.kind %q: want an event kind such as xid, sxid, fallen_off_bus, finding", where, k)
			}
		}
		for _, a := range m.Action {
			if !a.Valid() {
				bad(r.line, "%s: match.action %q: not in the vocabulary %q", where, a, event.Actions)
			}
		}
		for _, s := range m.Severity {
			if !levels[s] {
				bad(r.line, "%s: match.severity %q: want ok, warning, critical or unknown", where, s)
			}
		}
		if t := m.Transition; t != nil {
			for _, s := range append(append([]string{}, t.From...), t.To...) {
				if !levels[s] {
					bad(r.line, "%s: match.transition level %q: want ok, warning, critical or unknown", where, s)
				}
			}
			if len(m.Kind)+len(m.Code)+len(m.Action)+len(m.Severity)+len(m.Finding) > 0 {
				bad(r.line, "%s: match.transition matches health changes, not events: it cannot be combined with kind, code, action, severity or finding", where)
			}
		} else if len(m.Kind)+len(m.Code)+len(m.Action)+len(m.Severity)+len(m.Finding) == 0 {
			bad(r.line, "%s: match: say what to match (kind, code, action, severity, finding or transition); a rule that matches everything is refused", where)
		}
		for _, g := range m.GPU {
			if !gpuSelectorRE.MatchString(g) {
				bad(r.line, "%s: match.gpu %q: want an index, a UUID, a PCI bus id or host", where, g)
			}
		}
	}
	if c.Limits.HostRate.Count < 0 || (c.Limits.HostRate.Count > 0) != (c.Limits.HostRate.Window > 0) {
		bad(line, "limits.host_rate: needs both count and window, positive")
	}
	if c.Limits.Breaker.GPUs < 0 || (c.Limits.Breaker.GPUs > 0) != (c.Limits.Breaker.Window > 0) {
		bad(line, "limits.breaker: needs both gpus and window, positive")
	}
	if c.Limits.Escalation.Boots < 0 {
		bad(line, "limits.escalation.boots: must not be negative")
	}
	if p := c.Fleet.Prometheus; p != nil {
		if err := p.Validate(); err != nil {
			bad(line, "fleet.prometheus: %v", err)
		}
	}
	if l := c.Fleet.Lease; l != nil {
		probe := *l
		if probe.Holder == "" {
			probe.Holder = "node" // filled in with the node's name when the guard is made
		}
		if err := probe.Validate(); err != nil {
			bad(line, "fleet.lease: %v", err)
		}
	}
	if c.Node != "" && !nodeRE.MatchString(c.Node) {
		bad(line, "node %q: want [A-Za-z0-9._-], at most 253", c.Node)
	}
}

var (
	// The GPU-... form is the longest: 68.
	gpuSelectorRE = pattern.MustCompile(`^(host|[0-9]{1,4}|GPU-[0-9a-fA-F-]+|[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])$`, 0, 4+64)
	nodeRE        = pattern.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`, 0, 253)
)

func (h *Hook) lineOr(l int) int {
	if h != nil && h.line > 0 {
		return h.line
	}
	return l
}

type sectionLines struct {
	rules []int
	hooks map[string]int
}

func ruleLines(sec *yaml.Node) sectionLines {
	out := sectionLines{hooks: map[string]int{}}
	for i := 0; i+1 < len(sec.Content); i += 2 {
		k, v := sec.Content[i], sec.Content[i+1]
		switch k.Value {
		case "rules":
			for _, item := range v.Content {
				out.rules = append(out.rules, item.Line)
			}
		case "hooks":
			for j := 0; j+1 < len(v.Content); j += 2 {
				out.hooks[v.Content[j].Value] = v.Content[j].Line
			}
		}
	}
	return out
}

// strictKeys reports every mapping key the struct type t has no field for,
// at its line, recursing through nested structs, pointers, slices and maps.
func strictKeys(n *yaml.Node, t reflect.Type, path string, bad func(int, string, ...any)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && t.Kind() != reflect.String && t.Kind() != reflect.Struct {
		// A value of the wrong type, named by its key (yaml's own error
		// names only the line).
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			bad(n.Line, "%s: %q is not a %s", path, n.Value, typeName(t))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag != "" && tag != "-" {
				fields[tag] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				bad(k.Line, "unknown key %s.%s", path, k.Value)
				continue
			}
			strictKeys(n.Content[i+1], ft, path+"."+k.Value, bad)
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for i, item := range n.Content {
				strictKeys(item, t.Elem(), path+"["+strconv.Itoa(i)+"]", bad)
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				strictKeys(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value, bad)
			}
		}
	}
}

func reported(problems []string, prefix string) bool {
	for _, p := range problems {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "duration (like 30s, 10m, 1h)"
	case t.Kind() == reflect.Bool:
		return "boolean (true or false)"
	case t.Kind() == reflect.Int, t.Kind() == reflect.Int64:
		return "whole number"
	case t.Kind() == reflect.Float64:
		return "number"
	}
	return t.String()
}
