package agent

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

var update = flag.Bool("update", false, "rewrite golden files")

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// demoAt plays the demo scenario's trace to trace time at and returns the
// state after one round, on a fixed clock.
func demoAt(t testing.TB, at time.Duration) (*State, *replay.Player) {
	t.Helper()
	tr, err := replay.Open("../collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := start
	clock := func() time.Time { return now }
	p := replay.NewPlayer(tr, replay.PlayerOptions{Clock: clock})
	st := NewState("demo-dgx-h100", 0, time.Hour, clock)
	col := gpu.New(p.Library(), gpu.Options{Clock: clock, Log: quiet})
	// GPM's profiling fields need two rounds: the first only takes a sample.
	now = start.Add(at - time.Second)
	col.Sample(context.Background())
	now = start.Add(at)
	st.ApplyRound(col.Sample(context.Background()))
	return st, p
}

// scrape gets /metrics of the state alone (no process metrics, which differ
// run to run).
func scrape(t testing.TB, st *State) string {
	t.Helper()
	rec := httptest.NewRecorder()
	MetricsHandler(st, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestGoldenMetricsOfTheDemoAt130s(t *testing.T) {
	st, _ := demoAt(t, 130*time.Second)
	got := scrape(t, st)
	// build_info carries the Go version: normalise it.
	got = regexpGoVersion.ReplaceAllString(got, `goversion="GO"`)
	golden := filepath.Join("testdata", "demo-t130.metrics")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./agent -update)", err)
	}
	if got != string(want) {
		t.Errorf("/metrics differs from %s (run go test ./agent -update and review the diff)\n%s", golden, firstDiff(string(want), got))
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (make deps installs it): cannot lint the golden file")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(want)
	out, _ := cmd.CombinedOutput()
	// promtool's style lints cannot pass on dcgm-exporter's names (DCGM_*
	// counters without _total, camelCase labels such as modelName): those
	// names are the compatibility promise. Anything else (a parse error, a
	// lint on a gpuwarden_ metric other than the shared labels) fails.
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch {
		case line == "":
		case strings.HasPrefix(line, "DCGM_"):
		case strings.HasSuffix(line, "label names should be written in 'snake_case' not 'camelCase'"):
		default:
			t.Errorf("promtool check metrics: %s", line)
		}
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return "want: " + al[i] + "\n got: " + bl[i]
		}
	}
	return "lengths differ"
}

func TestNotSupportedFieldIsAbsentNotZero(t *testing.T) {
	st, _ := demoAt(t, 60*time.Second)
	body := scrape(t, st)
	memTemp := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "DCGM_FI_DEV_MEMORY_TEMP{") {
			memTemp++
			if strings.Contains(line, `gpu="4"`) {
				t.Errorf("GPU 4 has no memory temperature in the trace, yet: %s", line)
			}
		}
		// Page retirement is NOT_SUPPORTED on H100: never a zero series.
		if strings.HasPrefix(line, "DCGM_FI_DEV_RETIRED_") {
			t.Errorf("unsupported field exported: %s", line)
		}
	}
	if memTemp != 7 {
		t.Errorf("DCGM_FI_DEV_MEMORY_TEMP series = %d, want 7 (8 GPUs less GPU 4)", memTemp)
	}
	v := ViewGPUs(st.Snapshot(), time.Now())
	if why := v.GPUs[4].Missing["DCGM_FI_DEV_MEMORY_TEMP"]; why != "not_supported" {
		t.Errorf("/v1/gpus GPU 4 missing memory temp reason = %q, want not_supported", why)
	}
}

func TestLostGPUIsCriticalWhileTheOthersKeepReporting(t *testing.T) {
	st, _ := demoAt(t, 260*time.Second)
	snap := st.Snapshot()
	h := healthView(snap)
	if h.GPUs[3].Level != event.Critical || !h.GPUs[3].Lost {
		t.Fatalf("GPU 3 health = %+v, want lost and critical", h.GPUs[3])
	}
	if h.Level != event.Critical {
		t.Errorf("host level = %v, want critical", h.Level)
	}
	body := scrape(t, st)
	for i := 0; i < 8; i++ {
		sel := `DCGM_FI_DEV_GPU_TEMP{` // any temp series of GPU i
		found := false
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, sel) && strings.Contains(line, `gpu="`+string(rune('0'+i))+`"`) {
				found = true
			}
		}
		if i == 3 && found {
			t.Error("lost GPU 3 still exports a temperature")
		}
		if i != 3 && !found {
			t.Errorf("GPU %d stopped reporting when GPU 3 was lost", i)
		}
	}
	if !strings.Contains(body, `gpuwarden_gpu_lost{gpu="3",UUID="`+snap.GPUs[3].Info.UUID+`",pci_bus_id="00000000:5D:00.0"} 1`) {
		t.Error("gpuwarden_gpu_lost for GPU 3 is not 1")
	}
	if line := StatusLine(snap); !strings.HasPrefix(line, "8 GPUs, ") || !strings.Contains(line, "GPU 3") {
		t.Errorf("status line %q does not name GPU 3", line)
	}
}

