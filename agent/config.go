package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kubelet"
	"github.com/spf13/pflag"

	"go.yaml.in/yaml/v3"
)

// Config is the agent's whole configuration. Every key is a row of
// Settings: a flag of `gpuwarden run` with the same name, a key of the config
// file (YAML, keys nested or dotted) and a GPUWARDEN_* environment variable,
// merged by Load, flags winning, then environment, then file.
type Config struct {
	ListenAddresses  []string
	WebConfigFile    string
	SystemdSocket    bool
	WebTelemetryPath string
	// HTTP limits: a connection cap and every server timeout.
	WebMaxConnections    int
	WebReadHeaderTimeout time.Duration
	WebReadTimeout       time.Duration
	WebWriteTimeout      time.Duration
	WebIdleTimeout       time.Duration
	LogLevel             string
	LogFormat            string

	Backend     string
	ReplayFile  string
	ReplaySpeed float64
	ReplayLoop  bool

	GPUInterval time.Duration
	GPUTimeout  time.Duration
	GPUJobLabel bool
	// GPUKubernetes puts dcgm-exporter's pod, namespace and container
	// labels on GPU series, from the kubelet at PodResourcesSocket.
	GPUKubernetes      bool
	PodResourcesSocket string
	GPUCounters        string
	counters           *gpu.Counters // GPUCounters, parsed at Load
	GPUExpected        int
	EventWindow        time.Duration

	KmsgEnabled  bool
	KmsgPath     string
	DKMSEnabled  bool
	DKMSInterval time.Duration
	EBPFEnabled  bool

	DCGMEnabled  bool
	DCGMAddress  string
	DCGMInterval time.Duration

	ControlSocket string

	StateDir string
	RootFS   string
	ProcFS   string
	SysFS    string
	Hostname string

	explicit map[string]bool // keys given by flag, environment or file
	// fileBytes is the config file as Load read it (see FileBytes).
	fileBytes []byte
}

// Setting is one configuration key. Its row is the only place the key, its
// environment variable, default, help and reload behaviour are defined:
// the flags, the loader, SIGHUP's reload and the README's table are all
// made from Settings.
type Setting struct {
	Name    string // the flag's name and the config file's key
	Default any    // of the type of the Config field: string, []string, bool, int, float64 or time.Duration
	Help    string
	// Reload says a SIGHUP applies a change of the key to the running
	// agent; a change of any other key is named in the log as needing a
	// restart.
	Reload bool
	field  func(*Config) any // a pointer to the key's Config field
}

// Env is the key's environment variable: GPUWARDEN_ and the key in upper
// case, dots and dashes as underscores.
func (s Setting) Env() string {
	return "GPUWARDEN_" + envKey.Replace(strings.ToUpper(s.Name))
}

var envKey = strings.NewReplacer(".", "_", "-", "_")

