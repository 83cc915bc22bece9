package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// runCheckBinary runs gpuwarden check on a fixture and returns its stdout
// and exit code.
func runCheckBinary(t *testing.T, bin, scenario string, args ...string) (string, int) {
	t.Helper()
	root := filepath.Join("..", "..", "testdata", "rootfs", scenario)
	args = append([]string{"check", "--path.rootfs", root, "--path.procfs", "proc", "--path.sysfs", "sys"}, args...)
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("gpuwarden %v: %v", args, err)
	}
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	return string(out), code
}

type jsonCheck struct {
	Check    string   `json:"check"`
	Level    string   `json:"level"`
	Summary  string   `json:"summary"`
	Fix      string   `json:"fix"`
	NotRun   string   `json:"not_run"`
	Evidence []string `json:"evidence"`
}

type jsonCheckOutput struct {
	Level    string      `json:"level"`
	ExitCode int         `json:"exit_code"`
	Checks   []jsonCheck `json:"checks"`
	Health   struct {
		Level   string   `json:"level"`
		Reasons []string `json:"reasons"`
		Fix     string   `json:"fix"`
	} `json:"health"`
	Facts struct {
		RunningKernel string `json:"running_kernel"`
		NextBoot      struct {
			Kernel string `json:"kernel"`
		} `json:"next_boot"`
	} `json:"facts"`
}

func TestCheckCommandOnFixtures(t *testing.T) {
	tests := []struct {
		scenario string
		code     int
		level    string
		// check name -> level it must have in the JSON
		checks map[string]string
		fix    string // the health action must contain it
	}{
		{"healthy", 0, "ok", map[string]string{"next_boot_module": "ok", "driver_library_mismatch": "ok", "reboot_pending": "ok"}, ""},
		{"new-kernel-no-module", 2, "critical", map[string]string{"next_boot_module": "critical", "reboot_pending": "warning"}, "dkms autoinstall -k 6.1.0-20-amd64"},
		{"dkms-build-failed", 2, "critical", map[string]string{"next_boot_module": "critical", "dkms_build": "critical"}, "6.1.0-20-amd64"},
		{"headers-missing", 1, "warning", map[string]string{"kernel_headers": "warning", "next_boot_module": "ok"}, "apt-get install linux-headers-6.1.0-17-amd64"},
		{"driver-not-reloaded", 2, "critical", map[string]string{"driver_library_mismatch": "critical", "reboot_pending": "warning"}, "reboot"},
		{"secure-boot-unsigned", 2, "critical", map[string]string{"secure_boot_signature": "critical", "next_boot_module": "ok"}, "mokutil --import"},
		{"rpm-bls", 1, "warning", map[string]string{"reboot_pending": "warning", "next_boot_module": "ok", "kernel_headers": "ok"}, "reboot"},
	}
	bin := gpuwardenBinary(t)
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			out, code := runCheckBinary(t, bin, tt.scenario, "--output", "json")
			if code != tt.code {
				t.Errorf("exit code %d, want %d\n%s", code, tt.code, out)
			}
			var doc jsonCheckOutput
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			if doc.Level != tt.level || doc.ExitCode != tt.code || doc.Health.Level != tt.level {
				t.Errorf("level %q exit_code %d health %q, want %q %d", doc.Level, doc.ExitCode, doc.Health.Level, tt.level, tt.code)
			}
			got := map[string]jsonCheck{}
			for _, c := range doc.Checks {
				got[c.Check] = c
			}
			for name, level := range tt.checks {
				if got[name].Level != level {
					t.Errorf("%s = %q (%s), want %q", name, got[name].Level, got[name].Summary, level)
				}
			}
			if gpu := got[checkGPUName]; gpu.Level != "ok" || gpu.NotRun == "" {
				t.Errorf("without NVML wired and without --gpu, %s must be reported as not run: %+v", checkGPUName, gpu)
			}
			if !strings.Contains(doc.Health.Fix, tt.fix) {
				t.Errorf("health fix %q, want it to contain %q", doc.Health.Fix, tt.fix)
			}

			table, tcode := runCheckBinary(t, bin, tt.scenario)
			if tcode != tt.code {
				t.Errorf("table exit code %d, want %d", tcode, tt.code)
			}
			if !strings.HasPrefix(table, "gpuwarden check: "+strings.ToUpper(tt.level)+"\n") {
				t.Errorf("table starts %q", firstLine(table))
			}
			for name, level := range tt.checks {
				if !tableHasRow(table, level, name) {
					t.Errorf("table has no %q row for %s:\n%s", level, name, table)
				}
			}
			if tt.fix != "" && !strings.Contains(table, "fix: ") {
				t.Errorf("table shows no fix:\n%s", table)
			}
		})
	}
}

