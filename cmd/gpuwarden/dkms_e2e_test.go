package main

import (
	"encoding/json"
	"fmt"
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

// As the unit runs it: /run read-only, /run/gpuwarden the one writable
// runtime directory (RuntimeDirectory=), in a mount namespace of the
// agent's own. A package hook's touch from outside still reaches the agent,
// which re-checks at once instead of at its 5-minute timer.
func TestThePackageHooksTriggerReachesAnAgentWithAReadOnlyRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	if out, err := exec.Command("cp", "-a", filepath.Join("..", "..", "testdata", "rootfs", "healthy")+"/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	run := filepath.Join(root, "run")
	rt := filepath.Join(run, "gpuwarden") // what RuntimeDirectory= makes
	os.MkdirAll(rt, 0o700)
	addr := freePort(t)
	script := fmt.Sprintf("mount --make-rprivate / && mount --bind %[1]s %[1]s && mount --bind %[2]s %[2]s && mount -o remount,bind,ro %[1]s && "+
		"! touch %[1]s/probe 2>/dev/null && exec %[3]s run --web.listen-address %[4]s --backend replay --replay.loop --collector.dkms=true "+
		"--path.rootfs %[5]s --path.procfs proc --path.sysfs sys --state.dir %[6]s",
		run, rt, gpuwardenBinary(t), addr, root, t.TempDir())
	a := &agentProc{addr: addr, log: &syncBuffer{}}
	a.cmd = exec.Command(unshare, "--mount", "sh", "-c", script)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	lastSuccess := func() string {
		b, err := a.get("/v1/health")
		if err != nil {
			return ""
		}
		var h struct {
			Collectors []struct {
				Name        string `json:"name"`
				LastSuccess string `json:"last_success"`
			} `json:"collectors"`
		}
		json.Unmarshal([]byte(b), &h)
		for _, c := range h.Collectors {
			if c.Name == "dkms" {
				return c.LastSuccess
			}
		}
		return ""
	}
	eventually(t, 20*time.Second, "the first DKMS pass", func() bool { return lastSuccess() != "" })
	time.Sleep(500 * time.Millisecond)
	first := lastSuccess()
	// The hook runs on the host, outside the agent's namespace.
	hook := exec.Command(filepath.Join("..", "..", "packaging", "hooks", "check-now"))
	hook.Env = append(os.Environ(), "GPUWARDEN_TRIGGER_FILE="+filepath.Join(rt, "check-now"))
	if out, err := hook.CombinedOutput(); err != nil {
		t.Fatalf("check-now: %v\n%s", err, out)
	}
	eventually(t, 5*time.Second, "a pass after the trigger", func() bool { return lastSuccess() != first })
	if strings.Contains(a.log.String(), "probe") {
		t.Error("/run was writable in the agent's namespace")
	}
}