// Settings is every configuration key, in the order of `gpuwarden run --help`.
var Settings = []Setting{
	{Name: "web.listen-address", Default: []string{":9400"}, Help: "Addresses to serve metrics and the API on (repeatable).",
		field: func(c *Config) any { return &c.ListenAddresses }},
	{Name: "web.config.file", Default: "", Help: "exporter-toolkit web config file: TLS and basic auth. Its contents are read again on every request: an edit (even removing basic_auth_users) applies at once, without a reload; only the file's path needs a restart.",
		field: func(c *Config) any { return &c.WebConfigFile }},
	{Name: "web.systemd-socket", Default: false, Help: "Use the listening socket systemd passes (socket activation) instead of web.listen-address.",
		field: func(c *Config) any { return &c.SystemdSocket }},
	{Name: "web.telemetry-path", Default: "/metrics", Help: "Path under which the metrics are served.",
		field: func(c *Config) any { return &c.WebTelemetryPath }},
	{Name: "web.max-connections", Default: 64, Help: "Open HTTP connections at most; more wait until one closes (0: no limit).",
		field: func(c *Config) any { return &c.WebMaxConnections }},
	{Name: "web.read-header-timeout", Default: 10 * time.Second, Help: "How long a client may take to send a request's headers.",
		field: func(c *Config) any { return &c.WebReadHeaderTimeout }},
	{Name: "web.read-timeout", Default: 30 * time.Second, Help: "How long a client may take to send a whole request.",
		field: func(c *Config) any { return &c.WebReadTimeout }},
	{Name: "web.write-timeout", Default: 30 * time.Second, Help: "How long a response may take to be written (a slow reader is cut off).",
		field: func(c *Config) any { return &c.WebWriteTimeout }},
	{Name: "web.idle-timeout", Default: 2 * time.Minute, Help: "How long an idle keep-alive connection is kept open.",
		field: func(c *Config) any { return &c.WebIdleTimeout }},
	{Name: "log.level", Default: "info", Help: "Log level: debug, info, warn, error.", Reload: true,
		field: func(c *Config) any { return &c.LogLevel }},
	{Name: "log.format", Default: "logfmt", Help: "Log format: logfmt or json.",
		field: func(c *Config) any { return &c.LogFormat }},
	{Name: "backend", Default: "nvml", Help: "Where GPU readings come from: nvml (the driver) or replay (a recorded trace).",
		field: func(c *Config) any { return &c.Backend }},
	{Name: "replay", Default: "", Help: "Trace file for --backend replay (default: the embedded demo trace of an 8-GPU node).",
		field: func(c *Config) any { return &c.ReplayFile }},
	{Name: "replay.speed", Default: 1.0, Help: "Replay speed: trace seconds per real second.",
		field: func(c *Config) any { return &c.ReplaySpeed }},
	{Name: "replay.loop", Default: false, Help: "Start the trace again when it ends.",
		field: func(c *Config) any { return &c.ReplayLoop }},
	{Name: "collector.gpu.interval", Default: 10 * time.Second, Help: "How often to sample every GPU (at least 100ms).", Reload: true,
		field: func(c *Config) any { return &c.GPUInterval }},
	{Name: "collector.gpu.counters", Default: "", Help: "dcgm-exporter's counters file (default-counters.csv or a site's -f file), unchanged: export exactly the fields it names (default: every field gpuwarden samples).",
		field: func(c *Config) any { return &c.GPUCounters }},
	{Name: "collector.gpu.job-label", Default: false, Help: "Add dcgm-exporter's hpc_job label to every GPU series: the Slurm jobs using the GPU, from each process's cgroup (a live host only).",
		field: func(c *Config) any { return &c.GPUJobLabel }},
	{Name: "collector.gpu.kubernetes", Default: false, Help: "Add dcgm-exporter's pod, namespace and container labels to every GPU series: the containers the kubelet's pod-resources API says hold the GPU (GPUs by UUID, as NVIDIA's device plugin names them), asked every 15s off the scrape path and forgotten after 2m without an answer; a GPU shared by several containers lists them comma-separated, in the same order in all three labels. Processes whose pod is known by UID gain its name.",
		field: func(c *Config) any { return &c.GPUKubernetes }},
	{Name: "collector.gpu.pod-resources-socket", Default: kubelet.DefaultSocket, Help: "The kubelet's pod-resources socket for collector.gpu.kubernetes, under path.rootfs.",
		field: func(c *Config) any { return &c.PodResourcesSocket }},
	{Name: "collector.gpu.timeout", Default: 5 * time.Second, Help: "How long one GPU's sample may take before it is reported timed out.",
		field: func(c *Config) any { return &c.GPUTimeout }},
	{Name: "gpu.expected", Default: 0, Help: "GPUs this host must have; fewer visible is critical (0: every GPU it has had, kept in state.dir/gpus.json).", Reload: true,
		field: func(c *Config) any { return &c.GPUExpected }},
	{Name: "health.event-window", Default: 24 * time.Hour, Help: "How long an Xid, SXid or AER event keeps a GPU's health down (fallen off the bus lasts the boot).", Reload: true,
		field: func(c *Config) any { return &c.EventWindow }},
	{Name: "collector.kmsg", Default: true, Help: "Watch the kernel log for NVIDIA driver events.",
		field: func(c *Config) any { return &c.KmsgEnabled }},
	{Name: "collector.kmsg.path", Default: "/dev/kmsg", Help: "Kernel log device.",
		field: func(c *Config) any { return &c.KmsgPath }},
	{Name: "collector.dkms", Default: true, Help: "Check kernel, driver and DKMS consistency.",
		field: func(c *Config) any { return &c.DKMSEnabled }},
	{Name: "collector.dkms.interval", Default: 5 * time.Minute, Help: "How often to re-run the consistency checks besides on change.", Reload: true,
		field: func(c *Config) any { return &c.DKMSInterval }},
	{Name: "collector.ebpf", Default: true, Help: "Watch kernel tracepoints with eBPF: OOM kills, PCIe AER, NVIDIA module load and unload.",
		field: func(c *Config) any { return &c.EBPFEnabled }},
	{Name: "collector.dcgm", Default: true, Help: "Read profiling counters, health watches and policy violations from DCGM where the host has it (libdcgm.so.4); without it the source is down as absent, health is unaffected, and GPM serves profiling.",
		field: func(c *Config) any { return &c.DCGMEnabled }},
	{Name: "collector.dcgm.address", Default: "", Help: "A standalone nv-hostengine to use, host:port or a unix socket path (default: an embedded hostengine).",
		field: func(c *Config) any { return &c.DCGMAddress }},
	{Name: "collector.dcgm.interval", Default: 10 * time.Second, Help: "How often DCGM samples the profiling fields and the health watches are checked (at least 1s).",
		field: func(c *Config) any { return &c.DCGMInterval }},
	{Name: "control.socket", Default: "/run/gpuwarden/control.sock", Help: "The root-only control socket (gpuwarden profiling, gpuwarden remediation); when not set, remediation.socket where remediation is configured.",
		field: func(c *Config) any { return &c.ControlSocket }},
	{Name: "state.dir", Default: "/var/lib/gpuwarden", Help: "Directory for the agent's state: kernel-log cursor, GPU inventory.",
		field: func(c *Config) any { return &c.StateDir }},
	{Name: "path.rootfs", Default: "/", Help: "Root of the host filesystem, for running in a container or on a fixture tree.",
		field: func(c *Config) any { return &c.RootFS }},
	{Name: "path.procfs", Default: "/proc", Help: "procfs mount point.",
		field: func(c *Config) any { return &c.ProcFS }},
	{Name: "path.sysfs", Default: "/sys", Help: "sysfs mount point.",
		field: func(c *Config) any { return &c.SysFS }},
	{Name: "hostname", Default: "", Help: "Hostname label on GPU series (default: the host's name).",
		field: func(c *Config) any { return &c.Hostname }},
}

