package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// In a replay the host's own kernel log is read only when collector.kmsg is
// set explicitly, and a key set in the config file or the environment is
// as explicit as the flag: each way, a line written to the real /dev/kmsg
// reaches /v1/events and the Xid counter.
func TestReplayReadsTheLiveKernelLogWhenCollectorKmsgIsSetByFlagFileOrEnvironment(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	for _, how := range []string{"flag", "file", "environment"} {
		t.Run(how, func(t *testing.T) {
			trace, bus, nvmlBus := uniqueGPUTrace(t)
			args := []string{"--backend", "replay", "--replay", trace, "--replay.loop", "--collector.gpu.interval", "200ms",
				"--collector.dkms=false", "--state.dir", t.TempDir()}
			var env []string
			switch how {
			case "flag":
				args = append(args, "--collector.kmsg")
			case "file":
				cfg := filepath.Join(t.TempDir(), "gpuwarden.yaml")
				if err := os.WriteFile(cfg, []byte("collector.kmsg: true\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", cfg)
			case "environment":
				env = []string{"GPUWARDEN_COLLECTOR_KMSG=true"}
			}
			a := startAgent(t, env, args...)
			eventually(t, 10*time.Second, "kmsg collector up", func() bool {
				v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="kmsg"`)
				return v == "1"
			})
			marker := fmt.Sprintf("cfg-%s-%d", how, time.Now().UnixNano())
			writeKmsg(t, fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=1, name=%s, Graphics Exception", bus, marker))
			eventually(t, 5*time.Second, "the live line in /v1/events and the Xid counter", func() bool {
				v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_xid_errors_total", `pci_bus_id="`+nvmlBus+`"`, `xid="13"`)
				return v == "1" && strings.Contains(a.mustGet(t, "/v1/events?kind=xid"), marker)
			})
		})
	}
}

// Nothing set: a replayed node is not this host, its kernel log is not read.
func TestReplayDoesNotReadTheLiveKernelLogByDefault(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	trace, bus, nvmlBus := uniqueGPUTrace(t)
	a := startAgent(t, nil, "--backend", "replay", "--replay", trace, "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.dkms=false", "--state.dir", t.TempDir())
	eventually(t, 10*time.Second, "GPU collector up", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="gpu"`)
		return v == "1"
	})
	marker := fmt.Sprintf("cfg-default-%d", time.Now().UnixNano())
	writeKmsg(t, fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=1, name=%s, Graphics Exception", bus, marker))
	time.Sleep(1500 * time.Millisecond) // the reading agents above see such a line within tens of ms
	m := a.mustGet(t, "/metrics")
	if _, ok := metricValue(m, "gpuwarden_collector_up", `collector="kmsg"`); ok {
		t.Error("the live kernel-log collector runs in a replay with nothing set")
	}
	if v, ok := metricValue(m, "gpuwarden_xid_errors_total", `pci_bus_id="`+nvmlBus+`"`); ok {
		t.Errorf("a live kernel-log line was counted in a replay: %s", v)
	}
	if strings.Contains(a.mustGet(t, "/v1/events?limit=1000"), marker) {
		t.Error("a live kernel-log line is in /v1/events of a replay")
	}
}

// reloadSeries returns gpuwarden_config_last_reload_successful and
// gpuwarden_config_last_reload_success_timestamp_seconds.
func reloadSeries(t *testing.T, a *agentProc) (string, float64) {
	t.Helper()
	m := a.mustGet(t, "/metrics")
	ok, _ := metricValue(m, "gpuwarden_config_last_reload_successful")
	v, _ := metricValue(m, "gpuwarden_config_last_reload_success_timestamp_seconds")
	ts, _ := strconv.ParseFloat(v, 64)
	return ok, ts
}

func TestConfigReloadSeriesAfterARefusedAndAGoodSIGHUP(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "gpuwarden.yaml")
	os.WriteFile(cfg, []byte("collector.gpu.interval: 200ms\n"), 0o644)
	start := time.Now()
	a := startAgent(t, nil, "--config", cfg, "--backend", "replay", "--replay.loop",
		"--collector.kmsg=false", "--collector.dkms=false", "--state.dir", t.TempDir())
	ok, started := reloadSeries(t, a)
	if ok != "1" || started < float64(start.Unix()) || started > float64(time.Now().Unix()+1) {
		t.Fatalf("at start: successful %q, timestamp %v, want 1 and the start time %d", ok, started, start.Unix())
	}

	os.WriteFile(cfg, []byte("collector.gpu.interval: soon\n"), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "successful 0 after a refused reload", func() bool {
		ok, _ := reloadSeries(t, a)
		return ok == "0"
	})
	if _, ts := reloadSeries(t, a); ts != started {
		t.Errorf("a refused reload moved the timestamp from %v to %v", started, ts)
	}

	time.Sleep(10 * time.Millisecond) // a later time than the start's, at any clock resolution
	os.WriteFile(cfg, []byte("collector.gpu.interval: 300ms\nhostname: elsewhere\n"), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "successful 1 after a good reload", func() bool {
		ok, _ := reloadSeries(t, a)
		return ok == "1"
	})
	if _, ts := reloadSeries(t, a); ts <= started {
		t.Errorf("timestamp %v after a good reload, want later than the start's %v", ts, started)
	}
	log := a.log.String()
	if !strings.Contains(log, "only after a restart") || !strings.Contains(log, "hostname") {
		t.Errorf("the log does not name hostname as needing a restart:\n%s", log)
	}
}
