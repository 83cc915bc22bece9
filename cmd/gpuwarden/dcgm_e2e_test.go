package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// This host has no DCGM: the real binary, built with the DCGM source, must
// start, say once that DCGM is missing and what serves profiling instead,
// report the source down and serve everything else.
func TestWithoutDCGMTheSourceIsDownAndTheRestIsServed(t *testing.T) {
	if _, err := exec.LookPath("nv-hostengine"); err == nil {
		t.Skip("DCGM is installed here")
	}
	help, err := exec.Command(gpuwardenBinary(t), "run", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("run --help: %v\n%s", err, help)
	}
	for _, flag := range []string{"--collector.dcgm ", "--collector.dcgm.address", "--collector.dcgm.interval", "--no-collector.dcgm"} {
		if !strings.Contains(string(help), flag) {
			t.Errorf("run --help does not name %s", flag)
		}
	}
	// On by default, in a replay too only when named (a host source);
	// named here. Absent DCGM is no fault: health stays what the GPUs say.
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.dcgm", "--collector.kmsg=false", "--collector.dkms=false", "--state.dir", t.TempDir())
	eventually(t, 20*time.Second, "dcgm collector down", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="dcgm"`)
		return v == "0"
	})
	m := a.mustGet(t, "/metrics")
	if v, _ := metricValue(m, "gpuwarden_collector_up", `collector="gpu"`); v != "1" {
		t.Errorf("GPU collector up = %q, want 1", v)
	}
	if _, ok := metricValue(m, "DCGM_FI_DEV_GPU_TEMP", `gpu="7"`); !ok {
		t.Error("GPU metrics stopped without DCGM")
	}
	if v, _ := metricValue(m, "gpuwarden_profiling_paused", ""); v != "0" {
		t.Errorf("gpuwarden_profiling_paused = %q, want 0", v)
	}
	h := a.mustGet(t, "/v1/health")
	if !strings.Contains(h, "DCGM not found (libdcgm.so.4)") || !strings.Contains(h, "datacenter-gpu-manager-4") {
		t.Errorf("/v1/health does not say DCGM is missing and how to get it:\n%s", h)
	}
	if strings.Contains(h, "collector dcgm is down") || !strings.Contains(h, `"absent": true`) {
		t.Errorf("an absent DCGM weighs on the host's health:\n%s", h)
	}
	log := a.log.String()
	if n := strings.Count(log, "DCGM not found (libdcgm.so.4): the GPM source is used for profiling"); n != 1 {
		t.Errorf("the cause is logged %d times, want once:\n%s", n, log)
	}
}

// With a libdcgm.so.4 that loads and starts an embedded hostengine but sees
// no GPU (a stand-in built here), the real go-dcgm path runs: Init, the GPU
// list, Shutdown, and again on the backoff; the source says what it found
// and the agent keeps serving.
func TestWithADCGMThatSeesNoGPUTheSourceSaysSo(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build the stand-in libdcgm.so.4")
	}
	lib := t.TempDir()
	if out, err := exec.Command(gcc, "-shared", "-fPIC", "-o", filepath.Join(lib, "libdcgm.so.4"),
		filepath.Join("testdata", "libdcgm-stub", "libdcgm.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	a := startAgent(t, []string{"LD_LIBRARY_PATH=" + lib}, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.dcgm", "--collector.kmsg=false", "--collector.dkms=false", "--state.dir", t.TempDir())
	eventually(t, 20*time.Second, "dcgm collector down", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="dcgm"`)
		return v == "0"
	})
	if h := a.mustGet(t, "/v1/health"); !strings.Contains(h, "DCGM sees no supported GPU") {
		t.Errorf("/v1/health does not say DCGM sees no GPU:\n%s", h)
	}
	// Past one backoff (5 s): Shutdown and a second Init did not kill it;
	// it still answers.
	time.Sleep(6 * time.Second)
	m := a.mustGet(t, "/metrics")
	if _, ok := metricValue(m, "DCGM_FI_DEV_GPU_TEMP", `gpu="7"`); !ok {
		t.Error("GPU metrics stopped")
	}
	if n := strings.Count(a.log.String(), "DCGM sees no supported GPU"); n != 1 {
		t.Errorf("the cause is logged %d times, want once:\n%s", n, a.log.String())
	}
}