func TestHTTPEndpointsServeTheSnapshot(t *testing.T) {
	st, _ := demoAt(t, 100*time.Second)
	st.ApplyEvent(event.Event{Source: "kmsg", Kind: event.KindXid, Code: 79, Severity: event.Critical,
		GPU: event.GPURef{Index: -1, PCIBusID: "0000:5d:00.0"}, Mnemonic: "GPU_HAS_FALLEN_OFF_THE_BUS", Raw: "x"})
	st.ApplyEvent(event.Event{Source: "kmsg", Kind: event.KindAER, Severity: event.Warning,
		GPU: event.GPURef{Index: -1, PCIBusID: "0000:99:00.0"}, Raw: "y"})
	srv := httptest.NewServer(Handler(st, prometheus.NewRegistry()))
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	if body := get("/v1/events?gpu=3"); !strings.Contains(body, `"code": 79`) || strings.Contains(body, "0000:99:00.0") {
		t.Errorf("/v1/events?gpu=3 = %s", body)
	}
	if body := get("/v1/events?kind=aer"); !strings.Contains(body, "0000:99:00.0") || strings.Contains(body, `"code": 79`) {
		t.Errorf("/v1/events?kind=aer = %s", body)
	}
	metrics := get("/metrics")
	if !strings.Contains(metrics, `gpuwarden_xid_errors_total{gpu="3",UUID="`+st.Snapshot().GPUs[3].Info.UUID+`",pci_bus_id="00000000:5D:00.0",xid="79"} 1`) {
		t.Error("Xid 79 on 0000:5d:00.0 was not mapped to GPU 3 in gpuwarden_xid_errors_total")
	}
	if !strings.Contains(metrics, `err_code="79"`) {
		t.Error("DCGM_FI_DEV_XID_ERRORS does not carry the last Xid")
	}
	if !strings.Contains(get("/v1/health"), `"level": "critical"`) {
		t.Error("/v1/health not critical after Xid 79")
	}
	resp, _ := http.Get(srv.URL + "/v1/events?limit=abc")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad limit: status %d, want 400", resp.StatusCode)
	}
	if !strings.Contains(get("/"), "/metrics") {
		t.Error("landing page does not link /metrics")
	}
}

