package packaging

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// unitCopy writes systemd/gpuwarden.service into a temporary directory with
// ExecStart pointing at the built binary, which verify requires to exist.
func unitCopy(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd", "gpuwarden.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(src), "ExecStart=/usr/bin/gpuwarden", "ExecStart="+binary(t))
	path := filepath.Join(t.TempDir(), "gpuwarden.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUnitVerifies(t *testing.T) {
	needTool(t, "systemd-analyze")
	// --man=no: the man page is checked in the package tests, and the man
	// command may not be installed.
	out := run(t, "systemd-analyze", "verify", "--man=no", unitCopy(t))
	if strings.Contains(out, "gpuwarden.service:") {
		t.Errorf("systemd-analyze verify warns about the unit:\n%s", out)
	}
}

func TestUnitHasNotifyWatchdogAndRestartLimits(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd", "gpuwarden.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{
		"Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=on-failure",
		"StartLimitIntervalSec=", "StartLimitBurst=",
		"ExecStart=/usr/bin/gpuwarden run --config /etc/gpuwarden/gpuwarden.yaml",
		"ProtectSystem=strict", "ReadWritePaths=/var/lib/gpuwarden", "ProtectHome=yes", "PrivateTmp=yes",
		"CapabilityBoundingSet=", "DevicePolicy=closed", "DeviceAllow=/dev/kmsg r",
	} {
		if !strings.Contains(unit, "\n"+want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// Every directive that loosens the hardening must have a comment right
	// above it saying which feature needs it.
	lines := strings.Split(unit, "\n")
	for i, l := range lines {
		for _, loose := range []string{"CapabilityBoundingSet=", "DeviceAllow=char-", "LimitMEMLOCK=", "SystemCallFilter=", "RestrictAddressFamilies="} {
			if strings.HasPrefix(l, loose) && (i == 0 || !strings.HasPrefix(lines[i-1], "#")) {
				t.Errorf("line %d %q loosens the hardening without a comment above it", i+1, l)
			}
		}
	}
}

// TestUnitExposureScore keeps `systemd-analyze security` from regressing
// unnoticed: loosening the unit past the threshold fails here.
func TestUnitExposureScore(t *testing.T) {
	needTool(t, "systemd-analyze")
	out, _ := runErr(t, "systemd-analyze", "security", "--offline=yes", "--no-pager", unitCopy(t))
	m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure score in systemd-analyze security output:\n%s", out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score > 3.5 {
		t.Errorf("exposure %.1f is above 3.5; tighten the unit or justify raising the threshold:\n%s", score, out)
	}
}
