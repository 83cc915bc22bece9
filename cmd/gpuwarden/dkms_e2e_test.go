package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The running agent on a fixture root turns critical within a second of a
// new kernel without an NVIDIA module becoming the next boot, and recovers
// when DKMS installs the module.
func TestAgentSeesANewKernelWithoutModuleWithinASecond(t *testing.T) {
	root := t.TempDir()
	if out, err := exec.Command("cp", "-a", "../../testdata/rootfs/healthy/.", root).CombinedOutput(); err != nil {
		t.Fatalf("copy fixture: %v\n%s", err, out)
	}
	a := startAgent(t, nil, "--backend", "nvml", "--collector.kmsg=false", "--collector.gpu.interval", "1s",
		"--path.rootfs", root, "--path.procfs", "proc", "--path.sysfs", "sys")
	nextBoot := func() string {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_check_status", `check="next_boot_module"`)
		return v
	}
	eventually(t, 10*time.Second, "first consistency check", func() bool { return nextBoot() == "0" })

	const k2 = "6.1.0-20-amd64"
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/src/linux-headers-"+k2+"/Makefile", "")
	write("lib/modules/"+k2+"/modules.dep", "")
	os.Symlink("/usr/src/linux-headers-"+k2, filepath.Join(root, "lib/modules", k2, "build"))
	write("boot/vmlinuz-"+k2, "x")
	os.Remove(filepath.Join(root, "boot/vmlinuz"))
	os.Symlink("vmlinuz-"+k2, filepath.Join(root, "boot/vmlinuz"))
	start := time.Now()
	eventually(t, time.Second, "next_boot_module critical and /v1/health critical", func() bool {
		h := a.mustGet(t, "/v1/health")
		return nextBoot() == "2" && strings.Contains(h, `"level": "critical"`) && strings.Contains(h, "dkms autoinstall -k "+k2)
	})
	t.Logf("critical %s after the new kernel appeared", time.Since(start).Round(time.Millisecond))
	if v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_nvidia_module_present", `kernel="`+k2+`"`); v != "0" {
		t.Errorf("gpuwarden_nvidia_module_present{kernel=%q} = %q, want 0", k2, v)
	}

	write("lib/modules/"+k2+"/updates/dkms/nvidia.ko", "\x00version=535.104.05\x00")
	eventually(t, time.Second, "next_boot_module ok again", func() bool {
		return nextBoot() == "0" && !strings.Contains(a.mustGet(t, "/v1/health"), "next_boot_module")
	})
}
