package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

type notifyMsg struct {
	at   time.Time
	text string
}

// notifySocket listens where systemd would and collects what the agent says.
func notifySocket(t *testing.T) (string, <-chan notifyMsg) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan notifyMsg, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(strings.TrimSpace(string(buf[:n])), "\n") {
				ch <- notifyMsg{time.Now(), line}
			}
		}
	}()
	return path, ch
}

// hangTrace answers normally, then every NVML call hangs forever at hangAt.
func hangTrace(t *testing.T, hangAt float64) string {
	t.Helper()
	zero := 0
	tr := &replay.Trace{Header: replay.Header{Format: replay.Format, Version: replay.Version, Hostname: "hang", DurationS: 600,
		GPUs: []gpu.Info{{Index: 0, UUID: "GPU-0", Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:18:00.0"}}}}
	tr.Records = []replay.Record{
		{T: 0, GPU: &zero, NVML: map[string]replay.Answer{"GetTemperature(0)": {V: []byte("40")}}},
		{T: hangAt, HangS: -1},
	}
	p := filepath.Join(t.TempDir(), "hang.trace.jsonl")
	if err := replay.WriteFile(tr, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSystemdNotifyReadyWatchdogAndAStuckLoop(t *testing.T) {
	sock, msgs := notifySocket(t)
	const hangAt = 3.0
	gpuwardenBinary(t) // built before the clock starts
	trace := hangTrace(t, hangAt)
	start := time.Now()
	a := startAgent(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"},
		"--backend", "replay", "--replay", trace, "--collector.gpu.interval", "100ms",
		"--collector.kmsg=false", "--collector.dkms=false")

	var ready time.Time
	var status string
	var pings []time.Time
	deadline := time.After(time.Duration(hangAt*float64(time.Second)) + 2500*time.Millisecond)
collect:
	for {
		select {
		case m := <-msgs:
			switch {
			case m.text == "READY=1" && ready.IsZero():
				ready = m.at
			case strings.HasPrefix(m.text, "STATUS="):
				status = m.text
			case m.text == "WATCHDOG=1":
				pings = append(pings, m.at)
			}
		case <-deadline:
			break collect
		}
	}
	if ready.IsZero() {
		t.Fatal("no READY=1")
	}
	if status != "STATUS=1 GPUs, 0 unhealthy" {
		t.Errorf("last status %q", status)
	}
	hang := start.Add(time.Duration(hangAt * float64(time.Second)))
	if len(pings) > 0 {
		t.Logf("ready +%s, pings from +%s to +%s (%d), hang at +%s", ready.Sub(start), pings[0].Sub(start), pings[len(pings)-1].Sub(start), len(pings), hang.Sub(start))
	}
	var before, after int
	for _, p := range pings {
		if p.Before(ready) {
			t.Errorf("WATCHDOG=1 %s before READY=1", ready.Sub(p))
		}
		if p.Before(hang) {
			before++
		} else if p.After(hang.Add(500 * time.Millisecond)) {
			after++
		}
	}
	// WATCHDOG_USEC=400ms: a ping every 200 ms while sampling moves, so
	// about 10 in the 2+ s before the hang; none once the loop is stuck.
	if before < 6 {
		t.Errorf("%d watchdog pings before the hang, want about 10 (every 200 ms)", before)
	}
	if after != 0 {
		t.Errorf("%d watchdog pings while the sampling loop was stuck in NVML, want 0", after)
	}
	// Still serving from the snapshot while stuck, and STOPPING=1 on SIGTERM.
	if _, err := a.get("/metrics"); err != nil {
		t.Errorf("/metrics during the hang: %v", err)
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	stopDeadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-msgs:
			if m.text == "STOPPING=1" {
				return
			}
		case <-stopDeadline:
			t.Fatal("no STOPPING=1 after SIGTERM")
		}
	}
}

func TestReloadOnSIGHUPRefusesABadFileAndAppliesAGoodOne(t *testing.T) {
	sock, msgs := notifySocket(t)
	cfg := filepath.Join(t.TempDir(), "gpuwarden.yaml")
	os.WriteFile(cfg, []byte("collector.gpu.interval: 200ms\ngpu.expected: 0\n"), 0o644)
	a := startAgent(t, []string{"NOTIFY_SOCKET=" + sock}, "--config", cfg, "--backend", "replay", "--replay.loop",
		"--collector.kmsg=false", "--collector.dkms=false")
	os.WriteFile(cfg, []byte("collector.gpu.interval: soon\n"), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "bad reload refused in the log", func() bool {
		return strings.Contains(a.log.String(), "reload refused")
	})
	os.WriteFile(cfg, []byte("collector.gpu.interval: 200ms\ngpu.expected: 9\n"), 0o644)
	a.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "gpus_expected 9 after reload", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_gpus_expected")
		return v == "9"
	})
	// The datagram was sent before the reload took effect, but the test's
	// socket reader may not have passed it on yet on a loaded machine.
	sawReloading := false
	wait := time.After(3 * time.Second)
look:
	for !sawReloading {
		select {
		case m := <-msgs:
			sawReloading = m.text == "RELOADING=1"
		case <-wait:
			break look
		}
	}
	if !sawReloading {
		t.Error("no RELOADING=1 around the reload")
	}
	if !strings.Contains(a.mustGet(t, "/v1/health"), "8 of 9 expected GPUs visible") {
		t.Error("health does not use the reloaded gpu.expected")
	}
}
