package dkms

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// fixturePaths returns the paths of a fixture tree under testdata/rootfs.
func fixturePaths(scenario string) Paths {
	return Paths{RootFS: filepath.Join("..", "testdata", "rootfs", scenario), ProcFS: "proc", SysFS: "sys"}
}

func checkFixture(t *testing.T, scenario string) Report {
	t.Helper()
	return NewChecker(Config{Paths: fixturePaths(scenario)}).Check(context.Background())
}

// want is what one check must say in a scenario: its level and, when set,
// words its summary, fix and evidence must contain.
type want struct {
	level    event.Level
	summary  string
	fix      string
	evidence string
}

func TestScenarios(t *testing.T) {
	ok := want{level: event.OK}
	tests := []struct {
		scenario string
		level    event.Level
		next     string
		checks   map[string]want
	}{
		{
			scenario: "healthy", level: event.OK, next: "6.1.0-18-amd64",
			checks: map[string]want{
				CheckNextBootModule: {level: event.OK, evidence: "/lib/modules/6.1.0-18-amd64/updates/dkms/nvidia.ko (dkms, version 535.104.05)"},
				CheckDKMSBuild:      ok, CheckKernelHeaders: ok, CheckDriverLoaded: ok, CheckDriverLibrary: ok,
				CheckRebootPending: ok, CheckSecureBoot: {level: event.OK, summary: "Secure Boot is off"},
				CheckNVML: {level: event.OK, summary: "not run: NVML is not wired"},
			},
		},
		{
			scenario: "new-kernel-no-module", level: event.Critical, next: "6.1.0-20-amd64",
			checks: map[string]want{
				CheckNextBootModule: {level: event.Critical, summary: "the node will come up without GPUs", fix: "dkms autoinstall -k 6.1.0-20-amd64"},
				CheckRebootPending:  {level: event.Warning, summary: "kernel 6.1.0-18-amd64 -> 6.1.0-20-amd64", fix: "do not reboot yet", evidence: "/var/run/reboot-required exists"},
				CheckDKMSBuild:      ok, CheckKernelHeaders: ok, CheckDriverLibrary: ok,
			},
		},
		{
			scenario: "dkms-build-failed", level: event.Critical, next: "6.1.0-20-amd64",
			checks: map[string]want{
				CheckNextBootModule: {level: event.Critical, summary: "6.1.0-20-amd64", evidence: "dkms: nvidia/535.104.05 for 6.1.0-20-amd64/x86_64 is build-failed"},
				CheckDKMSBuild: {level: event.Critical, summary: "failed to build for 6.1.0-20-amd64",
					fix: "read /var/lib/dkms/nvidia/535.104.05/build/make.log", evidence: "implicit declaration of function 'vm_flags_set'"},
				CheckRebootPending: {level: event.Warning, evidence: "grubenv saved_entry"},
			},
		},
		{
			scenario: "headers-missing", level: event.Warning, next: "6.1.0-18-amd64",
			checks: map[string]want{
				CheckKernelHeaders:  {level: event.Warning, summary: "6.1.0-17-amd64", fix: "apt-get install linux-headers-6.1.0-17-amd64 && dkms autoinstall -k 6.1.0-17-amd64"},
				CheckNextBootModule: ok, CheckRebootPending: ok,
			},
		},
		{
			scenario: "driver-not-reloaded", level: event.Critical, next: "6.1.0-18-amd64",
			checks: map[string]want{
				CheckDriverLibrary:  {level: event.Critical, summary: "loaded NVIDIA module 535.104.05 but userspace library 550.54.15", fix: "reboot, or when no process has a GPU open"},
				CheckRebootPending:  {level: event.Warning, summary: "NVIDIA driver 535.104.05 -> 550.54.15", evidence: "/var/run/reboot-required exists"},
				CheckDriverLoaded:   {level: event.OK, summary: "535.104.05 (open)"},
				CheckNextBootModule: ok,
			},
		},
		{
			scenario: "secure-boot-unsigned", level: event.Critical, next: "6.1.0-20-amd64",
			checks: map[string]want{
				CheckSecureBoot:     {level: event.Critical, summary: "/lib/modules/6.1.0-20-amd64/updates/dkms/nvidia.ko has no signature", fix: "mokutil --import /var/lib/dkms/mok.pub"},
				CheckNextBootModule: ok,
				CheckRebootPending:  {level: event.Warning},
			},
		},
		{
			scenario: "rpm-bls", level: event.Warning, next: "5.14.0-503.29.1.el9_5.x86_64",
			checks: map[string]want{
				CheckNextBootModule: {level: event.OK, summary: "grubenv saved_entry", evidence: "/lib/modules/5.14.0-503.29.1.el9_5.x86_64/extra/nvidia.ko (extra, version 570.86.15)"},
				CheckRebootPending:  {level: event.Warning, summary: "kernel 5.14.0-427.13.1.el9_4.x86_64 -> 5.14.0-503.29.1.el9_5.x86_64"},
				CheckKernelHeaders:  ok, CheckDriverLibrary: ok, CheckDKMSBuild: ok,
				CheckDriverLoaded: {level: event.OK, summary: "570.86.15 (open)"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			r := checkFixture(t, tt.scenario)
			if len(r.Facts.Problems) > 0 {
				t.Errorf("problems reading the fixture: %q", r.Facts.Problems)
			}
			if r.Level != tt.level {
				t.Errorf("level = %s, want %s; findings: %+v", r.Level, tt.level, r.Findings())
			}
			if r.Facts.NextBoot.Kernel != tt.next {
				t.Errorf("next boot = %+v, want %s", r.Facts.NextBoot, tt.next)
			}
			for name, w := range tt.checks {
				c, found := r.Check(name)
				if !found {
					t.Errorf("check %s missing", name)
					continue
				}
				if c.Level != w.level {
					t.Errorf("%s level = %s, want %s (%s)", name, c.Level, w.level, c.Summary)
				}
				if !strings.Contains(c.Summary, w.summary) {
					t.Errorf("%s summary = %q, want it to contain %q", name, c.Summary, w.summary)
				}
				if !strings.Contains(c.Fix, w.fix) {
					t.Errorf("%s fix = %q, want it to contain %q", name, c.Fix, w.fix)
				}
				if w.evidence != "" && !strings.Contains(strings.Join(c.Evidence, "\n"), w.evidence) {
					t.Errorf("%s evidence = %q, want it to contain %q", name, c.Evidence, w.evidence)
				}
				if c.Level != event.OK && c.Fix == "" && c.Level != event.Unknown {
					t.Errorf("%s is %s without a fix", name, c.Level)
				}
			}
			h := r.Health()
			if h.Level != tt.level {
				t.Errorf("health level = %s, want %s", h.Level, tt.level)
			}
			if tt.level != event.OK && (len(h.Reasons) == 0 || h.Fix == "") {
				t.Errorf("health without reasons or action: %+v", h)
			}
		})
	}
}

func TestHealthPutsTheWorstFindingFirst(t *testing.T) {
	r := checkFixture(t, "new-kernel-no-module")
	h := r.Health()
	if len(h.Reasons) != 2 || !strings.HasPrefix(h.Reasons[0], CheckNextBootModule+":") || !strings.HasPrefix(h.Reasons[1], CheckRebootPending+":") {
		t.Fatalf("reasons = %q, want next_boot_module then reboot_pending", h.Reasons)
	}
	if h.Fix != "dkms autoinstall -k 6.1.0-20-amd64" {
		t.Errorf("fix = %q", h.Fix)
	}
}

func TestFactsOfTheRPMFixture(t *testing.T) {
	r := checkFixture(t, "rpm-bls")
	f := r.Facts
	if f.Family != "rpm" || f.RunningKernel != "5.14.0-427.13.1.el9_4.x86_64" {
		t.Errorf("family %q running %q", f.Family, f.RunningKernel)
	}
	if len(f.Kernels) != 2 || f.Kernels[0].Image != "/lib/modules/5.14.0-427.13.1.el9_4.x86_64/vmlinuz" || !f.Kernels[1].Headers {
		t.Errorf("kernels = %+v", f.Kernels)
	}
	if f.Library == nil || f.Library.Path != "/usr/lib64/libnvidia-ml.so.570.86.15" {
		t.Errorf("library = %+v", f.Library)
	}
	if len(f.DKMS) != 2 || f.DKMS[1].Module != "nvidia-open" || f.DKMS[1].State != StateInstalled {
		t.Errorf("dkms = %+v", f.DKMS)
	}
	if len(f.Reboot.Packages) != 0 || !f.Reboot.Pending {
		t.Errorf("reboot = %+v", f.Reboot)
	}
}

func TestHeadersMissingForTheNextKernelSaysInstallHeadersFirst(t *testing.T) {
	r := checkFixture(t, "new-kernel-no-module")
	f := r.Facts
	for i := range f.Kernels {
		if f.Kernels[i].Release == "6.1.0-20-amd64" {
			f.Kernels[i].Headers = false
		}
	}
	c := Evaluate(&f, func(m string) bool { return m == "nvidia" })[0]
	want := "apt-get install linux-headers-6.1.0-20-amd64 && dkms autoinstall -k 6.1.0-20-amd64"
	if c.Check != CheckNextBootModule || c.Level != event.Critical || !strings.Contains(c.Fix, want) {
		t.Fatalf("got %+v, want critical with fix %q", c, want)
	}
}

func TestNVMLMismatchIsCritical(t *testing.T) {
	probe := func(context.Context) (string, error) {
		return "", errText("ERROR_LIB_RM_VERSION_MISMATCH")
	}
	r := NewChecker(Config{Paths: fixturePaths("driver-not-reloaded"), NVML: probe}).Check(context.Background())
	c, _ := r.Check(CheckNVML)
	if c.Level != event.Critical || !r.Facts.NVML.Mismatch || !strings.Contains(strings.Join(c.Evidence, " "), "loaded module 535.104.05, userspace library 550.54.15") {
		t.Fatalf("nvml check = %+v", c)
	}
	good := func(context.Context) (string, error) { return "535.104.05", nil }
	r = NewChecker(Config{Paths: fixturePaths("healthy"), NVML: good}).Check(context.Background())
	if c, _ := r.Check(CheckNVML); c.Level != event.OK || c.NotRun != "" {
		t.Fatalf("nvml check on a healthy host = %+v", c)
	}
}

type errText string

func (e errText) Error() string { return string(e) }

func TestExtraChecksAreReported(t *testing.T) {
	gpu := func(context.Context) []Finding {
		return []Finding{{Check: "gpu_visible", Level: event.Critical, Summary: "7 of 8 GPUs visible", Fix: "reset or replace GPU 3"}}
	}
	r := NewChecker(Config{Paths: fixturePaths("healthy"), Extra: []ExtraCheck{gpu}}).Check(context.Background())
	if c, ok := r.Check("gpu_visible"); !ok || r.Level != event.Critical || c.Summary != "7 of 8 GPUs visible" {
		t.Fatalf("level %s, checks %+v", r.Level, r.Checks)
	}
}

func TestNoDriverAtAllCannotTell(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
	writeFile(t, root, "boot/vmlinuz-6.1.0-18-amd64", "x")
	r := NewChecker(Config{Paths: Paths{RootFS: root, ProcFS: "proc", SysFS: "sys"}}).Check(context.Background())
	if r.Level != event.Unknown {
		t.Fatalf("level = %s, want unknown: %+v", r.Level, r.Checks)
	}
	if c, _ := r.Check(CheckNextBootModule); !strings.Contains(c.Summary, "no NVIDIA driver found") {
		t.Errorf("next_boot_module = %+v", c)
	}
}

// metricValues gathers the collector and returns "name{labels}" -> value.
func metricValues(t *testing.T, ms []source.Metric) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range ms {
		var parts []string
		for i := 0; i+1 < len(m.Labels); i += 2 {
			parts = append(parts, m.Labels[i]+"="+m.Labels[i+1])
		}
		sort.Strings(parts)
		key := m.Name
		if len(parts) > 0 {
			key += "{" + strings.Join(parts, ",") + "}"
		}
		if _, dup := out[key]; dup {
			t.Errorf("series %s written twice", key)
		}
		out[key] = m.Value
	}
	return out
}

