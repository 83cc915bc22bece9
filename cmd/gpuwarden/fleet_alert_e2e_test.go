package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The shipped alert rules, evaluated on a shard, deliver GPUFellOffTheBus to
// a real Alertmanager routed by the shipped example, and amtool shows it with
// the node and the GPU. The rules' `for:` is cut to nothing so the test does
// not wait a minute; everything else is the shipped file.
func TestFellOffTheBusReachesAlertmanager(t *testing.T) {
	am, err := exec.LookPath("prometheus-alertmanager")
	if err != nil {
		t.Skip("prometheus-alertmanager not installed (make deps installs it)")
	}
	amtool, err := exec.LookPath("amtool")
	if err != nil {
		t.Skip("amtool not installed (prometheus-alertmanager)")
	}
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Skip("prometheus not installed (make deps installs it)")
	}
	dir := t.TempDir()
	rules, err := os.ReadFile("../../packaging/prometheus/gpuwarden-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^(\s+)for: \S+$`).ReplaceAll(rules, []byte("${1}for: 0s"))
	rulesFile := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(rulesFile, rules, 0o644); err != nil {
		t.Fatal(err)
	}

	amAddr := freePort(t)
	amCmd := exec.Command(am, "--config.file=../../packaging/prometheus/alertmanager.example.yml", "--storage.path="+filepath.Join(dir, "am"),
		"--web.listen-address="+amAddr, "--cluster.listen-address=", "--log.level=warn")
	amLog := &syncBuffer{}
	amCmd.Stdout, amCmd.Stderr = amLog, amLog
	if err := amCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { amCmd.Process.Kill(); amCmd.Wait() })
	eventually(t, 20*time.Second, "alertmanager ready", func() bool {
		resp, err := http.Get("http://" + amAddr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// The demo without a loop ends with GPU 3 lost, and stays so.
	a := startAgent(t, nil, "--backend", "replay", "--replay.speed", "30", "--collector.gpu.interval", "250ms",
		"--hostname", "node7", "--state.dir", t.TempDir(), "--collector.kmsg=false", "--collector.dkms=false")
	promWithConfig(t, shardConfig(a.addr)+fmt.Sprintf("rule_files: [%q]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [%q]\n", rulesFile, amAddr))

	var out []byte
	deadline := time.Now().Add(40 * time.Second)
	for {
		out, err = exec.Command(amtool, "--alertmanager.url=http://"+amAddr, "alert", "query", "alertname=GPUFellOffTheBus", "-o", "json").CombinedOutput()
		if err != nil {
			t.Fatalf("amtool: %v\n%s", err, out)
		}
		var alerts []struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		}
		if json.Unmarshal(out, &alerts) == nil && len(alerts) > 0 {
			l := alerts[0].Labels
			if l["instance"] != a.addr || l["gpu"] != "3" || l["severity"] != "critical" {
				t.Errorf("alert labels %v, want instance %s, gpu 3, critical", l, a.addr)
			}
			if u := alerts[0].Annotations["runbook_url"]; !strings.HasSuffix(u, "docs/runbook.md#gpufelloffthebus") {
				t.Errorf("alert runbook_url %q, want the runbook's GPUFellOffTheBus section", u)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GPUFellOffTheBus did not reach Alertmanager:\n%s\nalertmanager:\n%s", out, amLog.String())
		}
		time.Sleep(time.Second)
	}
	// The table a person runs on call.
	tbl, _ := exec.Command(amtool, "--alertmanager.url=http://"+amAddr, "alert", "query", "alertname=GPUFellOffTheBus").CombinedOutput()
	if !strings.Contains(string(tbl), "GPUFellOffTheBus") {
		t.Errorf("amtool's table:\n%s", tbl)
	}
	t.Logf("amtool:\n%s", tbl)
}
