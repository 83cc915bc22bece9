package ebpf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/internal/testenv"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
	"github.com/gpuwarden/gpuwarden/collectors/source"
	"github.com/gpuwarden/gpuwarden/collectors/source/sourcetest"
)

// oomChildEnv makes the test binary an OOM victim: it waits for its parent
// to move it into the memory cgroup, then touches memory past the limit.
const oomChildEnv = "GPUWARDEN_EBPF_OOM_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(oomChildEnv) == "1" {
		oomChild()
		return
	}
	if os.Getenv(loadChildEnv) == "1" {
		if _, err := Load(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func oomChild() {
	var b [1]byte
	if _, err := os.Stdin.Read(b[:]); err != nil {
		os.Exit(3)
	}
	var keep [][]byte
	for range 64 { // 256 MiB in 4 MiB chunks, each page touched
		c := make([]byte, 4<<20)
		for i := 0; i < len(c); i += 4096 {
			c[i] = 1
		}
		keep = append(keep, c)
	}
	fmt.Println(len(keep))
	os.Exit(4) // not killed: the test fails on the exit status
}

// needRoot skips unless the test can load BPF and make memory cgroups.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF programs, memory cgroups)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("the kernel has no BTF")
	}
}

// memcg is a cgroup v1 memory cgroup of the test's own, removed at the end.
func memcg(t *testing.T, limit int64) string {
	t.Helper()
	root := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(root, "memory.limit_in_bytes")); err != nil {
		t.Skip("no cgroup v1 memory controller at " + root)
	}
	dir := filepath.Join(root, fmt.Sprintf("gpuwarden-ebpf-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The cgroup is empty once its last task is reaped; rmdir may
		// still see it busy for a moment.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	write := func(name, v string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	write("memory.limit_in_bytes", strconv.FormatInt(limit, 10))
	if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
		write("memory.memsw.limit_in_bytes", strconv.FormatInt(limit, 10)) // no escape to swap
	}
	return dir
}

// oomVictim starts the test binary as a child in dir and lets it allocate
// past the limit; it returns the child's pid and its exit.
func oomVictim(t *testing.T, dir string) (int, <-chan error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), oomChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	stdin.Write([]byte{1})
	stdin.Close()
	exit := make(chan error, 1)
	go func() { exit <- cmd.Wait() }()
	return pid, exit
}