// A hung NVML must not hang /metrics: the scrape reads the snapshot, and the
// sample age grows while the sampler is stuck.
func TestScrapeIsAnsweredDuringAnNVMLHang(t *testing.T) {
	tr := &replay.Trace{Header: replay.Header{Format: replay.Format, Version: replay.Version, DurationS: 100,
		GPUs: []gpu.Info{{Index: 0, UUID: "GPU-0", Name: "H100", PCIBusID: "00000000:18:00.0"}}}}
	zero := 0
	tr.Records = []replay.Record{
		{T: 0, GPU: &zero, NVML: map[string]replay.Answer{"GetTemperature(0)": {V: []byte("40")}}},
		{T: 0.2, HangS: 10}, // a 10 s NVML hang
	}
	p := replay.NewPlayer(tr, replay.PlayerOptions{})
	defer p.Close()
	st := NewState("h", 0, time.Hour, time.Now)
	a := &Agent{cfg: Config{GPUInterval: 100 * time.Millisecond}, log: quiet, state: st, reloaded: make(chan struct{}, 1)}
	col := gpu.New(p.Library(), gpu.Options{Log: quiet, Timeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.notifier = newTestNotifier()
	go a.sampleLoop(ctx, col)
	waitFor(t, func() bool { return strings.Contains(scrape(t, st), "DCGM_FI_DEV_GPU_TEMP") })
	first := sampleAge(t, scrape(t, st))
	time.Sleep(1200 * time.Millisecond) // the sampler is stuck in the hang now
	second := sampleAge(t, scrape(t, st))
	if second < first+1 {
		t.Errorf("sample age went from %v to %v across 1.2 s of hang; want it to grow", first, second)
	}
}

// One Xid reported by both the kernel log and NVML is one error.
func TestAnXidFromBothSourcesIsCountedOnce(t *testing.T) {
	st, _ := demoAt(t, 10*time.Second)
	uuid := st.Snapshot().GPUs[6].Info.UUID
	st.ApplyEvent(event.Event{Source: "kmsg", Kind: event.KindXid, Code: 94, Severity: event.Warning,
		GPU: event.GPURef{Index: -1, PCIBusID: "0000:ba:00.0"}, Raw: "NVRM: Xid (PCI:0000:ba:00): 94, ..."})
	st.ApplyRound(gpu.Round{Time: time.Now(), DriverVersion: "550.54.15", Samples: samplesOf(st),
		Xids: []gpu.XidEvent{{GPU: st.Snapshot().GPUs[6].Info, Xid: 94}}})
	// A second, later Xid 94 from NVML alone is a new error.
	st.ApplyRound(gpu.Round{Time: time.Now(), DriverVersion: "550.54.15", Samples: samplesOf(st),
		Xids: []gpu.XidEvent{{GPU: st.Snapshot().GPUs[6].Info, Xid: 94}}})
	body := scrape(t, st)
	want := `gpuwarden_xid_errors_total{gpu="6",UUID="` + uuid + `",pci_bus_id="00000000:BA:00.0",xid="94"} 2`
	if !strings.Contains(body, want) {
		t.Errorf("want %s in:\n%s", want, grepLines(body, "gpuwarden_xid_errors_total"))
	}
	if n := len(st.Events().Recent(100, func(e *event.Event) bool { return e.Code == 94 })); n != 2 {
		t.Errorf("%d Xid 94 events kept, want 2", n)
	}
}

func samplesOf(st *State) []*gpu.Sample {
	var out []*gpu.Sample
	for _, g := range st.Snapshot().GPUs {
		out = append(out, g.Sample)
	}
	return out
}

func grepLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestStatusLineSaysWhichGPUFellOffTheBus(t *testing.T) {
	st, _ := demoAt(t, 60*time.Second) // before the demo's incidents
	if line := StatusLine(st.Snapshot()); line != "8 GPUs, 0 unhealthy" {
		t.Fatalf("before: %q", line)
	}
	st.ApplyEvent(event.Event{Source: "kmsg", Kind: event.KindFallenOffBus, Severity: event.Critical, Action: "reboot",
		GPU: event.GPURef{Index: -1, PCIBusID: "0000:3a:00.0"}, Mnemonic: "GPU_FALLEN_OFF_BUS"})
	if line := StatusLine(st.Snapshot()); !strings.HasPrefix(line, "8 GPUs, 1 unhealthy: GPU 2 fell off the bus") {
		t.Errorf("status line %q", line)
	}
	if h := st.Snapshot().GPUs[2].Health; h.Level != event.Critical || h.Action != "reboot" {
		t.Errorf("GPU 2 health %+v", h)
	}
}

// gpuwarden_config_last_reload_*: Prometheus's own names and meaning. A
// refused reload is 0 and keeps the time of the last good load.
func TestConfigReloadSeriesAfterAGoodAndARefusedLoad(t *testing.T) {
	st := NewState("h", 0, time.Hour, nil)
	if m := scrape(t, st); strings.Contains(m, "gpuwarden_config_last_reload") {
		t.Errorf("config reload series before any load:\n%s", m)
	}
	good := time.Unix(1767323045, 500_000_000)
	st.SetConfigReload(true, good)
	m := scrape(t, st)
	for _, want := range []string{
		"# TYPE gpuwarden_config_last_reload_successful gauge\ngpuwarden_config_last_reload_successful 1\n",
		"# TYPE gpuwarden_config_last_reload_success_timestamp_seconds gauge\ngpuwarden_config_last_reload_success_timestamp_seconds 1.7673230455e+09\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("after a good load, /metrics lacks\n%s", want)
		}
	}
	st.SetConfigReload(false, good.Add(time.Minute))
	m = scrape(t, st)
	for _, want := range []string{
		"gpuwarden_config_last_reload_successful 0\n",
		"gpuwarden_config_last_reload_success_timestamp_seconds 1.7673230455e+09\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("after a refused load, /metrics lacks %q", want)
		}
	}
}

