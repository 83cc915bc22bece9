package main

// End-to-end tests: the real binary, a real Prometheus, the real kernel log.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/internal/testenv"
)

func freePort(t testing.TB) string { return testenv.FreeAddr(t) }

// agentProc is a running gpuwarden.
type agentProc struct {
	addr string
	cmd  *exec.Cmd
	log  *syncBuffer
}

type syncBuffer = testenv.SyncBuffer

// startAgent runs `gpuwarden run` with args plus a free listen address and
// waits until it serves /metrics.
func startAgent(t testing.TB, env []string, args ...string) *agentProc {
	t.Helper()
	addr := freePort(t)
	a := &agentProc{addr: addr, log: &syncBuffer{}}
	a.cmd = exec.Command(gpuwardenBinary(t), append([]string{"run", "--web.listen-address", addr}, args...)...)
	a.cmd.Env = append(os.Environ(), env...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.stop() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		// The landing page: served whatever --web.telemetry-path says.
		if _, err := a.get("/"); err == nil {
			return a
		}
		if time.Now().After(deadline) || a.cmd.ProcessState != nil {
			t.Fatalf("agent did not serve its landing page:\n%s", a.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *agentProc) stop() {
	if a.cmd.Process != nil && a.cmd.ProcessState == nil {
		a.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { a.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			a.cmd.Process.Kill()
			<-done
		}
	}
}

func (a *agentProc) get(path string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + a.addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), err
}

func (a *agentProc) mustGet(t testing.TB, path string) string {
	t.Helper()
	b, err := a.get(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// metricValue returns the value of the first series of metric whose line
// contains every one of the given label matchers.
func metricValue(body, metric string, matchers ...string) (string, bool) {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		ok := true
		for _, m := range matchers {
			if !strings.Contains(line, m) {
				ok = false
			}
		}
		if ok {
			f := strings.Fields(line)
			return f[len(f)-1], true
		}
	}
	return "", false
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWithoutNVMLTheAgentServesAndSaysWhy(t *testing.T) {
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"); err == nil {
		t.Skip("this machine has libnvidia-ml: the no-driver path cannot be shown here")
	}
	a := startAgent(t, nil, "--backend", "nvml", "--collector.kmsg=false", "--collector.dkms=false", "--collector.gpu.interval", "200ms")
	eventually(t, 10*time.Second, "collector_up{gpu} 0", func() bool {
		v, ok := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="gpu"`)
		return ok && v == "0"
	})
	time.Sleep(500 * time.Millisecond)
	log := a.log.String()
	if n := strings.Count(log, "libnvidia-ml.so.1 not found"); n != 1 {
		t.Errorf("the missing library is logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "install the NVIDIA driver") {
		t.Errorf("the log does not say how to fix it:\n%s", log)
	}
	h := a.mustGet(t, "/v1/health")
	if !strings.Contains(h, `"level": "unknown"`) || !strings.Contains(h, "libnvidia-ml.so.1 not found") {
		t.Errorf("/v1/health does not say the GPU collector is down and why:\n%s", h)
	}
	if a.cmd.ProcessState != nil {
		t.Fatal("agent exited")
	}
}

func TestConfigCheckNamesFileLineAndKey(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("web:\n  listen-address: [\":9400\"]\ncollector:\n  gpu:\n    interval: fast\n  nosuch: 1\n"), 0o644)
	out, err := exec.Command(gpuwardenBinary(t), "run", "--config", bad, "--config.check").CombinedOutput()
	if err == nil {
		t.Fatalf("bad config accepted:\n%s", out)
	}
	for _, want := range []string{bad + `:5: key "collector.gpu.interval": "fast" is not a valid duration`, bad + `:6: unknown key "collector.nosuch"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("collector.gpu.interval: 2s\nbackend: replay\nreplay.loop: true\n"), 0o644)
	out, err = exec.Command(gpuwardenBinary(t), "run", "--config", good, "--config.check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config OK") {
		t.Fatalf("good config refused: %v\n%s", err, out)
	}
	cmd := exec.Command(gpuwardenBinary(t), "run", "--config", good, "--config.check")
	cmd.Env = append(os.Environ(), "GPUWARDEN_COLLECTOR_GPU_INTERVAL=soon")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "GPUWARDEN_COLLECTOR_GPU_INTERVAL") {
		t.Errorf("bad environment value accepted or not named: %v\n%s", err, out)
	}
}

// prometheusServer runs Debian's prometheus scraping target every second.
func prometheusServer(t *testing.T, target string) string {
	t.Helper()
	return promWithConfig(t, shardConfig(target))
}

type promResult struct {
	Status string `json:"status"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
		} `json:"result"`
	} `json:"data"`
}

func promQuery(t *testing.T, addr, expr string) promResult {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r promResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func promLabelValues(t *testing.T, addr, metric, label string) []string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/label/" + label + "/values?match[]=" + url.QueryEscape(metric))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data []string `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&r)
	return r.Data
}

// Every expression of dcgm-exporter's Grafana dashboard answers for the 8
// GPUs of the demo, through a real Prometheus scraping the real binary.
func TestDCGMDashboardQueriesAnswerOnTheDemo(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "500ms",
		"--collector.kmsg=false", "--collector.dkms=false")
	prom := prometheusServer(t, a.addr)
	eventually(t, 60*time.Second, "prometheus has 8 GPU temperatures", func() bool {
		return len(promQuery(t, prom, "DCGM_FI_DEV_GPU_TEMP").Data.Result) == 8
	})
	// The sample ages, the part of a gzip scrape encoded per scrape, reach
	// Prometheus as well.
	if got := len(promQuery(t, prom, "gpuwarden_gpu_sample_age_seconds").Data.Result); got != 8 {
		t.Errorf("prometheus has %d sample ages, want 8", got)
	}
	f, err := os.Open("../../testdata/dcgm-dashboard-queries.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		expr := strings.SplitN(line, "\t", 2)[0]
		expr = strings.NewReplacer("$instance", ".*", "$gpu", ".*").Replace(expr)
		n++
		if strings.HasPrefix(expr, "label_values(") {
			inner := strings.TrimSuffix(strings.TrimPrefix(expr, "label_values("), ")")
			parts := strings.Split(inner, ",")
			metric, label := strings.TrimSpace(parts[0]), strings.TrimSpace(parts[1])
			vals := promLabelValues(t, prom, metric, label)
			want := 1
			if label == "gpu" {
				want = 8
			}
			if len(vals) != want {
				t.Errorf("%s: %d values %v, want %d", expr, len(vals), vals, want)
			}
			continue
		}
		r := promQuery(t, prom, expr)
		gpus := map[string]bool{}
		for _, s := range r.Data.Result {
			gpus[s.Metric["gpu"]] = true
		}
		aggregate := strings.HasPrefix(expr, "avg(") || strings.HasPrefix(expr, "sum(")
		switch {
		case r.Status != "success":
			t.Errorf("%s: status %s", expr, r.Status)
		case aggregate && len(r.Data.Result) != 1:
			t.Errorf("%s: %d results, want 1", expr, len(r.Data.Result))
		case !aggregate && len(gpus) != 8:
			t.Errorf("%s: GPUs %v, want 8", expr, gpus)
		}
	}
	if n < 10 {
		t.Fatalf("only %d expressions read from the dashboard file", n)
	}
}

// Values move as the trace plays: two scrapes a few seconds apart differ.
func TestDemoValuesMoveOverTime(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--replay.speed", "20",
		"--collector.gpu.interval", "200ms", "--collector.kmsg=false", "--collector.dkms=false")
	first, _ := metricValue(a.mustGet(t, "/metrics"), "DCGM_FI_DEV_POWER_USAGE", `gpu="0"`)
	eventually(t, 10*time.Second, "GPU 0 power changes", func() bool {
		now, _ := metricValue(a.mustGet(t, "/metrics"), "DCGM_FI_DEV_POWER_USAGE", `gpu="0"`)
		return now != "" && now != first
	})
}

