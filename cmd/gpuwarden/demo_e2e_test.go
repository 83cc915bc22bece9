package main

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Through the demo's loops (35 minutes each, 3.5 s at 600x): once GPU 3 has
// fallen off the bus, gpuwarden_gpu_lost stays 1 beside its critical
// health, in the next loop too, and the counters never go back.
func TestTheDemoLoopIsOneBootLostGPUStaysLostCountersGoOn(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--replay.speed", "600",
		"--collector.gpu.interval", "100ms", "--state.dir", t.TempDir())
	num := func(body, metric string, m ...string) (float64, bool) {
		s, ok := metricValue(body, metric, m...)
		if !ok {
			return 0, false
		}
		v, err := strconv.ParseFloat(s, 64)
		return v, err == nil
	}
	wasLost := false
	var energy, xid float64
	scrapes := 0
	deadline := time.Now().Add(30 * time.Second)
	// Two loops past the first: Xid 48 comes twice a loop (90 s and 420 s).
	for xid < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not loop twice in 30 s (Xid 48 counted %v times)", xid)
		}
		time.Sleep(50 * time.Millisecond)
		body, err := a.get("/metrics")
		if err != nil {
			continue
		}
		scrapes++
		lost, _ := num(body, "gpuwarden_gpu_lost", `gpu="3"`)
		health, _ := num(body, "gpuwarden_gpu_health", `gpu="3"`)
		if wasLost && (lost != 1 || health != 2) {
			t.Fatalf("GPU 3 after it fell off the bus: gpu_lost %v, health %v (Xid 48 counted %v times); want lost and critical", lost, health, xid)
		}
		wasLost = wasLost || lost == 1
		if e, ok := num(body, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", `gpu="0"`); ok {
			if e < energy {
				t.Fatalf("GPU 0's energy went back from %v to %v (Xid 48 counted %v times)", energy, e, xid)
			}
			energy = e
		}
		if x, ok := num(body, "gpuwarden_xid_errors_total", `gpu="5"`, `xid="48"`); ok {
			if x < xid {
				t.Fatalf("Xid 48 count went back from %v to %v", xid, x)
			}
			xid = x
		}
	}
	if !wasLost {
		t.Fatal("GPU 3 never fell off the bus")
	}
	t.Logf("%d scrapes over two loops", scrapes)
}

// GPU 3's events start with the demo, not four minutes in: its PCIe link
// logs corrected errors from 30 s, before it falls off the bus at 240 s.
func TestTheDemosGPU3HasEventsFromTheStart(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--replay.speed", "10",
		"--collector.gpu.interval", "200ms", "--state.dir", t.TempDir())
	start := time.Now()
	// 60 s of the trace at 10x, with room for the agent's start.
	eventually(t, 8*time.Second, "an event of GPU 3 in /v1/events?gpu=3", func() bool {
		var evs []struct {
			GPU struct {
				Index int `json:"index"`
			} `json:"gpu"`
			Kind string `json:"kind"`
		}
		body, err := a.get("/v1/events?gpu=3")
		if err != nil || json.Unmarshal([]byte(body), &evs) != nil {
			return false
		}
		for _, e := range evs {
			if e.GPU.Index != 3 {
				t.Fatalf("/v1/events?gpu=3 holds an event of GPU %d: %s", e.GPU.Index, body)
			}
		}
		return len(evs) > 0
	})
	t.Logf("first GPU 3 event after %s", time.Since(start).Round(100*time.Millisecond))
}

// gpuwarden check on the replayed demo judges the demo's recorded host, not
// this machine: the pending kernel without an NVIDIA module is critical,
// and so is the driver upgraded on disk but not loaded. (Its GPUs are
// those of the trace's first moment, all on the bus.)
func TestCheckOnTheReplayedDemoJudgesItsRecordedHost(t *testing.T) {
	out, err := exec.Command(gpuwardenBinary(t), "check", "--backend", "replay", "-o", "json").Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("check on the demo: %v, want exit 2 (critical)\n%s", err, out)
	}
	var r struct {
		Checks []struct {
			Check, Level, Summary string
		} `json:"checks"`
		Facts struct {
			RunningKernel string `json:"running_kernel"`
			NextBoot      struct {
				Kernel string `json:"kernel"`
			} `json:"next_boot"`
		} `json:"facts"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Facts.RunningKernel != "5.15.0-105-generic" || r.Facts.NextBoot.Kernel != "5.15.0-107-generic" {
		t.Errorf("kernels %+v: want the demo node's, not this machine's", r.Facts)
	}
	levels := map[string]string{}
	for _, c := range r.Checks {
		levels[c.Check] = c.Level
	}
	for check, want := range map[string]string{"next_boot_module": "critical", "driver_library_mismatch": "critical",
		"kernel_headers": "warning", "reboot_pending": "warning", "gpu_visible": "ok"} {
		if levels[check] != want {
			t.Errorf("%s: %q, want %s\n%s", check, levels[check], want, out)
		}
	}
	// The table says the same.
	table, _ := exec.Command(gpuwardenBinary(t), "check", "--backend", "replay").Output()
	if !strings.Contains(string(table), "kernel: running 5.15.0-105-generic; next boot 5.15.0-107-generic") {
		t.Errorf("check's table:\n%s", table)
	}
}

// The agent on the demo, with no flag about DKMS, exports the demo node's
// kernel, driver and DKMS series: the dashboards' panels have data.
func TestTheReplayedDemoExportsItsHostsDKMSSeries(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms", "--state.dir", t.TempDir())
	var body string
	eventually(t, 15*time.Second, "the DKMS series", func() bool {
		body = a.mustGet(t, "/metrics")
		return strings.Contains(body, "gpuwarden_check_status{")
	})
	for _, want := range []string{
		`gpuwarden_kernel_info{running="5.15.0-105-generic",next_boot="5.15.0-107-generic"} 1`,
		`gpuwarden_nvidia_module_present{kernel="5.15.0-107-generic"} 0`,
		`gpuwarden_dkms_module_state{module="nvidia",version="550.90.07",kernel="5.15.0-105-generic",arch="x86_64",state="installed"} 1`,
		"gpuwarden_driver_library_mismatch 1",
		"gpuwarden_reboot_pending 1",
		`gpuwarden_check_status{check="next_boot_module"} 2`,
		// Judged on the first pass, which waits for the GPU collector's
		// first round: NVML's 550.54.15 against the installed 550.90.07.
		`gpuwarden_check_status{check="nvml_version"} 1`,
		`gpuwarden_collector_up{collector="dkms"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in /metrics", want)
		}
	}
	// Turned off, it is off.
	b := startAgent(t, nil, "--backend", "replay", "--collector.gpu.interval", "200ms", "--state.dir", t.TempDir(), "--no-collector.dkms")
	eventually(t, 10*time.Second, "GPU series", func() bool { return strings.Contains(b.mustGet(t, "/metrics"), "DCGM_FI_DEV_GPU_TEMP{") })
	if m := b.mustGet(t, "/metrics"); strings.Contains(m, "gpuwarden_check_status{") {
		t.Error("--no-collector.dkms still runs the checks on the replay")
	}
}