// setting returns the row of key, or nil.
func setting(key string) *Setting {
	for i := range Settings {
		if Settings[i].Name == key {
			return &Settings[i]
		}
	}
	return nil
}

// value returns the key's value in c.
func (s Setting) value(c *Config) any {
	return reflect.ValueOf(s.field(c)).Elem().Interface()
}

// Sections are the config file's top-level sections that are not flag
// keys: remediation's rules and hooks, read by package remediation.
var Sections = []string{"remediation"}

// FileBytes is the config file as Load read it, nil without one. The
// sections other packages read (remediation's) are parsed from these bytes,
// so that one load, or one reload, sees one version of the file.
func (c Config) FileBytes() []byte { return c.fileBytes }

// IsSet says whether key was given explicitly, by flag, environment
// variable or config file, rather than left at its default.
func (c Config) IsSet(key string) bool { return c.explicit[key] }

// Get is the value of key, of its Setting's type; nil for a key that is
// not a setting.
func (c Config) Get(key string) any {
	for _, s := range Settings {
		if s.Name == key {
			return s.value(&c)
		}
	}
	return nil
}

// SourceOn says whether the source name runs: its collector.<name> switch,
// and in a replay, for a source that reads this host, only when the switch
// was set explicitly (the replayed node is not this host).
func (c Config) SourceOn(name string, host bool) bool {
	on, _ := c.Get("collector." + name).(bool)
	if host && c.Backend == "replay" && !c.IsSet("collector."+name) {
		return false
	}
	return on
}

