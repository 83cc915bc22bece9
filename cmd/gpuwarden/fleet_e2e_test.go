package main

// The fleet report end to end: real agents replaying the demo, two shard
// Prometheus servers, a global one federating them, and `gpuwarden fleet`
// asking the global one.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gpuwarden/gpuwarden/fleet"
	"github.com/gpuwarden/gpuwarden/internal/testenv"
)

// promWithConfig runs Debian's prometheus with the given configuration.
func promWithConfig(t *testing.T, cfg string) string { return testenv.Prometheus(t, cfg) }

func shardConfig(targets ...string) string {
	return fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gpuwarden\n    static_configs:\n      - targets: [%s]\n",
		`"`+strings.Join(targets, `", "`)+`"`)
}

// runFleet runs the real binary's fleet command and returns its report and
// exit code.
func runFleet(t *testing.T, args ...string) (*fleet.Report, string, int) {
	t.Helper()
	cmd := exec.Command(gpuwardenBinary(t), append([]string{"fleet"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep fleet.Report
	if json.Unmarshal(out, &rep) != nil {
		return nil, string(out) + stderr.String(), code
	}
	return &rep, string(out), code
}

func section(rep *fleet.Report, name string) fleet.Section {
	for _, s := range rep.Sections {
		if s.Name == name {
			return s
		}
	}
	return fleet.Section{}
}

func hasRow(s fleet.Section, want fleet.Row) bool {
	for _, r := range s.Rows {
		ok := true
		for k, v := range want {
			if !strings.Contains(r[k], v) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// startFleet starts six agents replaying the demo as node1..node6 and two
// shard Prometheus servers scraping three each; extra is added to the shards'
// configuration (remote_write). It returns the agents and the shards.
func startFleet(t *testing.T, extra string) ([]*agentProc, []string) {
	t.Helper()
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Skip("prometheus not installed (make deps installs it)")
	}
	var agents []*agentProc
	for i := 1; i <= 6; i++ {
		agents = append(agents, startAgent(t, nil, "--backend", "replay", "--replay.loop", "--replay.speed", "100",
			// At 100x the 35-minute demo loops every 21 s: GPU 3 falls off
			// the bus after 2.4 s and stays off, and the second loop's
			// Xids are the increase the report counts (a counter's first
			// sample is not one).
			"--collector.gpu.interval", "250ms", "--hostname", fmt.Sprintf("node%d", i), "--state.dir", t.TempDir(),
			"--collector.kmsg=false", "--collector.dkms=false"))
	}
	shardA := promWithConfig(t, shardConfig(agents[0].addr, agents[1].addr, agents[4].addr)+extra)
	shardB := promWithConfig(t, shardConfig(agents[2].addr, agents[3].addr, agents[5].addr)+extra)
	return agents, []string{shardA, shardB}
}

func TestFleetReportThroughFederation(t *testing.T) {
	agents, shards := startFleet(t, "")
	global := promWithConfig(t, fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: federate
    honor_labels: true
    metrics_path: /federate
    params:
      'match[]': [%s]
    static_configs:
      - targets: [%q, %q]
`, shippedFederationMatch(t), shards[0], shards[1]))
	checkFleetReport(t, "http://"+global, agents)
}

// VictoriaMetrics receives remote_write from the shards and answers the
// same report.
func TestFleetReportFromVictoriaMetrics(t *testing.T) {
	bin, err := exec.LookPath("victoria-metrics")
	if err != nil {
		t.Skip("victoria-metrics not installed (make deps installs it)")
	}
	vm := freePort(t)
	cmd := exec.Command(bin, "-storageDataPath="+t.TempDir(), "-httpListenAddr="+vm, "-retentionPeriod=1d",
		"-search.latencyOffset=1s", "-search.disableCache", "-loggerLevel=ERROR")
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	eventually(t, 20*time.Second, "victoria-metrics ready", func() bool {
		resp, err := http.Get("http://" + vm + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	agents, _ := startFleet(t, fmt.Sprintf("remote_write:\n  - url: http://%s/api/v1/write\n    queue_config: {batch_send_deadline: 500ms}\n", vm))
	checkFleetReport(t, "http://"+vm, agents)
}

// checkFleetReport stops node2 and asks server for the report until it
// shows what the demo did, then checks every section.
func checkFleetReport(t *testing.T, server string, agents []*agentProc) {
	t.Helper()
	args := []string{"--prometheus", server, "--window", "5m", "--stale-after", "5s", "--top", "50", "-o", "json"}
	// Past the demo's first Xid 79 (2.4 s at 100x), then node2 stops.
	time.Sleep(12 * time.Second)
	agents[1].stop()

	var rep *fleet.Report
	var out string
	var code int
	deadline := time.Now().Add(45 * time.Second)
	for {
		rep, out, code = runFleet(t, args...)
		if rep != nil && hasRow(section(rep, "agents"), fleet.Row{"node": "node2", "state": "stale"}) &&
			hasRow(section(rep, "xid"), fleet.Row{"xid": "79"}) && lostOn(section(rep, "unhealthy"), "node1", "node3", "node4", "node5", "node6") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the report did not show the lost GPU, Xid 79 and node2 stale in time:\n%s", out)
		}
		time.Sleep(time.Second)
	}
	if code != 2 {
		t.Errorf("exit code %d, want 2 (critical)", code)
	}
	if rep.Level.String() != "critical" {
		t.Errorf("level %s, want critical", rep.Level)
	}
	for _, node := range []string{"node1", "node3", "node4"} {
		if !hasRow(section(rep, "unhealthy"), fleet.Row{"node": node, "gpu": "3", "health": "critical", "reason": "lost", "action": "reboot"}) {
			t.Errorf("no critical lost GPU 3 on %s:\n%s", node, out)
		}
	}
	xids := section(rep, "xid")
	for _, code := range []string{"48", "63", "79"} {
		if !hasRow(xids, fleet.Row{"xid": code}) {
			t.Errorf("Xid %s missing:\n%s", code, out)
		}
	}
	if !hasRow(xids, fleet.Row{"xid": "79", "meaning": "FALLEN_OFF_THE_BUS", "severity": "critical", "action": "reboot"}) {
		t.Errorf("Xid 79 without the catalog's meaning: %v", xids.Rows)
	}
	idle := section(rep, "idle")
	for _, node := range []string{"node1", "node3", "node4"} {
		if !hasRow(idle, fleet.Row{"node": node, "gpu": "6", "source": "DCGM_FI_PROF_SM_ACTIVE"}) {
			t.Errorf("idle GPU 6 of %s missing:\n%s", node, out)
		}
	}
	if len(idle.NoData) != 0 || len(idle.Notes) != 1 {
		t.Errorf("the demo has SM_ACTIVE on every GPU: no fallback, one total; got no_data %v, notes %v", idle.NoData, idle.Notes)
	}
	if hasRow(idle, fleet.Row{"node": "node1", "gpu": "0"}) && idle.Rows[0]["gpu"] != "6" {
		t.Errorf("the idle GPU 6 is not first: %v", idle.Rows)
	}
	ag := section(rep, "agents")
	if len(ag.Rows) != 1 {
		t.Errorf("agents section: want node2 alone, got %v", ag.Rows)
	}
	if !hasRow(ag, fleet.Row{"node": "node2", "instance": agents[1].addr, "state": "down"}) {
		t.Errorf("node2 not down (up == 0 federated): %v", ag.Rows)
	}
	// The agents run without the DKMS checks and without remediation: those
	// sections say the metric is not scraped rather than "none".
	for name, metric := range map[string]string{"next_boot_module": `gpuwarden_check_status{check="next_boot_module"}`, "driver_library_mismatch": "gpuwarden_driver_library_mismatch",
		"reboot_pending": "gpuwarden_reboot_pending", "remediation": "gpuwarden_remediation_breaker_open"} {
		s := section(rep, name)
		if len(s.NoData) != 1 || !strings.Contains(s.NoData[0], metric+" not scraped") {
			t.Errorf("section %s: no_data %v, want %s not scraped", name, s.NoData, metric)
		}
	}

	// The table for a person says the same.
	cmd := exec.Command(gpuwardenBinary(t), append([]string{"fleet"}, args[:len(args)-2]...)...)
	tbl, _ := cmd.Output()
	for _, want := range []string{"FLEET CRITICAL", "no data: gpuwarden_reboot_pending not scraped", "node2"} {
		if !strings.Contains(string(tbl), want) {
			t.Errorf("table lacks %q:\n%s", want, tbl)
		}
	}
	t.Logf("table:\n%s", tbl)
}

// shippedFederationMatch returns the match[] selectors of the shipped global
// example, quoted for YAML, so the test proves they carry what the report needs.
func shippedFederationMatch(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../packaging/prometheus/federation-global.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			Params map[string][]string `yaml:"params"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	var q []string
	for _, m := range cfg.ScrapeConfigs[0].Params["match[]"] {
		b, _ := json.Marshal(m)
		q = append(q, string(b))
	}
	if len(q) == 0 {
		t.Fatal("the federation example has no match[]")
	}
	return strings.Join(q, ", ")
}

func lostOn(s fleet.Section, nodes ...string) bool {
	for _, n := range nodes {
		if !hasRow(s, fleet.Row{"node": n, "gpu": "3", "reason": "lost"}) {
			return false
		}
	}
	return true
}

func TestFleetSaysUnknownWhenPrometheusIsUnreachable(t *testing.T) {
	rep, out, code := runFleet(t, "--prometheus", "http://"+freePort(t), "-o", "json")
	if code != 3 || rep == nil || rep.Error == "" {
		t.Fatalf("exit %d, want 3 with the error in the report:\n%s", code, out)
	}
}

// The series one 8-GPU demo node exports, the base of docs/fleet.md's sizing:
// run with -v to see the count by family.
func TestDemoNodeSeriesCountForFleetSizing(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.speed", "10", "--collector.gpu.interval", "250ms",
		"--state.dir", t.TempDir(), "--collector.kmsg=false", "--collector.dkms=false")
	var body string
	// Counted on a whole node: after the demo's first Xids, once every
	// GPU's profiling has warmed up, and before GPU 3 falls off the bus at
	// 240 s (a lost GPU or a warming one exports fewer series, which is not
	// what a node has). At 10x that is from 9 s to 24 s.
	eventually(t, 30*time.Second, "the demo's Xids counted on a whole node", func() bool {
		body = a.mustGet(t, "/metrics")
		_, ok := metricValue(body, "gpuwarden_xid_errors_total", `xid="48"`)
		lost, _ := metricValue(body, "gpuwarden_gpu_lost", `gpu="3"`)
		return ok && lost == "0" && strings.Count(body, "\nDCGM_FI_PROF_SM_ACTIVE{") == 10
	})
	total, dcgm, perGPU := 0, 0, 0
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		total++
		switch {
		case strings.HasPrefix(line, "DCGM_"):
			dcgm++
		case strings.HasPrefix(line, "gpuwarden_") && strings.Contains(line, `gpu="`):
			perGPU++
		}
	}
	t.Logf("8-GPU demo node: %d series: %d DCGM-named, %d gpuwarden per GPU, %d per host", total, dcgm, perGPU, total-dcgm-perGPU)
	// docs/fleet.md sizes a node at about 515 with the kernel-log and DKMS
	// series the replay lacks: a change far from that needs the doc redone.
	if total < 440 || total > 530 {
		t.Errorf("%d series on the demo node; docs/fleet.md assumes about 484 before kernel-log and DKMS series: update its sizing", total)
	}
}