func TestStatusPrintsOneRowPerGPU(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--replay.speed", "60",
		"--collector.gpu.interval", "100ms", "--collector.kmsg=false", "--collector.dkms=false")
	// At 60x the demo's GPU 3 falls off the bus within 4-5 s.
	eventually(t, 15*time.Second, "GPU 3 lost", func() bool {
		return strings.Contains(a.mustGet(t, "/v1/health"), `"lost": true`)
	})
	out, err := exec.Command(gpuwardenBinary(t), "status", "--agent", "http://"+a.addr).Output()
	// A lost GPU: status exits 2 (critical), as check would.
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("status with a lost GPU: %v, want exit 2\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 9 || !strings.HasPrefix(lines[0], "GPU ") {
		t.Fatalf("want a header and 8 rows:\n%s", out)
	}
	for i, l := range lines[1:] {
		if !strings.HasPrefix(l, fmt.Sprint(i)+" ") || !strings.Contains(l, "NVIDIA H100 80GB HBM3") {
			t.Errorf("row %d: %q", i, l)
		}
	}
	if !strings.Contains(lines[4], "LOST") || !strings.Contains(lines[4], "critical") {
		t.Errorf("GPU 3's row does not say it is lost: %q", lines[4])
	}
	if !strings.Contains(lines[1], " C ") || !strings.Contains(lines[1], " W ") || !strings.Contains(lines[1], "GiB") {
		t.Errorf("GPU 0's row lacks temperature, power or memory: %q", lines[1])
	}
	out, err = exec.Command(gpuwardenBinary(t), "status", "--agent", "http://127.0.0.1:1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--once") {
		t.Errorf("status without an agent should fail and suggest --once: %v\n%s", err, out)
	}
	out, err = exec.Command(gpuwardenBinary(t), "status", "--once", "--backend", "replay").CombinedOutput()
	if err != nil || strings.Count(string(out), "NVIDIA H100") != 8 {
		t.Errorf("status --once on the demo: %v\n%s", err, out)
	}
}