// waitOOMKilled waits for the child of oomVictim to end, and fails the test
// unless the kernel killed it (SIGKILL) within 30 s.
func waitOOMKilled(t *testing.T, exit <-chan error) {
	t.Helper()
	select {
	case err := <-exit:
		if !killedBySIGKILL(err) {
			t.Fatalf("the child was not OOM-killed: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the child was not killed within 30s")
	}
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// metric is the value of the series name with the labels, or -1.
func metric(ms []source.Metric, name string, labels ...string) float64 {
	for _, m := range ms {
		if m.Name == name && strings.Join(m.Labels, "\x00") == strings.Join(labels, "\x00") {
			return m.Value
		}
	}
	return -1
}

// runSource starts the source and waits until it has attached.
func runSource(t *testing.T, s *Source) *sourcetest.Sink {
	t.Helper()
	sink := sourcetest.New("")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ran := sink.Snapshot().Rounds; ran > 0 {
			return sink
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before attaching: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the source did not attach within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitOOM polls the sink for the OOM kill of pid, up to deadline.
func waitOOM(t *testing.T, sink *sourcetest.Sink, pid int, deadline time.Time) event.Event {
	t.Helper()
	for {
		evs := sink.Snapshot().Events
		for _, ev := range evs {
			if ev.Kind == event.KindOOMKill && ev.Fields[kmsg.FieldPID] == strconv.Itoa(pid) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no oom_kill event for pid %d by the deadline; events: %+v", pid, evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The real program on this kernel: a process killed for its memory
// cgroup's limit arrives as an oom_kill event with its pid, comm and
// cgroup, and is counted.
func TestAnOOMKillInAMemoryCgroupArrivesAsAnEvent(t *testing.T) {
	needRoot(t)
	dir := memcg(t, 32<<20)
	var ino uint64
	if fi, err := os.Stat(dir); err == nil {
		ino = fi.Sys().(*syscall.Stat_t).Ino
	}
	s := &Source{}
	sink := runSource(t, s)
	pid, exit := oomVictim(t, dir)
	s.SetGPUProcesses([]int{pid})
	waitOOMKilled(t, exit)
	// Polled, not timed: within a second of the kill it must be there.
	ev := waitOOM(t, sink, pid, time.Now().Add(time.Second))
	comm := filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}
	if got := ev.Fields[kmsg.FieldProcessName]; got != comm {
		t.Errorf("comm %q, want %q", got, comm)
	}
	if got, want := ev.Fields[FieldMemcg], "/"+filepath.Base(dir); got != want {
		t.Errorf("memcg %q, want %q", got, want)
	}
	if got := ev.Fields[FieldMemcgID]; got != strconv.FormatUint(ino, 10) {
		t.Errorf("memcg id %s, want the directory's inode %d", got, ino)
	}
	if ev.Fields[FieldGPUProcess] != "true" || ev.Source != "ebpf" || ev.BootID == "" {
		t.Errorf("gpu_process %q source %q boot id %q", ev.Fields[FieldGPUProcess], ev.Source, ev.BootID)
	}
	if d := time.Since(ev.Time); d < 0 || d > time.Minute {
		t.Errorf("event time %v is %v from now", ev.Time, d)
	}
	deadline := time.Now().Add(time.Second)
	for {
		stats := sink.Snapshot().Stats
		if metric(stats, "gpuwarden_oom_kills_total") >= 1 &&
			metric(stats, "gpuwarden_ebpf_events_total", "program", "oom/mark_victim") >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("oom kill not counted: %v", stats)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// This kernel has no PCIe port bus driver and no loadable modules: those
// programs are down, each naming its missing tracepoint, and the OOM
// program runs.
func TestProgramsWithoutTheirTracepointAreDownAndTheRestRun(t *testing.T) {
	needRoot(t)
	o, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	want := map[string]bool{"oom/mark_victim": true, "ras/aer_event": false, "module/module_load": false, "module/module_free": false}
	for _, st := range o.States {
		if st.Up() != want[st.Name] {
			t.Errorf("%s up=%v, want %v (%v)", st.Name, st.Up(), want[st.Name], st.Err)
		}
		if !st.Up() {
			if !errors.Is(st.Err, ErrTracepointMissing) || !strings.Contains(st.Err.Error(), "tracepoint "+st.Name+" is not in this kernel") {
				t.Errorf("%s: %v; want it to name the missing tracepoint", st.Name, st.Err)
			}
		}
	}
	sink := runSource(t, &Source{})
	stats := sink.Snapshot().Stats
	for name, up := range want {
		v := 0.0
		if up {
			v = 1
		}
		if got := metric(stats, "gpuwarden_ebpf_program_up", "program", name); got != v {
			t.Errorf("gpuwarden_ebpf_program_up{program=%q} = %v, want %v", name, got, v)
		}
	}
}

// A source run again (after an error, by the agent's backoff) does not say
// again why its programs are down.
func TestProgramStatesAreLoggedOnce(t *testing.T) {
	needRoot(t)
	var buf testenv.SyncBuffer
	s := &Source{Log: slog.New(slog.NewTextHandler(&buf, nil))}
	for range 2 {
		sink := sourcetest.New("")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx, sink) }()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if ran := sink.Snapshot().Rounds; ran > 0 || time.Now().After(deadline) {
				break
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "ebpf program down"); n != 3 {
		t.Errorf("%d lines say a program is down, want 3 (once each):\n%s", n, buf.String())
	}
}

// loadChildEnv makes the test binary try Load and print its error.
const loadChildEnv = "GPUWARDEN_EBPF_LOAD_CHILD"

// Without the capabilities the source is down with a cause that names
// them.
func TestWithoutPrivilegeTheCauseNamesTheCapabilities(t *testing.T) {
	needRoot(t)
	// The test binary's own directory is root's only: a copy nobody can run.
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir's parent is 0700
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "ebpf.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), loadChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("Load succeeded as nobody: %s", out)
	}
	if s := string(out); !strings.Contains(s, "permission denied") || !strings.Contains(s, "CAP_BPF and CAP_PERFMON") {
		t.Errorf("the cause does not name the capabilities (%v): %s", err, s)
	}
}
