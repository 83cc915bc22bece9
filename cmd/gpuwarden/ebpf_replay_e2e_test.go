package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/collectors/replay/simulator"
)

// writeScenarioTrace writes the trace of a scenario file to out, as
// `gpuwarden record --backend mock` does in a binary built with the
// simulator (record_simulator.go); the agent's own build leaves it out.
func writeScenarioTrace(t *testing.T, scenario, out string) {
	t.Helper()
	sc, err := replay.LoadScenario(scenario)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := replay.RecordScenario(sc, simulator.New(sc), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("record %s: %v", scenario, err)
	}
	if err := replay.WriteFile(tr, out); err != nil {
		t.Fatal(err)
	}
}

// The agent's binary has no simulator, and `record --backend mock` says so
// and how to get one, before it writes anything.
func TestRecordingAScenarioWithoutTheSimulatorSaysHowToBuildIt(t *testing.T) {
	out := filepath.Join(t.TempDir(), "demo.trace.jsonl.gz")
	cmd := exec.Command(gpuwardenBinary(t), "record", "--backend", "mock",
		"--scenario", "../../testdata/scenarios/dgx-h100-demo.yaml", "--out", out)
	msg, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("record --backend mock: %v, want an exit status\n%s", err, msg)
	}
	for _, want := range []string{"without the scenario simulator", "-tags simulator", "make demo-trace"} {
		if !strings.Contains(string(msg), want) {
			t.Errorf("record --backend mock does not say %q:\n%s", want, msg)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("record --backend mock wrote %s", out)
	}
}

// A replayed trace carries what the eBPF source saw on a production kernel
// (this one has no ras/aer_event and no module/* tracepoints): recorded
// from testdata/scenarios/ebpf-replay.yaml as `record --backend mock` does,
// played by the agent with --collector.ebpf through the source's own
// decoder.
//
//   - the PCIe AER on GPU 2, in the kernel log and from the tracepoint, is
//     one event in /v1/events, and the second copy is counted as joined;
//   - the NVIDIA module load makes the driver checks run at once: the
//     fixture's loaded module is changed under /proc (a tree nothing
//     watches) after the first pass, the checks run every hour, and the
//     mismatch clears when the load replays;
//   - the OOM kill of the demo job's GPU process names the job, is a GPU
//     process, and is counted in gpuwarden_oom_kills_total;
//   - status shows whose work is on each GPU, and explain --agent whose
//     work the OOM kill hit.
func TestAReplayedTracesEBPFRecordsReachTheAgent(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "ebpf.trace.jsonl")
	writeScenarioTrace(t, "../../testdata/scenarios/ebpf-replay.yaml", trace)
	root := filepath.Join(dir, "root")
	if out, err := exec.Command("cp", "-a", "../../testdata/rootfs/driver-not-reloaded/.", root+"/").CombinedOutput(); err != nil {
		t.Fatalf("copy fixture: %v\n%s", err, out)
	}
	a := startAgent(t, nil, "--backend", "replay", "--replay", trace, "--collector.gpu.interval", "200ms",
		"--collector.kmsg=false", "--collector.ebpf=true", "--collector.dkms=true", "--collector.dkms.interval", "1h",
		"--path.rootfs", root, "--path.procfs", "proc", "--path.sysfs", "sys", "--state.dir", filepath.Join(dir, "state"))
	mismatch := func() string {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_check_status", `check="driver_library_mismatch"`)
		return v
	}
	// The trace's module load is at 8 s.
	eventually(t, 7*time.Second, "the first check finds the old module loaded", func() bool { return mismatch() == "2" })
	version := filepath.Join(root, "proc/driver/nvidia/version")
	b, err := os.ReadFile(version)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(version, []byte(strings.ReplaceAll(string(b), "535.104.05", "550.54.15")), 0o644); err != nil {
		t.Fatal(err)
	}
	if mismatch() != "2" {
		t.Fatal("the checks ran again before the module load: the test proves nothing")
	}

	var oom event.Event
	eventually(t, 15*time.Second, "the OOM kill in /v1/events", func() bool {
		var evs []event.Event
		json.Unmarshal([]byte(a.mustGet(t, "/v1/events?kind=oom_kill")), &evs)
		for _, e := range evs {
			if e.Fields["pid"] == "31337" {
				oom = e
				return true
			}
		}
		return false
	})
	if oom.Source != "ebpf" || oom.Fields["owners"] != "slurm job 4242.0 (demo)" || oom.Fields["gpu_process"] != "true" ||
		oom.Fields["memcg"] != "/slurm/uid_1000/job_4242/step_0" || oom.Fields["process_name"] != "python3" {
		t.Errorf("oom_kill event: source %q fields %v", oom.Source, oom.Fields)
	}
	// The OOM kill is at 9 s, the module load at 8 s: the triggered pass
	// has had a second.
	eventually(t, 3*time.Second, "the module load re-ran the driver checks", func() bool { return mismatch() == "0" })
	if !strings.Contains(a.log.String(), `msg="NVIDIA driver module event: checking the driver now" kind=driver_loaded source=ebpf module=nvidia`) {
		t.Errorf("the log does not say the eBPF module load ran the checks:\n%s", a.log.String())
	}

	var aers []event.Event
	json.Unmarshal([]byte(a.mustGet(t, "/v1/events?kind=aer")), &aers)
	if len(aers) != 1 || aers[0].GPU.Index != 2 || aers[0].Fields["aer_severity"] != "corrected" {
		t.Errorf("AER events %+v, want one on GPU 2", aers)
	}
	m := a.mustGet(t, "/metrics")
	for _, want := range []struct{ metric, labels, value string }{
		{"gpuwarden_ebpf_events_total", `program="ras/aer_event"`, "1"},
		{"gpuwarden_events_joined_total", `kind="aer"`, "1"},
		{"gpuwarden_ebpf_events_total", `program="module/module_load"`, "1"},
	} {
		if got, _ := metricValue(m, want.metric, want.labels); got != want.value {
			t.Errorf("%s{%s} = %q, want %s", want.metric, want.labels, got, want.value)
		}
	}
	// This host's own OOM program may count kills of its own as well.
	v, _ := metricValue(m, "gpuwarden_oom_kills_total")
	if n, err := strconv.ParseFloat(v, 64); err != nil || n < 1 {
		t.Errorf("gpuwarden_oom_kills_total = %q, want the trace's kill counted", v)
	}

	// explain on the agent's events says whose work each hit: the OOM
	// kill names the job (it names no GPU: the host section).
	// It exits 2: the driver checks' critical finding is among the events.
	out, err := exec.Command(gpuwardenBinary(t), "explain", "--agent", a.addr).Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("explain --agent: %v, want exit 2 (critical)\n%s", err, out)
	}
	host := ""
	if i := strings.Index(string(out), "\nHost (events that name no device)"); i >= 0 {
		host = string(out)[i:]
	}
	if !strings.Contains(string(out), "events from the agent at http://"+a.addr) || !strings.Contains(string(out), "\nGPU 0000:3a:00.0 (GPU-") ||
		!strings.Contains(string(out), "  - driver_loaded [ok]") || !strings.Contains(host, "oom_kill OOM_KILL") ||
		!strings.Contains(host, "    owners:        slurm job 4242.0 (demo)\n") {
		t.Errorf("explain --agent does not name the OOM kill's job:\n%s", out)
	}

	out, _ = exec.Command(gpuwardenBinary(t), "status", "--agent", a.addr).Output()
	lines := strings.Split(string(out), "\n")
	if len(lines) < 4 || !strings.Contains(lines[0], "OWNERS") || !strings.Contains(lines[1], "slurm job 4242.0 (demo)") ||
		!strings.Contains(lines[2], "slurm job 4242.0 (demo)") || strings.Contains(lines[3], "slurm") {
		t.Errorf("status does not show the job on GPUs 0 and 1 only:\n%s", out)
	}
}

