package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Without remediation configured, a root agent serves its control socket:
// gpuwarden profiling pause, status and resume reach it, the gauge follows,
// the log says who paused, and remediation's commands say it is not
// configured.
func TestProfilingPauseAndResumeOverTheControlSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the control socket answers only root")
	}
	sock := filepath.Join(t.TempDir(), "run", "control.sock")
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.kmsg=false", "--collector.dkms=false", "--state.dir", t.TempDir(), "--control.socket", sock)
	eventually(t, 10*time.Second, "the control socket", func() bool { _, err := os.Stat(sock); return err == nil })
	run := func(args ...string) (string, error) {
		out, err := exec.Command(gpuwardenBinary(t), append(args, "--socket", sock)...).CombinedOutput()
		return string(out), err
	}
	paused := func() string {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_profiling_paused")
		return v
	}
	eventually(t, 10*time.Second, "gpuwarden_profiling_paused 0", func() bool { return paused() == "0" })

	if out, err := run("profiling", "pause", "25h"); err == nil || !strings.Contains(out, "at most 24h") {
		t.Errorf("a 25h pause: %v\n%s", err, out)
	}
	out, err := run("profiling", "pause", "2h", "-o", "json")
	if err != nil {
		t.Fatalf("profiling pause: %v\n%s", err, out)
	}
	var resp struct {
		OK     bool `json:"ok"`
		Result struct {
			Paused bool      `json:"paused"`
			Until  time.Time `json:"until"`
			By     string    `json:"paused_by"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || !resp.OK || !resp.Result.Paused ||
		time.Until(resp.Result.Until) < 119*time.Minute || !strings.HasPrefix(resp.Result.By, "uid 0 pid ") {
		t.Fatalf("pause answer %s (%v)", out, err)
	}
	eventually(t, 10*time.Second, "gpuwarden_profiling_paused 1", func() bool { return paused() == "1" })
	if out, err := run("profiling", "status"); err != nil || !strings.Contains(out, `"paused": true`) {
		t.Errorf("status while paused: %v\n%s", err, out)
	}
	if !strings.Contains(a.log.String(), `msg="profiling paused: the profiling counters are released for a profiler" component=control who="uid 0 pid `) {
		t.Errorf("the log does not say who paused:\n%s", a.log.String())
	}
	if out, err := run("profiling", "resume"); err != nil || !strings.Contains(out, `"paused": false`) {
		t.Fatalf("profiling resume: %v\n%s", err, out)
	}
	eventually(t, 10*time.Second, "gpuwarden_profiling_paused 0 again", func() bool { return paused() == "0" })

	if out, err := run("remediation", "list"); err == nil || !strings.Contains(out, "remediation is not configured") {
		t.Errorf("remediation list without remediation: %v\n%s", err, out)
	}
}
