package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// The real agent with the eBPF source: a process the OOM killer kills in a
// memory cgroup is an oom_kill event in /v1/events, with its pid, name and
// cgroup, and is counted in gpuwarden_oom_kills_total. The tracepoints this
// kernel lacks are down and do not take the source with them.
func TestAnOOMKillReachesTheAgentsEventsAndCounter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("BPF programs and memory cgroups need root")
	}
	root := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(root, "memory.limit_in_bytes")); err != nil {
		t.Skip("no cgroup v1 memory controller at " + root)
	}
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.kmsg=false", "--collector.dkms=false", "--collector.ebpf=true", "--state.dir", t.TempDir())
	eventually(t, 20*time.Second, "the oom program attached", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_ebpf_program_up", `program="oom/mark_victim"`)
		return v == "1"
	})
	m := a.mustGet(t, "/metrics")
	if v, _ := metricValue(m, "gpuwarden_collector_up", `collector="ebpf"`); v != "1" {
		t.Errorf("gpuwarden_collector_up{collector=\"ebpf\"} = %q, want 1", v)
	}
	if v, _ := metricValue(m, "gpuwarden_ebpf_program_up", `program="ras/aer_event"`); v != "0" {
		t.Errorf("ras/aer_event up = %q on a kernel without it, want 0", v)
	}
	if !strings.Contains(a.log.String(), "tracepoint ras/aer_event is not in this kernel") {
		t.Errorf("the log does not say why ras/aer_event is down:\n%s", a.log.String())
	}

	dir := filepath.Join(root, fmt.Sprintf("gpuwarden-e2e-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
				return
			}
		}
	})
	for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(strconv.Itoa(32<<20)), 0o644); err != nil && f == "memory.limit_in_bytes" {
			t.Fatal(err)
		}
	}
	// A fixed script: it waits to be moved into the cgroup, then holds
	// 300 MB in a variable.
	victim := exec.Command("sh", "-c", `read go; x=$(head -c 300000000 /dev/zero | tr '\0' a); echo ${#x}`)
	stdin, err := victim.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	pid := victim.Process.Pid
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		victim.Process.Kill()
		victim.Wait()
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	stdin.Close()
	err = victim.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("the victim was not killed: %v", err)
	}

	var ev *event.Event
	eventually(t, 5*time.Second, "the oom_kill event in /v1/events", func() bool {
		var evs []event.Event
		if err := json.Unmarshal([]byte(a.mustGet(t, "/v1/events?kind=oom_kill")), &evs); err != nil {
			t.Fatal(err)
		}
		for i := range evs {
			if evs[i].Fields["pid"] == strconv.Itoa(pid) {
				ev = &evs[i]
				return true
			}
		}
		return false
	})
	if ev.Source != "ebpf" || ev.Fields["process_name"] != "sh" || ev.Fields["memcg"] != "/"+filepath.Base(dir) {
		t.Errorf("event %+v", *ev)
	}
	eventually(t, 5*time.Second, "gpuwarden_oom_kills_total counted", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_oom_kills_total")
		n, _ := strconv.ParseFloat(v, 64)
		return n >= 1
	})
	if m := a.mustGet(t, "/metrics"); strings.Contains(m, `="sh"`) {
		t.Error("a process name became a label")
	}
}
