package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Config is the agent's whole configuration. Every key is also a flag of
// `gpuwarden run` with the same name; the config file (YAML, keys nested or
// dotted), GPUWARDEN_* environment variables and flags are merged by viper,
// flags winning, then environment, then file.
type Config struct {
	ListenAddresses []string
	WebConfigFile   string
	SystemdSocket   bool
	LogLevel        string
	LogFormat       string

	Backend     string
	ReplayFile  string
	ReplaySpeed float64
	ReplayLoop  bool

	GPUInterval time.Duration
	GPUTimeout  time.Duration
	GPUExpected int
	EventWindow time.Duration

	KmsgEnabled  bool
	KmsgPath     string
	DKMSEnabled  bool
	DKMSInterval time.Duration

	StateDir string
	RootFS   string
	ProcFS   string
	SysFS    string
	Hostname string
}

// RegisterFlags adds every configuration key to fs as a flag.
func RegisterFlags(fs *pflag.FlagSet) {
	fs.StringSlice("web.listen-address", []string{":9400"}, "Addresses to serve metrics and the API on (repeatable).")
	fs.String("web.config.file", "", "exporter-toolkit web config file: TLS and basic auth.")
	fs.Bool("web.systemd-socket", false, "Use the listening socket systemd passes (socket activation) instead of web.listen-address.")
	fs.String("log.level", "info", "Log level: debug, info, warn, error.")
	fs.String("log.format", "logfmt", "Log format: logfmt or json.")
	fs.String("backend", "nvml", "Where GPU readings come from: nvml (the driver) or replay (a recorded trace).")
	fs.String("replay", "", "Trace file for --backend replay (default: the embedded demo trace of an 8-GPU node).")
	fs.Float64("replay.speed", 1, "Replay speed: trace seconds per real second.")
	fs.Bool("replay.loop", false, "Start the trace again when it ends.")
	fs.Duration("collector.gpu.interval", 10*time.Second, "How often to sample every GPU (at least 100ms).")
	fs.Duration("collector.gpu.timeout", 5*time.Second, "How long one GPU's sample may take before it is reported timed out.")
	fs.Int("gpu.expected", 0, "GPUs this host must have; fewer visible is critical (0: every GPU it has had, kept in state.dir/gpus.json).")
	fs.Duration("health.event-window", 24*time.Hour, "How long an Xid, SXid or AER event keeps a GPU's health down (fallen off the bus lasts the boot).")
	fs.Bool("collector.kmsg", true, "Watch the kernel log for NVIDIA driver events.")
	fs.String("collector.kmsg.path", "/dev/kmsg", "Kernel log device.")
	fs.Bool("collector.dkms", true, "Check kernel, driver and DKMS consistency.")
	fs.Duration("collector.dkms.interval", 5*time.Minute, "How often to re-run the consistency checks besides on change.")
	fs.String("state.dir", "/var/lib/gpuwarden", "Directory for the agent's state: kernel-log cursor, GPU inventory.")
	fs.String("path.rootfs", "/", "Root of the host filesystem, for running in a container or on a fixture tree.")
	fs.String("path.procfs", "/proc", "procfs mount point.")
	fs.String("path.sysfs", "/sys", "sysfs mount point.")
	fs.String("hostname", "", "Hostname label on GPU series (default: the host's name).")
}

// Load merges file, environment and flags into a Config, strictly: an
// unknown key or a bad value in the file is an error naming file, line and
// key; a bad environment value names the variable.
func Load(fs *pflag.FlagSet, file string) (Config, error) {
	// Keys are flat, dotted flag names: "collector.dkms" is a switch and
	// "collector.dkms.interval" its option, which viper's default "." nesting
	// cannot hold both of.
	v := viper.NewWithOptions(viper.KeyDelimiter("::"))
	v.SetEnvPrefix("GPUWARDEN")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	if err := v.BindPFlags(fs); err != nil {
		return Config{}, err
	}
	if file != "" {
		values, err := readFile(fs, file)
		if err != nil {
			return Config{}, err
		}
		if err := v.MergeConfigMap(values); err != nil {
			return Config{}, fmt.Errorf("%s: %w", file, err)
		}
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		env := "GPUWARDEN_" + strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(f.Name))
		if val, ok := os.LookupEnv(env); ok && !f.Changed {
			if err := checkValue(f, val); err != nil {
				errs = append(errs, fmt.Errorf("environment %s: %w", env, err))
			}
		}
	})
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	c := Config{
		ListenAddresses: v.GetStringSlice("web.listen-address"),
		WebConfigFile:   v.GetString("web.config.file"),
		SystemdSocket:   v.GetBool("web.systemd-socket"),
		LogLevel:        v.GetString("log.level"),
		LogFormat:       v.GetString("log.format"),
		Backend:         v.GetString("backend"),
		ReplayFile:      v.GetString("replay"),
		ReplaySpeed:     v.GetFloat64("replay.speed"),
		ReplayLoop:      v.GetBool("replay.loop"),
		GPUInterval:     v.GetDuration("collector.gpu.interval"),
		GPUTimeout:      v.GetDuration("collector.gpu.timeout"),
		GPUExpected:     v.GetInt("gpu.expected"),
		EventWindow:     v.GetDuration("health.event-window"),
		KmsgEnabled:     v.GetBool("collector.kmsg"),
		KmsgPath:        v.GetString("collector.kmsg.path"),
		DKMSEnabled:     v.GetBool("collector.dkms"),
		DKMSInterval:    v.GetDuration("collector.dkms.interval"),
		StateDir:        v.GetString("state.dir"),
		RootFS:          v.GetString("path.rootfs"),
		ProcFS:          v.GetString("path.procfs"),
		SysFS:           v.GetString("path.sysfs"),
		Hostname:        v.GetString("hostname"),
	}
	return c, c.validate()
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
	if c.ReplaySpeed <= 0 || c.ReplaySpeed > 10000 {
		bad("replay.speed", "%v is not in (0, 10000]", c.ReplaySpeed)
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
	if c.DKMSInterval < time.Second {
		bad("collector.dkms.interval", "%s is below 1s", c.DKMSInterval)
	}
	return errors.Join(errs...)
}

// readFile reads the config file as YAML and checks every leaf: its key
// must be a flag, its value must parse as that flag's type. It returns the
// leaves by their flat, dotted key.
func readFile(fs *pflag.FlagSet, file string) (map[string]any, error) {
	values := map[string]any{}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return values, nil // an empty file is a valid config
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(root.Content) == 0 {
		return values, nil
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the config must be a mapping of keys to values", file, top.Line)
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
			f := fs.Lookup(key)
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
		return nil, err
	}
	return values, nil
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
