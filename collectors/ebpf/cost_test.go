package ebpf

import (
	"os"
	"strings"
	"testing"
)

// bpfStats turns on kernel.bpf_stats_enabled for the test (the kernel then
// times every program run) and restores the old value after.
func bpfStats(t *testing.T) {
	t.Helper()
	const path = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no %s: %v", path, err)
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		t.Skipf("enable BPF run-time stats: %v", err)
	}
	t.Cleanup(func() { os.WriteFile(path, []byte(strings.TrimSpace(string(old))), 0o644) })
}

// The OOM program's cost per run, as the kernel measures it: it runs once
// per OOM kill, so its cost is in the OOM killer's path, never in a hot one.
func TestOOMProgramCost(t *testing.T) {
	needRoot(t)
	const kills = 5
	o, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	prog := o.Progs["oom/mark_victim"]
	if prog == nil {
		t.Fatal("oom/mark_victim did not attach")
	}
	bpfStats(t)
	for range kills {
		dir := memcg(t, 32<<20)
		_, exit := oomVictim(t, dir)
		waitOOMKilled(t, exit)
	}
	st, err := prog.Stats() // the program's info: run_time_ns and run_cnt
	if err != nil {
		t.Fatal(err)
	}
	runs, rt := st.RunCount, st.Runtime
	if runs == 0 {
		t.Fatalf("no run stats (count %d, time %v)", runs, rt)
	}
	if runs < kills {
		t.Errorf("%d runs for %d OOM kills", runs, kills)
	}
	t.Logf("oom/mark_victim: %d runs, %d ns in all, %d ns per run", runs, rt.Nanoseconds(), rt.Nanoseconds()/int64(runs))
}