// RegisterFlags adds every configuration key to fs as a flag, and
// --no-collector.<name> for every registered source, as node_exporter
// spells the switch off.
func RegisterFlags(fs *pflag.FlagSet) {
	for _, name := range sourceSwitches() {
		fs.Bool("no-"+name, false, "Turn the source off, as --"+name+"=false.")
	}
	for _, s := range Settings {
		var c Config
		switch s.field(&c).(type) {
		case *string:
			fs.String(s.Name, s.Default.(string), s.Help)
		case *[]string:
			fs.StringSlice(s.Name, s.Default.([]string), s.Help)
		case *bool:
			fs.Bool(s.Name, s.Default.(bool), s.Help)
		case *int:
			fs.Int(s.Name, s.Default.(int), s.Help)
		case *float64:
			fs.Float64(s.Name, s.Default.(float64), s.Help)
		case *time.Duration:
			fs.Duration(s.Name, s.Default.(time.Duration), s.Help)
		default:
			panic("agent: setting " + s.Name + ": unsupported type")
		}
	}
}

// Load merges file, environment and flags into a Config, strictly: an
// unknown key or a bad value in the file is an error naming file, line and
// key; a bad environment value names the variable. fs must hold the flags
// RegisterFlags adds.
func Load(fs *pflag.FlagSet, file string) (Config, error) {
	// Keys are flat, dotted flag names: "collector.dkms" is a switch and
	// "collector.dkms.interval" its option.
	c := Config{explicit: map[string]bool{}}
	for _, s := range Settings {
		f := fs.Lookup(s.Name)
		if f == nil {
			return Config{}, fmt.Errorf("setting %s has no flag: RegisterFlags was not called", s.Name)
		}
		if f.Changed {
			c.explicit[s.Name] = true
		}
	}
	var values map[string]any
	if file != "" {
		var b []byte
		var err error
		if values, b, err = readFile(fs, file); err != nil {
			return Config{}, err
		}
		c.fileBytes = b
		for k := range values {
			c.explicit[k] = true
		}
	}
	var errs []error
	for _, s := range Settings {
		f := fs.Lookup(s.Name)
		// A variable that is set and not empty counts.
		if val := os.Getenv(s.Env()); val != "" && !f.Changed {
			c.explicit[s.Name] = true
			if err := checkValue(f, val); err != nil {
				errs = append(errs, fmt.Errorf("environment %s: %w", s.Env(), err))
			}
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	for _, s := range Settings {
		f := fs.Lookup(s.Name)
		// The first of: the flag as given, the environment variable, the
		// file, the flag's default. The environment's and the file's text
		// was checked above as the flag's type.
		text, isText := os.Getenv(s.Env()), true
		given := text != ""
		var list []string
		if !given {
			switch v := values[s.Name].(type) {
			case string:
				text, given = v, true
			case []string:
				list, isText, given = v, false, true
			}
		}
		if f.Changed || !given {
			s.fromFlag(fs, &c)
			continue
		}
		if err := s.fromText(&c, text, list, isText); err != nil {
			return Config{}, err
		}
	}
	for _, key := range sourceSwitches() {
		if f := fs.Lookup("no-" + key); f != nil && f.Changed && f.Value.String() == "true" {
			if f := fs.Lookup(key); f != nil && f.Changed && f.Value.String() == "true" {
				return Config{}, fmt.Errorf("--%s and --no-%s: both given", key, key)
			}
			*setting(key).field(&c).(*bool) = false
			c.explicit[key] = true
		}
	}
	if c.GPUCounters != "" {
		b, err := ReadConfigFile(c.GPUCounters)
		if err == nil {
			c.counters, err = gpu.ParseCounters(b, c.GPUCounters)
		}
		if err != nil {
			return c, fmt.Errorf("collector.gpu.counters: %w", err)
		}
	}
	return c, c.validate()
}

// Counters is the field selection of collector.gpu.counters, or nil.
func (c Config) Counters() *gpu.Counters { return c.counters }

// ReadConfigFile reads an operator's file: the config file, the counters
// file (it may be a link, as config management makes them), bounded and
// never a FIFO or device.
func ReadConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err == nil && len(b) > 1<<20 {
		err = fmt.Errorf("%s: larger than 1 MiB", path)
	}
	return b, err
}

// sourceSwitches are the settings that turn a source on or off: the
// collector.<name> booleans. Every registered source has one.
func sourceSwitches() []string {
	var out []string
	for _, s := range Settings {
		if name, ok := strings.CutPrefix(s.Name, "collector."); ok && !strings.Contains(name, ".") {
			if _, isBool := s.Default.(bool); isBool {
				out = append(out, s.Name)
			}
		}
	}
	return out
}

func (c Config) validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.GPUInterval < 100*time.Millisecond {
		bad("collector.gpu.interval", "%s is below the 100ms minimum", c.GPUInterval)
	}
	if c.GPUTimeout <= 0 {
		bad("collector.gpu.timeout", "must be positive")
	}
	if c.Backend != "nvml" && c.Backend != "replay" {
		bad("backend", "%q is not nvml or replay", c.Backend)
	}
	// Written so that NaN fails: every comparison with NaN is false.
	if !(c.ReplaySpeed > 0 && c.ReplaySpeed <= 10000) {
		bad("replay.speed", "%v is not in (0, 10000]", c.ReplaySpeed)
	}
	if !strings.HasPrefix(c.WebTelemetryPath, "/") || strings.ContainsAny(c.WebTelemetryPath, " {}") || c.WebTelemetryPath == "/" ||
		strings.HasPrefix(c.WebTelemetryPath, "/v1/") {
		bad("web.telemetry-path", "%q: want a path such as /metrics, not / or under /v1/", c.WebTelemetryPath)
	}
	if c.WebMaxConnections < 0 {
		bad("web.max-connections", "%d is negative", c.WebMaxConnections)
	}
	for _, t := range []struct {
		key string
		d   time.Duration
	}{{"web.read-header-timeout", c.WebReadHeaderTimeout}, {"web.read-timeout", c.WebReadTimeout},
		{"web.write-timeout", c.WebWriteTimeout}, {"web.idle-timeout", c.WebIdleTimeout}} {
		if t.d < time.Second || t.d > time.Hour {
			bad(t.key, "%s is not in [1s, 1h]", t.d)
		}
	}
	if c.GPUExpected < 0 {
		bad("gpu.expected", "%d is negative", c.GPUExpected)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "logfmt" && c.LogFormat != "json" {
		bad("log.format", "%q is not logfmt or json", c.LogFormat)
	}
	if len(c.ListenAddresses) == 0 && !c.SystemdSocket {
		bad("web.listen-address", "no address to listen on")
	}
	if c.GPUKubernetes && c.PodResourcesSocket == "" {
		bad("collector.gpu.pod-resources-socket", "empty, and collector.gpu.kubernetes needs it")
	}
	if c.DKMSInterval < time.Second {
		bad("collector.dkms.interval", "%s is below 1s", c.DKMSInterval)
	}
	if c.DCGMInterval < time.Second {
		bad("collector.dcgm.interval", "%s is below 1s", c.DCGMInterval)
	}
	return errors.Join(errs...)
}

// readFile reads the config file as YAML and checks every leaf: its key
// must be one of Settings, its value must parse as its flag's type. It returns the
// leaves by their flat, dotted key, and the bytes it read.
func readFile(fs *pflag.FlagSet, file string) (map[string]any, []byte, error) {
	values := map[string]any{}
	b, err := ReadConfigFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return values, b, nil // an empty file is a valid config
		}
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(root.Content) == 0 {
		return values, b, nil
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%s:%d: the config must be a mapping of keys to values", file, top.Line)
	}
	var errs []error
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := k.Value
			if prefix != "" {
				key = prefix + "." + key
			}
			if key == Sections[0] {
				continue // a section of its own, read strictly by its package
			}
			var f *pflag.Flag
			if setting(key) != nil {
				f = fs.Lookup(key)
			}
			if val.Kind == yaml.MappingNode && f == nil {
				walk(key, val)
				continue
			}
			if f == nil {
				errs = append(errs, fmt.Errorf("%s:%d: unknown key %q", file, k.Line, key))
				continue
			}
			var text string
			switch val.Kind {
			case yaml.ScalarNode:
				text = val.Value
			case yaml.SequenceNode:
				if f.Value.Type() != "stringSlice" {
					errs = append(errs, fmt.Errorf("%s:%d: key %q: a list is not a %s", file, val.Line, key, f.Value.Type()))
					continue
				}
				var list []string
				for _, item := range val.Content {
					if item.Kind != yaml.ScalarNode {
						errs = append(errs, fmt.Errorf("%s:%d: key %q: list items must be strings", file, item.Line, key))
					}
					list = append(list, item.Value)
				}
				values[key] = list
				continue
			default:
				errs = append(errs, fmt.Errorf("%s:%d: key %q: want a %s value", file, val.Line, key, f.Value.Type()))
				continue
			}
			if err := checkValue(f, text); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: key %q: %w", file, val.Line, key, err))
				continue
			}
			if _, dup := values[key]; dup {
				errs = append(errs, fmt.Errorf("%s:%d: key %q given twice", file, k.Line, key))
			}
			values[key] = text
		}
	}
	walk("", top)
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return values, b, nil
}

