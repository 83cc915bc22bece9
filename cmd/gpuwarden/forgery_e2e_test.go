package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAnUnprivilegedForgeryChangesNoGPUsHealth runs the real agent on the
// real kernel log while a program run as nobody names itself "NVRM: " and
// segfaults from a binary named like the driver's fallen-off-the-bus line for
// the agent's own GPU. The kernel's segfault report then begins with that
// text; the agent must count it as rejected and leave the GPU healthy.
func TestAnUnprivilegedForgeryChangesNoGPUsHealth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a program as nobody and reads /dev/kmsg")
	}
	for _, tool := range []string{"gcc", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	if b, err := os.ReadFile("/proc/sys/debug/exception-trace"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Skip("the kernel prints segfault reports only with debug.exception-trace=1")
	}
	trace, bus, _ := uniqueGPUTrace(t)
	a := startAgent(t, nil, "--backend", "replay", "--replay", trace, "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.kmsg=true", "--collector.dkms=false", "--state.dir", t.TempDir())
	rejected := func() int {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_kmsg_rejected_records_total", `reason="process_name_prefix"`)
		n, _ := strconv.Atoi(v)
		return n
	}
	eventually(t, 10*time.Second, "kmsg collector up", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="kmsg"`)
		return v == "1"
	})
	before := rejected()

	forgeFallenOffTheBus(t, bus)
	eventually(t, 10*time.Second, "the forged record counted as rejected", func() bool { return rejected() > before })
	// The ring holds other tests' real lines for other bus ids: look at
	// this GPU only.
	if evs := a.mustGet(t, "/v1/events?gpu=0"); strings.Contains(evs, "fallen_off_bus") {
		t.Errorf("a forged line became an event for the GPU:\n%s", evs)
	}
	m := a.mustGet(t, "/metrics")
	if v, _ := metricValue(m, "gpuwarden_gpu_health", `gpu="0"`); v != "0" {
		t.Errorf("gpuwarden_gpu_health{gpu=\"0\"} = %q after a forgery, want 0 (ok)\n%s", v, a.mustGet(t, "/v1/health"))
	}
}

// forgeFallenOffTheBus makes the kernel print, as an unprivileged user, a
// segfault report that reads like the driver's fallen-off-the-bus line for
// bus: a process renamed "NVRM: " crashing in a binary named after the
// driver's sentence.
func forgeFallenOffTheBus(t *testing.T, bus string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "gpuwarden-forgery-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "GPU "+bus+".0 has fallen off the bus")
	if out, err := exec.Command("gcc", "-O0", "-o", bin, "../../collectors/kmsg/testdata/forge/segv.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	cmd := exec.Command("runuser", "-u", "nobody", "--", bin, "NVRM: ")
	cmd.Dir = dir
	var ee *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &ee) {
		t.Fatalf("the forger did not crash: %v", err)
	}
}
