package agent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// runFlags is the flag set of `gpuwarden run`: the settings and the two
// flags that are not settings.
func runFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.String("config", "", "")
	fs.Bool("config.check", false, "")
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

// otherValue returns a value of the setting's type that is not its default,
// as text and as the Config field holds it.
func otherValue(t *testing.T, s Setting) (string, any) {
	t.Helper()
	switch d := s.Default.(type) {
	case string:
		return "other-" + d, "other-" + d
	case []string:
		return "127.0.0.1:1", []string{"127.0.0.1:1"}
	case bool:
		if d {
			return "false", false
		}
		return "true", true
	case int:
		return "7", 7
	case float64:
		return "3.5", 3.5
	case time.Duration:
		return "7s", 7 * time.Second
	}
	t.Fatalf("setting %s: default of type %T", s.Name, s.Default)
	return "", nil
}

// The environment variable Setting.Env names is the one the loader reads,
// for every key, and a key set there counts as set explicitly.
func TestEverySettingIsReadFromItsEnvironmentVariable(t *testing.T) {
	for _, s := range Settings {
		t.Run(s.Name, func(t *testing.T) {
			text, want := otherValue(t, s)
			t.Setenv(s.Env(), text)
			c, _ := Load(runFlags(t), "") // some values are not valid: only the reading matters here
			if got := s.value(&c); !reflect.DeepEqual(got, want) {
				t.Errorf("%s=%s: %s is %v, want %v", s.Env(), text, s.Name, got, want)
			}
			if !c.IsSet(s.Name) {
				t.Errorf("%s=%s: IsSet(%q) is false", s.Env(), text, s.Name)
			}
		})
	}
}

func TestEnvironmentVariableNames(t *testing.T) {
	for key, env := range map[string]string{
		"collector.kmsg":      "GPUWARDEN_COLLECTOR_KMSG",
		"health.event-window": "GPUWARDEN_HEALTH_EVENT_WINDOW",
		"web.listen-address":  "GPUWARDEN_WEB_LISTEN_ADDRESS",
	} {
		if got := setting(key).Env(); got != env {
			t.Errorf("%s: environment %s, want %s", key, got, env)
		}
	}
}

func TestIsSetSaysWhetherAKeyWasGivenByFlagEnvironmentOrFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gpuwarden.yaml")
	os.WriteFile(file, []byte("collector:\n  kmsg: true\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		env  string
		file string
		want bool
	}{
		{name: "default", want: false},
		{name: "flag", args: []string{"--collector.kmsg"}, want: true},
		{name: "flag=false", args: []string{"--collector.kmsg=false"}, want: true},
		{name: "environment", env: "true", want: true},
		{name: "an empty environment variable is not set", env: "", want: false},
		{name: "file", file: file, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GPUWARDEN_COLLECTOR_KMSG", tc.env)
			c, err := Load(runFlags(t, tc.args...), tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.IsSet("collector.kmsg"); got != tc.want {
				t.Errorf("IsSet(collector.kmsg) = %v, want %v", got, tc.want)
			}
			if c.IsSet("collector.dkms") {
				t.Error("IsSet(collector.dkms) is true, nothing set it")
			}
		})
	}
}

// The flags of `gpuwarden run` that are not settings are not keys of the file.
func TestConfigFileRejectsAFlagThatIsNotASetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gpuwarden.yaml")
	os.WriteFile(file, []byte("config.check: true\n"), 0o644)
	_, err := Load(runFlags(t), file)
	if err == nil || !strings.Contains(err.Error(), `gpuwarden.yaml:1: unknown key "config.check"`) {
		t.Errorf("err = %v, want an unknown key at line 1", err)
	}
}

func TestEverySettingsDefaultIsItsFlagsDefault(t *testing.T) {
	c, err := Load(runFlags(t), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Settings {
		if got := s.value(&c); !reflect.DeepEqual(got, s.Default) {
			t.Errorf("%s: loaded %v, default %v", s.Name, got, s.Default)
		}
	}
}

// A reload applies every key marked Reload, calls the OnReload functions
// with the running configuration, and names each changed key that needs a
// restart without applying it.
func TestReloadAppliesReloadableKeysAndNamesTheOthers(t *testing.T) {
	fs := runFlags(t)
	cfg, err := Load(fs, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Backend = "replay" // no inventory
	var log bytes.Buffer
	a := New(cfg, nil, slog.New(slog.NewTextHandler(&log, nil)))
	var hooked Config
	a.OnReload(func(c Config) { hooked = c })

	next := cfg
	next.GPUInterval, next.LogLevel, next.DKMSInterval = time.Second, "debug", time.Minute
	next.GPUExpected, next.EventWindow = 3, time.Hour
	next.StateDir, next.GPUTimeout = "/elsewhere", time.Second
	before := a.state.Snapshot().ConfigReload.LastSuccess
	a.Reload(next)

	if a.interval() != time.Second {
		t.Errorf("interval %s after reload, want 1s", a.interval())
	}
	if hooked.LogLevel != "debug" || hooked.DKMSInterval != time.Minute {
		t.Errorf("OnReload got log.level %q, collector.dkms.interval %s", hooked.LogLevel, hooked.DKMSInterval)
	}
	if hooked.StateDir != cfg.StateDir {
		t.Errorf("state.dir %q applied by a reload", hooked.StateDir)
	}
	snap := a.state.Snapshot()
	if snap.GPUsExpected != 3 {
		t.Errorf("gpus expected %d after reload, want 3", snap.GPUsExpected)
	}
	if r := snap.ConfigReload; !r.Successful || !r.LastSuccess.After(before) {
		t.Errorf("config reload %+v, want successful after %s", r, before)
	}
	var warn string
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, "only after a restart") {
			warn = l
		}
	}
	if !strings.Contains(warn, "state.dir") || !strings.Contains(warn, "collector.gpu.timeout") || strings.Contains(warn, "interval") {
		t.Errorf("restart warning %q, want state.dir and collector.gpu.timeout only", warn)
	}
}

// A load reads the file once: the sections other packages read are parsed
// from the bytes the settings came from, so a file rewritten in the middle
// of a reload cannot give settings of one version and rules of another.
func TestLoadKeepsTheBytesItReadTheSettingsFrom(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gpuwarden.yaml")
	first := "collector:\n  gpu:\n    interval: 7s\nremediation:\n  dry_run: true\n"
	if err := os.WriteFile(file, []byte(first), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(runFlags(t), file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("collector:\n  gpu:\n    interval: 9s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c.GPUInterval != 7*time.Second || string(c.FileBytes()) != first {
		t.Errorf("interval %s and bytes %q, want 7s and the file as it was read", c.GPUInterval, c.FileBytes())
	}
	if c, err := Load(runFlags(t), ""); err != nil || c.FileBytes() != nil {
		t.Errorf("no file: bytes %q, err %v", c.FileBytes(), err)
	}
}

func TestPodLabelsNeedASocket(t *testing.T) {
	_, err := Load(runFlags(t, "--collector.gpu.kubernetes", "--collector.gpu.pod-resources-socket="), "")
	if err == nil || !strings.Contains(err.Error(), "collector.gpu.pod-resources-socket") {
		t.Fatalf("Load = %v, want the empty socket named", err)
	}
	c, err := Load(runFlags(t, "--collector.gpu.kubernetes"), "")
	if err != nil || !c.GPUKubernetes || c.PodResourcesSocket != "/var/lib/kubelet/pod-resources/kubelet.sock" {
		t.Fatalf("Load = %+v, %v; want the kubelet's default socket", c.PodResourcesSocket, err)
	}
}