// What `make run` shows: GPM's profiling families for every one of the demo's
// 8 GPUs (GPU 7 per MIG instance), ratios within 0..1.
func TestTheDemoHasProfilingForEveryGPU(t *testing.T) {
	families := []string{"DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_SM_OCCUPANCY", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
		"DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_NVLINK_TX_BYTES", "DCGM_FI_PROF_NVLINK_RX_BYTES"}
	gpuLabel := regexp.MustCompile(`\{gpu="(\d+)"`)
	for _, at := range []time.Duration{20 * time.Second, 130 * time.Second, 230 * time.Second} {
		st, _ := demoAt(t, at)
		body := scrape(t, st)
		for _, fam := range families {
			seen := map[string]bool{}
			for _, line := range strings.Split(body, "\n") {
				name, rest, ok := strings.Cut(line, "{")
				if !ok || name != fam {
					continue
				}
				m := gpuLabel.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("no gpu label: %s", line)
				}
				seen[m[1]] = true
				v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				if strings.HasSuffix(fam, "_ACTIVE") || strings.HasSuffix(fam, "_OCCUPANCY") {
					if v < 0 || v > 1 {
						t.Errorf("at %v: ratio out of 0..1: %s", at, line)
					}
				} else if v < 0 {
					t.Errorf("at %v: negative rate: %s", at, line)
				}
			}
			if len(seen) != 8 {
				t.Errorf("at %v: %s for GPUs %v, want all 8", at, fam, seen)
			}
		}
		if !strings.Contains(body, `GPU_I_PROFILE="3g.40gb",GPU_I_ID="1"`) {
			t.Errorf("at %v: no MIG instance series", at)
		}
	}
}

// /v1/gpus lists a MIG GPU's instances with their profiling values, and its
// own ratio fields as missing per instance.
func TestGPUsViewListsMIGInstances(t *testing.T) {
	st, _ := demoAt(t, 130*time.Second)
	v := ViewGPUs(st.Snapshot(), time.Date(2026, 1, 2, 3, 6, 15, 0, time.UTC))
	g := v.GPUs[7]
	if g.Missing["DCGM_FI_PROF_SM_ACTIVE"] != "per_mig_instance" {
		t.Errorf("GPU 7 SM_ACTIVE missing as %q", g.Missing["DCGM_FI_PROF_SM_ACTIVE"])
	}
	if len(g.MIGInstances) != 3 || g.MIGInstances[0].Profile != "3g.40gb" || g.MIGInstances[0].Values["DCGM_FI_PROF_SM_ACTIVE"] <= 0 {
		t.Errorf("GPU 7 instances %+v", g.MIGInstances)
	}
	if len(v.GPUs[0].MIGInstances) != 0 {
		t.Errorf("GPU 0 is not in MIG mode: %+v", v.GPUs[0].MIGInstances)
	}
}

// The Xid event series the shipped alerts take increase() of are there at 0
// before the first Xid: a counter that first appears at 1 is no increase to
// Prometheus, and the node's first Xid would raise no alert.
func TestTheAlertedXidSeriesStartAtZero(t *testing.T) {
	st, _ := demoAt(t, 10*time.Second)
	before := scrape(t, st)
	for _, sev := range []string{"critical", "warning", "unknown"} {
		if v, ok := metricValueIn(before, `gpuwarden_events_total{kind="xid",severity="`+sev+`"}`); !ok || v != "0" {
			t.Errorf("before any Xid, the %s series is %q (present %v), want 0", sev, v, ok)
		}
	}
	st.ApplyEvent(event.Event{Source: "kmsg", Kind: event.KindXid, Code: 79, Severity: event.Critical,
		GPU: event.GPURef{Index: -1, PCIBusID: "0000:ba:00.0"}, Raw: "NVRM: Xid (PCI:0000:ba:00): 79, pid=0, GPU has fallen off the bus."})
	if v, _ := metricValueIn(scrape(t, st), `gpuwarden_events_total{kind="xid",severity="critical"}`); v != "1" {
		t.Errorf("after one critical Xid the series is %q, want 1", v)
	}
}

// metricValueIn is the value of the series written exactly as series.
func metricValueIn(body, series string) (string, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v, true
		}
	}
	return "", false
}
