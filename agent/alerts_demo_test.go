package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/collectors/source"
	"github.com/gpuwarden/gpuwarden/dkms"
)

const shippedRules = "../packaging/prometheus/gpuwarden-rules.yml"

// alertsNoNodeSeriesRaise are the shipped alerts that no replay of a node
// can raise, with why: they are about the node not being observed, which
// the node's own series cannot say.
var alertsNoNodeSeriesRaise = map[string]string{
	"GpuwardenDown":          "the scrape itself fails: up is Prometheus's series, not the agent's",
	"GpuwardenCollectorDown": "a source of the agent failing for 10 minutes; every source of a replay works",
	"GPUsMissing":            "NVML enumerating fewer GPUs than before; a GPU that fell off the bus stays enumerated (GPU_IS_LOST) until a reboot",
}

// Every shipped alert that a node's own series can raise fires within one
// loop of the demo: the demo's series over one loop, as Prometheus would
// scrape them every 15 s (the agent's own pipeline: the trace's GPU answers
// through the collector, its kernel records through the parser, its host
// facts through the DKMS checks, /metrics rendered from the State), are
// the input of `promtool test rules` on the shipped rules, and the test
// asks which alerts were firing at some point of the loop.
//
// promtool rather than a Prometheus scraping a replay: the rules' "for"
// durations (up to 30 minutes) pass in real time in a Prometheus, so a
// real one would need the whole 35-minute loop; promtool evaluates the
// same rules with the same engine over series with the trace's own times,
// in seconds, and the same every run.
func TestEveryShippedAlertFiresWithinOneLoopOfTheDemo(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not installed (make deps installs it)")
	}
	rules, err := filepath.Abs(shippedRules)
	if err != nil {
		t.Fatal(err)
	}
	alerts := shippedAlertNames(t, rules)
	for name := range alertsNoNodeSeriesRaise {
		if !slices.Contains(alerts, name) {
			t.Errorf("%s is listed as one no node raises, but the shipped rules have no such alert", name)
		}
	}
	const step = 15 * time.Second
	series, steps := demoLoopSeries(t, step)

	var want []string
	for _, a := range alerts {
		if _, ok := alertsNoNodeSeriesRaise[a]; !ok {
			want = append(want, a)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "rule_files: [%q]\nevaluation_interval: 15s\ntests:\n  - interval: 15s\n    input_series:\n", rules)
	keys := make([]string, 0, len(series))
	for k := range series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q, _ := json.Marshal(k)
		fmt.Fprintf(&b, "      - series: %s\n        values: '%s'\n", q, strings.Join(series[k], " "))
	}
	loop := time.Duration(steps) * step
	fmt.Fprintf(&b, "    promql_expr_test:\n      - expr: group by (alertname) (max_over_time(ALERTS{alertstate=\"firing\"}[%ds]))\n        eval_time: %ds\n        exp_samples:\n",
		int(loop.Seconds())+60, int(loop.Seconds()))
	for _, a := range want {
		fmt.Fprintf(&b, "          - labels: '{alertname=%q}'\n            value: 1\n", a)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "demo-alerts.test.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "test", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("not every shipped alert fired within one %s loop of the demo (want %s):\n%s", loop, strings.Join(want, ", "), out)
	}
	t.Logf("%d series over %s; fired: %s", len(series), loop, strings.Join(want, ", "))
}

func shippedAlertNames(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("only %d alerts read from %s", len(names), file)
	}
	return names
}

// demoLoopSeries plays one loop of the demo through the agent's pipeline on
// a clock the test moves, scrapes /metrics every step, and returns each
// series (with the instance and job labels a scrape adds) as promtool's
// values, "_" where the series was absent.
func demoLoopSeries(t *testing.T, step time.Duration) (map[string][]string, int) {
	t.Helper()
	tr, err := replay.Open("../collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := start
	clock := func() time.Time { return now }
	var raw []string
	p := replay.NewPlayer(tr, replay.PlayerOptions{Clock: clock, Kmsg: func(r string) { raw = append(raw, r) }})
	defer p.Close()
	st := NewState(tr.Header.Hostname, 0, time.Hour, clock)
	col := gpu.New(p.Library(), gpu.Options{Clock: clock, Log: quiet})
	defer col.Close()
	checks := dkms.NewChecker(dkms.Config{Recorded: p.HostFacts, Now: clock,
		NVML: func(context.Context) (string, error) { return col.DriverVersion(), nil }})

	steps := int(time.Duration(tr.Header.DurationS*float64(time.Second)) / step)
	series := map[string][]string{}
	for i := range steps {
		now = start.Add(time.Duration(i) * step)
		st.ApplyRound(col.Sample(context.Background()))
		var evs []event.Event
		for _, r := range raw {
			rec, err := kmsg.ParseRecord([]byte(r))
			if err != nil {
				t.Fatalf("the demo's kernel record %q: %v", r, err)
			}
			if ev := kmsg.RecordEvent(rec, "", time.Time{}); ev.Kind != event.KindUnrelated {
				ev.Source, ev.Time = "replay", now
				evs = append(evs, ev)
			}
		}
		raw = raw[:0]
		st.ApplyEvents(evs, nil)
		st.SetCollector("replay_kmsg", true, nil, "", 0)
		r := checks.Check(context.Background())
		h := r.Health()
		st.SetFinding("dkms", source.Finding{Level: h.Level, Reasons: h.Reasons, Fix: h.Fix})
		st.SetStats("dkms", dkms.Metrics(r))
		st.SetCollector("dkms", true, nil, "", 0)
		st.Refresh()

		rec := httptest.NewRecorder()
		MetricsHandler(st, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
		if err != nil {
			t.Fatalf("/metrics at %s: %v", now.Sub(start), err)
		}
		put := func(key string, v float64) {
			vals := series[key]
			for len(vals) < i {
				vals = append(vals, "_")
			}
			series[key] = append(vals, strconv.FormatFloat(v, 'g', -1, 64))
		}
		put(`up{instance="demo:9400",job="gpuwarden"}`, 1) // as Prometheus records a scrape that worked
		for name, f := range fams {
			for _, m := range f.GetMetric() {
				labels := []string{`instance="demo:9400"`, `job="gpuwarden"`}
				for _, l := range m.GetLabel() {
					v, _ := json.Marshal(l.GetValue())
					labels = append(labels, l.GetName()+"="+string(v))
				}
				var v float64
				switch {
				case m.GetCounter() != nil:
					v = m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					v = m.GetGauge().GetValue()
				case m.GetUntyped() != nil:
					v = m.GetUntyped().GetValue()
				default:
					continue // no histograms or summaries among the alerts' inputs
				}
				sort.Strings(labels[2:])
				put(name+"{"+strings.Join(labels, ",")+"}", v)
			}
		}
	}
	for k, vals := range series {
		for len(vals) < steps {
			vals = append(vals, "_")
		}
		series[k] = vals
	}
	return series, steps
}