func tableHasRow(table, level, check string) bool {
	for l := range strings.SplitSeq(table, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == level && f[1] == check {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func TestCheckWithGPURequiredOnAFixtureRootIsUnknown(t *testing.T) {
	out, code := runCheckBinary(t, gpuwardenBinary(t), "healthy", "--gpu", "--output", "json")
	if code != 3 {
		t.Fatalf("exit code %d, want 3 (could not tell)\n%s", code, out)
	}
	var doc jsonCheckOutput
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range doc.Checks {
		if c.Check == checkGPUName && (c.Level != "unknown" || !strings.Contains(c.Summary, "could not run: --path.rootfs is")) {
			t.Errorf("%s = %+v", checkGPUName, c)
		}
	}
}

func TestCheckOnAMissingRootCannotTell(t *testing.T) {
	cmd := exec.Command(gpuwardenBinary(t), "check", "--path.rootfs", filepath.Join(t.TempDir(), "absent"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), "--path.rootfs") {
		t.Fatalf("err %v, output %s; want exit 3 naming --path.rootfs", err, out)
	}
}

// Unreadable is unknown, never ok: run as the unit runs it (root without
// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), a DKMS tree it may not read
// and a running kernel it cannot read make their checks unknown, with the
// cause, and the exit code 3.
func TestCheckOnAnUnreadableTreeIsUnknown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop capabilities")
	}
	capsh, err := exec.LookPath("capsh")
	if err != nil {
		t.Skip("needs capsh (libcap2-bin)")
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	if out, err := exec.Command("cp", "-a", filepath.Join("..", "..", "testdata", "rootfs", "healthy")+"/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	for _, p := range []string{"var/lib/dkms/nvidia", "proc/sys/kernel/osrelease"} {
		full := filepath.Join(root, p)
		if err := os.Chown(full, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		os.Chmod(full, 0o700)
	}
	bin := gpuwardenBinary(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	cmd := exec.Command(capsh, "--drop=cap_dac_override,cap_dac_read_search", "--", "-c",
		bin+" check --path.rootfs "+root+" --path.procfs proc --path.sysfs sys --output json")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit %v, want 3 (unknown)\n%s", err, out)
	}
	var rep struct {
		Checks []jsonCheck `json:"checks"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := map[string]jsonCheck{}
	for _, c := range rep.Checks {
		got[c.Check] = c
	}
	if c := got["dkms_build"]; c.Level != "unknown" || !strings.Contains(c.Summary, "permission denied") {
		t.Errorf("dkms_build = %+v, want unknown naming the permission error", c)
	}
	if c := got["reboot_pending"]; c.Level != "unknown" || !strings.Contains(c.Summary, "running kernel") {
		t.Errorf("reboot_pending = %+v, want unknown: the running kernel could not be read", c)
	}
}

// Files of the host tree are read as files from outside: a FIFO at
// /etc/os-release cannot hang the check, a build log linked to /dev/zero
// cannot exhaust memory, and a link that leaves --path.rootfs is not
// followed out of it.
func TestCheckRefusesFIFOsDevicesAndEscapingLinks(t *testing.T) {
	root := t.TempDir()
	if out, err := exec.Command("cp", "-a", filepath.Join("..", "..", "testdata", "rootfs", "dkms-build-failed")+"/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	os.Remove(filepath.Join(root, "etc", "os-release"))
	if err := syscall.Mkfifo(filepath.Join(root, "etc", "os-release"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(root, "var/lib/dkms/nvidia/*/build/make.log"))
	if len(logs) == 0 {
		t.Fatal("fixture has no make.log")
	}
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("DKMS make.log for nvidia-1 for kernel 9.9.9-outside (x86_64)\nSECRET-OUTSIDE-ROOT\n"), 0o644)
	for _, target := range []string{"/dev/zero", outside} {
		os.Remove(logs[0])
		os.Symlink(target, logs[0])
		cmd := exec.Command(gpuwardenBinary(t), "check", "--path.rootfs", root, "--path.procfs", "proc", "--path.sysfs", "sys", "--output", "json")
		done := make(chan struct{})
		var out []byte
		go func() { out, _ = cmd.Output(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("make.log -> %s: check hung on a FIFO or a device in the host tree", target)
		}
		if strings.Contains(string(out), "SECRET-OUTSIDE-ROOT") || strings.Contains(string(out), "9.9.9-outside") {
			t.Error("a link out of --path.rootfs was followed")
		}
		if rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss; rss > 200<<10 {
			t.Errorf("make.log -> %s: check used %d KiB", target, rss)
		}
		if !strings.Contains(string(out), `"checks"`) {
			t.Errorf("make.log -> %s: no report:\n%s", target, out)
		}
	}
}

// A usage error of check is UNKNOWN (3), never WARNING (1).
func TestCheckUsageErrorsExitUnknown(t *testing.T) {
	for _, args := range [][]string{{"check", "--bogus"}, {"check", "extra-arg"}, {"check", "--output", "yaml"}} {
		err := exec.Command(gpuwardenBinary(t), args...).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Errorf("gpuwarden %v: %v, want exit 3", args, err)
		}
	}
}

// status exits as check does: the worst GPU's level, a lost GPU critical.
func TestStatusExitCodeIsTheWorstGPU(t *testing.T) {
	ok := agent.GPUView{Health: agent.Health{Level: event.OK}}
	warn := agent.GPUView{Health: agent.Health{Level: event.Warning}}
	lost := agent.GPUView{Lost: true, Health: agent.Health{Level: event.OK}}
	for _, tc := range []struct {
		v    agent.GPUsView
		want event.Level
	}{
		{agent.GPUsView{GPUs: []agent.GPUView{ok, ok}}, event.OK},
		{agent.GPUsView{GPUs: []agent.GPUView{ok, warn}}, event.Warning},
		{agent.GPUsView{GPUs: []agent.GPUView{warn, lost}}, event.Critical},
		{agent.GPUsView{}, event.Unknown},
		{agent.GPUsView{GPUs: []agent.GPUView{ok}, Collector: &agent.CollectorState{Up: false}}, event.Unknown},
	} {
		if got := statusLevel(tc.v); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.v, got, tc.want)
		}
	}
}