func TestMetricsHaveTheContractNames(t *testing.T) {
	r := checkFixture(t, "dkms-build-failed")
	got := metricValues(t, Metrics(r))
	want := map[string]float64{
		"gpuwarden_kernel_info{next_boot=6.1.0-20-amd64,running=6.1.0-18-amd64}":                                             1,
		"gpuwarden_nvidia_module_present{kernel=6.1.0-18-amd64}":                                                             1,
		"gpuwarden_nvidia_module_present{kernel=6.1.0-20-amd64}":                                                             0,
		"gpuwarden_driver_library_mismatch":                                                                                  0,
		"gpuwarden_reboot_pending":                                                                                           1,
		"gpuwarden_dkms_module_state{arch=x86_64,kernel=6.1.0-18-amd64,module=nvidia,state=installed,version=535.104.05}":    1,
		"gpuwarden_dkms_module_state{arch=x86_64,kernel=6.1.0-20-amd64,module=nvidia,state=build-failed,version=535.104.05}": 1,
		"gpuwarden_check_status{check=next_boot_module}":                                                                     2,
		"gpuwarden_check_status{check=dkms_build}":                                                                           2,
		"gpuwarden_check_status{check=reboot_pending}":                                                                       1,
		"gpuwarden_check_status{check=kernel_headers}":                                                                       0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if _, ok := got["gpuwarden_check_status{check=nvml_version}"]; ok {
		t.Errorf("a check that did not run must not be exported as ok")
	}
}
