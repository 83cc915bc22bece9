package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromqlExprTest []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// contractMetrics returns every metric name docs/metrics-contract.md lists,
// expanding its "..._SUFFIX" shorthand for the clock event reason counters.
func contractMetrics(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "metrics-contract.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "..._", "DCGM_FI_DEV_CLOCKS_EVENT_REASON_")
	names := map[string]bool{"up": true}
	for _, m := range regexp.MustCompile(`\b(?:DCGM_FI_\w+|gpuwarden_\w+)`).FindAllString(text, -1) {
		names[m] = true
	}
	return names
}

// metricNames returns the metric names an expression reads. A name inside a
// __name__ regex is left out (it ends in "_" once the regex is cut off).
func metricNames(expr string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`\b(?:DCGM_FI_\w+|gpuwarden_\w+)`).FindAllString(expr, -1) {
		if !strings.HasSuffix(m, "_") {
			out = append(out, m)
		}
	}
	return out
}

func TestPromtoolChecksAndTestsRules(t *testing.T) {
	needTool(t, "promtool")
	dir := filepath.Join(repoRoot(t), "packaging", "prometheus")
	run(t, "promtool", "check", "rules", filepath.Join(dir, "gpuwarden-rules.yml"))
	// promtool resolves rule_files relative to the working directory.
	out, err := runIn(t, dir, "promtool", "test", "rules", "gpuwarden-rules.test.yml")
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

func TestEveryAlertHasRunbookAndFiringAndQuietCases(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "packaging", "prometheus")
	var rules ruleFile
	readYAML(t, filepath.Join(dir, "gpuwarden-rules.yml"), &rules)
	var tests ruleTests
	readYAML(t, filepath.Join(dir, "gpuwarden-rules.test.yml"), &tests)
	runbook, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)$`).FindAllStringSubmatch(string(runbook), -1) {
		anchors[strings.ToLower(m[1])] = true
	}

	firing, quiet, recorded := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
		for _, p := range tc.PromqlExprTest {
			recorded[p.Expr] = true
		}
	}

	known := contractMetrics(t)
	const prefix = "https://github.com/gpuwarden/gpuwarden/blob/main/docs/runbook.md#"
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, name := range metricNames(r.Expr) {
				if !known[name] {
					t.Errorf("%s%s reads %s, which docs/metrics-contract.md does not list", r.Alert, r.Record, name)
				}
			}
			if r.Record != "" {
				if !recorded[r.Record] {
					t.Errorf("recording rule %s has no promql_expr_test", r.Record)
				}
				continue
			}
			alerts++
			url := r.Annotations["runbook_url"]
			if !strings.HasPrefix(url, prefix) || !anchors[strings.TrimPrefix(url, prefix)] {
				t.Errorf("alert %s: runbook_url %q has no matching '## %s' section in docs/runbook.md", r.Alert, url, r.Alert)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s has no severity label", r.Alert)
			}
			if !firing[r.Alert] {
				t.Errorf("alert %s has no test case where it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("alert %s has no test case where it stays quiet", r.Alert)
			}
		}
	}
	if alerts < 14 {
		t.Errorf("found %d alerts; the rules file lost some", alerts)
	}
}

// The fleet recording rules and the example setups load as shipped: promtool
// checks the rules and their unit tests, the shard, global and remote_write
// examples; amtool checks the Alertmanager route.
func TestFleetRulesAndExampleSetupsCheck(t *testing.T) {
	needTool(t, "promtool")
	dir := filepath.Join(repoRoot(t), "packaging", "prometheus")
	run(t, "promtool", "check", "rules", filepath.Join(dir, "gpuwarden-fleet-rules.yml"))
	if out, err := runIn(t, dir, "promtool", "test", "rules", "gpuwarden-fleet-rules.test.yml"); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	for _, f := range []string{"shard.example.yml", "federation-global.example.yml", "remote-write-victoriametrics.example.yml"} {
		// The shard example names an Alertmanager host that does not resolve
		// here; the syntax and the rule files it loads are what is checked.
		if out, err := runIn(t, dir, "promtool", "check", "config", f); err != nil {
			t.Errorf("promtool check config %s: %v\n%s", f, err, out)
		}
	}
	var rules ruleFile
	readYAML(t, filepath.Join(dir, "gpuwarden-fleet-rules.yml"), &rules)
	var tests ruleTests
	readYAML(t, filepath.Join(dir, "gpuwarden-fleet-rules.test.yml"), &tests)
	tested := ""
	for _, tc := range tests.Tests {
		for _, p := range tc.PromqlExprTest {
			tested += p.Expr + "\n"
		}
	}
	known := contractMetrics(t)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, name := range metricNames(r.Expr) {
				if !known[name] {
					t.Errorf("%s reads %s, which docs/metrics-contract.md does not list", r.Record, name)
				}
			}
			if !strings.Contains(tested, r.Record) {
				t.Errorf("recording rule %s has no promql_expr_test", r.Record)
			}
		}
	}
	if _, err := exec.LookPath("amtool"); err == nil {
		run(t, "amtool", "check-config", filepath.Join(dir, "alertmanager.example.yml"))
	} else {
		t.Log("amtool not installed (prometheus-alertmanager): the Alertmanager example is not checked")
	}
}
