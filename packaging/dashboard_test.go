package packaging

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/internal/testenv"
)

var dashboards = []string{"gpuwarden-node.json", "gpuwarden-fleet.json"}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row keeps its panels here
}

// query is one PromQL expression and where it came from.
type query struct{ where, expr string }

func loadDashboard(t *testing.T, name string) dashboard {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "grafana", name))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", name, err)
	}
	return d
}

func dashboardQueries(t *testing.T, name string) []query {
	t.Helper()
	d := loadDashboard(t, name)
	var out []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for i, tg := range p.Targets {
				out = append(out, query{fmt.Sprintf("%s panel %d %q target %d", name, p.ID, p.Title, i), tg.Expr})
			}
		}
	}
	walk(d.Panels)
	return out
}

var templateVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// substitute replaces Grafana's interval variables with a duration and every
// other template variable with ".*", as "All" would.
func substitute(expr string) string {
	for _, iv := range []string{"$__rate_interval", "$__interval", "$__range"} {
		expr = strings.ReplaceAll(expr, iv, "30s")
	}
	return templateVar.ReplaceAllString(expr, ".*")
}

func TestDashboardsAreValidAndUseContractMetrics(t *testing.T) {
	known := contractMetrics(t)
	uids := map[string]bool{}
	for _, name := range dashboards {
		d := loadDashboard(t, name)
		if d.UID == "" || uids[d.UID] {
			t.Errorf("%s: uid %q missing or repeated", name, d.UID)
		}
		uids[d.UID] = true
		vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
		}
		ids := map[int]bool{}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				if ids[p.ID] {
					t.Errorf("%s: panel id %d repeated", name, p.ID)
				}
				ids[p.ID] = true
				walk(p.Panels)
				if p.Type != "row" && len(p.Targets) == 0 {
					t.Errorf("%s: panel %q has no query", name, p.Title)
				}
			}
		}
		walk(d.Panels)
		qs := dashboardQueries(t, name)
		if len(qs) < 10 {
			t.Errorf("%s: only %d queries", name, len(qs))
		}
		for _, q := range qs {
			if q.expr == "" {
				t.Errorf("%s: empty expr", q.where)
			}
			for _, m := range templateVar.FindAllStringSubmatch(q.expr, -1) {
				if !vars[m[1]] {
					t.Errorf("%s uses $%s, which the dashboard does not define", q.where, m[1])
				}
			}
			for _, n := range metricNames(q.expr) {
				if !known[n] {
					t.Errorf("%s reads %s, which docs/metrics-contract.md does not list", q.where, n)
				}
			}
		}
	}
}

func freePort(t *testing.T) string { return testenv.FreeAddr(t) }

// start runs a long-lived process for the test and stops it at cleanup.
func start(t *testing.T, logName string, name string, args ...string) {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), logName))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = repoRoot(t)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(log.Name())
			t.Logf("%s log (last 3000 bytes):\n%s", name, tail(out, 3000))
		}
		log.Close()
	})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// promQuery returns how many series an instant query returns now.
func promQuery(ctx context.Context, addr, expr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query failed: %s", r.Error)
	}
	var series []json.RawMessage
	if err := json.Unmarshal(r.Data.Result, &series); err != nil {
		// A scalar or string result is data too.
		return 1, nil
	}
	return len(series), nil
}

// dcgmDashboardQueries reads the expressions of dcgm-exporter's shipped
// dashboard from the shared reference, when it is beside the checkout.
func dcgmDashboardQueries(t *testing.T) []query {
	path := filepath.Join(repoRoot(t), "..", "shared", "reference", "dcgm-dashboard-queries.txt")
	f, err := os.Open(path)
	if err != nil {
		t.Logf("dcgm-exporter dashboard queries not checked: %v", err)
		return nil
	}
	defer f.Close()
	var out []query
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "label_values(") {
			continue
		}
		expr, _, _ := strings.Cut(line, "\t")
		out = append(out, query{"dcgm-exporter dashboard 12239", expr})
	}
	return out
}

// TestDashboardQueriesReturnDataFromReplayedDemo runs the agent on the demo
// trace, a real Prometheus scraping it, and evaluates every panel query of
// both dashboards, and of dcgm-exporter's dashboard, with "All" selected.
func TestDashboardQueriesReturnDataFromReplayedDemo(t *testing.T) {
	needTool(t, "prometheus")
	bin := binary(t)
	help, _ := exec.Command(bin, "run", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--backend") {
		t.Skip("bin/gpuwarden run has no --backend flag yet: the agent's run command has not landed")
	}

	root := repoRoot(t)
	agentAddr := freePort(t)
	args := []string{"run", "--config", filepath.Join(root, "packaging", "gpuwarden.yaml"),
		"--backend", "replay", "--replay.loop", "--replay.speed", "20",
		"--web.listen-address", agentAddr, "--collector.gpu.interval", "200ms",
		"--state.dir", t.TempDir(), "--control.socket", filepath.Join(t.TempDir(), "control.sock")}
	// No DKMS flag and no fixture root: the DKMS, kernel and driver panels
	// show the facts of the host the demo trace was recorded on.
	start(t, "agent.log", bin, args...)
	if !waitFor(20*time.Second, func() bool {
		resp, err := http.Get("http://" + agentAddr + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("agent never served /metrics on %s", agentAddr)
	}

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: gpuwarden
    static_configs:
      - targets: [%q]
`, filepath.Join(root, "packaging", "prometheus", "gpuwarden-rules.yml"), agentAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freePort(t)
	start(t, "prometheus.log", "prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if !waitFor(60*time.Second, func() bool {
		n, err := promQuery(ctx, promAddr, `up{job="gpuwarden"} == 1`)
		return err == nil && n > 0
	}) {
		t.Fatal("Prometheus never scraped the agent successfully")
	}

	var qs []query
	for _, name := range dashboards {
		qs = append(qs, dashboardQueries(t, name)...)
	}
	qs = append(qs, dcgmDashboardQueries(t)...)

	// Rates need two scrapes and subqueries a step boundary inside the data,
	// so a query may return nothing at first: poll until all have data.
	pending := map[query]string{}
	for _, q := range qs {
		pending[q] = "not run"
	}
	began := time.Now()
	deadline := began.Add(150 * time.Second)
	// Subqueries on 1m steps have data within about 70 s.
	for len(pending) > 0 && time.Now().Before(deadline) {
		for q := range pending {
			n, err := promQuery(ctx, promAddr, substitute(q.expr))
			switch {
			case err != nil:
				pending[q] = err.Error()
			case n == 0:
				pending[q] = "no data"
			default:
				delete(pending, q)
			}
		}
		if len(pending) > 0 {
			time.Sleep(2 * time.Second)
		}
	}
	for q, why := range pending {
		t.Errorf("%s: %s\n  %s", q.where, why, substitute(q.expr))
	}
	t.Logf("%d queries evaluated, %d without data", len(qs), len(pending))
}