// status prints what an agent or a trace says; a bus id or a name holding
// a terminal escape sequence is printed escaped.
func TestStatusEscapesWhatTheAgentSays(t *testing.T) {
	var b strings.Builder
	v := agent.GPUsView{GPUs: []agent.GPUView{{Info: gpu.Info{Index: 0, Name: "H100\x1b]0;pwned\x07", PCIBusID: "0000:3b:00.0\x1b[2J"}}}}
	if err := printStatus(&b, v, false); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(b.String(), "\x1b\x07") || !strings.Contains(b.String(), `0000:3b:00.0\x1b[2J`) {
		t.Errorf("status printed %q", b.String())
	}
}

// The flags people expect from an exporter and its CLI: metrics at
// --web.telemetry-path, status as JSON, and --agent as host:port.
func TestTelemetryPathAndStatusJSON(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms",
		"--web.telemetry-path", "/prom", "--state.dir", t.TempDir())
	eventually(t, 10*time.Second, "metrics at /prom", func() bool {
		b, err := a.get("/prom")
		return err == nil && strings.Contains(b, "DCGM_FI_DEV_GPU_TEMP")
	})
	if _, err := a.get("/metrics"); err == nil {
		t.Error("/metrics still served with --web.telemetry-path /prom")
	}
	out, err := exec.Command(gpuwardenBinary(t), "status", "--agent", a.addr, "-o", "json").Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	var v agent.GPUsView
	if jerr := json.Unmarshal(out, &v); jerr != nil || len(v.GPUs) != 8 {
		t.Errorf("status -o json: %v, %d GPUs\n%s", jerr, len(v.GPUs), out)
	}
}

// dcgm-exporter's counters file, unchanged, selects what is exported: the
// migration path is the same port, names and file.
func TestACountersFileSelectsTheExportedFields(t *testing.T) {
	csv := filepath.Join(t.TempDir(), "default-counters.csv")
	os.WriteFile(csv, []byte("# DCGM FIELD, Prometheus metric type, help message\nDCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).\n"+
		"DCGM_FI_DEV_POWER_USAGE, gauge, Power draw (in W).\nDCGM_FI_DEV_VGPU_LICENSE_STATUS, gauge, vGPU License status\n"), 0o644)
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.gpu.counters", csv, "--state.dir", t.TempDir())
	eventually(t, 10*time.Second, "GPU temperature exported", func() bool {
		return strings.Contains(a.mustGet(t, "/metrics"), "DCGM_FI_DEV_GPU_TEMP{")
	})
	m := a.mustGet(t, "/metrics")
	if !strings.Contains(m, "DCGM_FI_DEV_POWER_USAGE{") || strings.Contains(m, "DCGM_FI_DEV_SM_CLOCK{") || strings.Contains(m, "DCGM_FI_PROF_SM_ACTIVE{") {
		t.Errorf("exported fields are not exactly the file's:\n%s", grepPrefixes(m, "DCGM_FI_"))
	}
	if !strings.Contains(a.log.String(), "default-counters.csv:4: DCGM_FI_DEV_VGPU_LICENSE_STATUS is not a field gpuwarden samples") {
		t.Errorf("the row it cannot honour is not named:\n%s", a.log.String())
	}
	out, err := exec.Command(gpuwardenBinary(t), "run", "--config.check", "--collector.gpu.counters", "/nonexistent.csv").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "collector.gpu.counters") {
		t.Errorf("a missing counters file passes --config.check: %v\n%s", err, out)
	}
}

func grepPrefixes(body, prefix string) string {
	seen := map[string]bool{}
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if name, _, ok := strings.Cut(l, "{"); ok && strings.HasPrefix(name, prefix) && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return strings.Join(out, "\n")
}