// fromFlag sets the setting in c to its flag's value, as given or its
// default.
func (s Setting) fromFlag(fs *pflag.FlagSet, c *Config) {
	var err error
	switch p := s.field(c).(type) {
	case *string:
		*p, err = fs.GetString(s.Name)
	case *[]string:
		*p, err = fs.GetStringSlice(s.Name)
	case *bool:
		*p, err = fs.GetBool(s.Name)
	case *int:
		*p, err = fs.GetInt(s.Name)
	case *float64:
		*p, err = fs.GetFloat64(s.Name)
	case *time.Duration:
		*p, err = fs.GetDuration(s.Name)
	}
	if err != nil {
		panic("agent: setting " + s.Name + ": " + err.Error()) // RegisterFlags made the flag of the field's type
	}
}

// fromText sets the setting in c from an environment variable's or the
// file's text (a list, where the file gives one): a list in text is its
// words, separated by white space.
func (s Setting) fromText(c *Config, text string, list []string, isText bool) error {
	var err error
	switch p := s.field(c).(type) {
	case *string:
		*p = text
	case *[]string:
		if isText {
			list = strings.Fields(text)
		}
		*p = list
	case *bool:
		*p, err = strconv.ParseBool(text)
	case *int:
		*p, err = strconv.Atoi(text)
	case *float64:
		*p, err = strconv.ParseFloat(text, 64)
	case *time.Duration:
		*p, err = time.ParseDuration(text)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

// checkValue parses text as f's type without changing f.
func checkValue(f *pflag.Flag, text string) error {
	var err error
	switch f.Value.Type() {
	case "bool":
		_, err = strconv.ParseBool(text)
	case "duration":
		_, err = time.ParseDuration(text)
	case "int":
		_, err = strconv.Atoi(text)
	case "float64":
		_, err = strconv.ParseFloat(text, 64)
	}
	if err != nil {
		return fmt.Errorf("%q is not a valid %s", text, f.Value.Type())
	}
	return nil
}