// Without --collector.ebpf a replay plays none of the trace's eBPF records
// (the source reads a host, off in a replay unless named) and says so.
func TestAReplayWithoutTheEBPFSourceSaysItsRecordsAreNotPlayed(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "ebpf.trace.jsonl")
	writeScenarioTrace(t, "../../testdata/scenarios/ebpf-replay.yaml", trace)
	a := startAgent(t, nil, "--backend", "replay", "--replay", trace, "--state.dir", filepath.Join(dir, "state"))
	eventually(t, 5*time.Second, "the log says why", func() bool {
		return strings.Contains(a.log.String(), `the trace's eBPF records are not played`) && strings.Contains(a.log.String(), "records=3")
	})
	if _, ok := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_ebpf_program_up"); ok {
		t.Error("the eBPF source runs in a replay without being named")
	}
}

// A binary built with -tags simulator (as make demo-trace builds it)
// records a scenario through its own command line, and writes the trace
// the in-process recording writes.
func TestTheSimulatorBuildRecordsAScenario(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "gpuwarden-simulator")
	build := exec.Command("go", "build", "-trimpath", "-tags", "simulator", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -Wno-deprecated-declarations")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags simulator: %v\n%s", err, out)
	}
	const scenario = "../../testdata/scenarios/ebpf-replay.yaml"
	got, want := filepath.Join(dir, "cli.trace.jsonl"), filepath.Join(dir, "in-process.trace.jsonl")
	if out, err := exec.Command(bin, "record", "--backend", "mock", "--scenario", scenario, "--out", got).CombinedOutput(); err != nil {
		t.Fatalf("record --backend mock: %v\n%s", err, out)
	}
	writeScenarioTrace(t, scenario, want)
	g, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(g) == 0 || string(g) != string(w) {
		t.Errorf("the simulator build's trace (%d bytes) differs from the in-process one (%d bytes)", len(g), len(w))
	}
}
