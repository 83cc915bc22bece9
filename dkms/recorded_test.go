package dkms

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// Recorded facts (a replayed node's) are what a pass judges, whatever the
// paths hold: here the paths are a healthy host, the facts those of a host
// whose next boot kernel has no NVIDIA module.
func TestRecordedFactsAreJudgedInsteadOfThePaths(t *testing.T) {
	other := NewGatherer(fixturePaths("new-kernel-no-module"), nil, nil).Gather(context.Background())
	other.Reboot = RebootState{} // as a record holds it: judged again on every pass
	r := NewChecker(Config{Paths: fixturePaths("healthy"), Recorded: func() (Facts, bool) { return other, true }}).Check(context.Background())
	if f, _ := r.Check(CheckNextBootModule); f.Level != event.Critical {
		t.Errorf("next_boot_module %s (%s), want the recorded host's critical", f.Level, f.Summary)
	}
	if f, _ := r.Check(CheckRebootPending); f.Level != event.Warning {
		t.Errorf("reboot_pending %s (%s): the pending kernel change is judged from the recorded kernels", f.Level, f.Summary)
	}
	healthy := NewChecker(Config{Paths: fixturePaths("healthy")}).Check(context.Background())
	if healthy.Level == r.Level {
		t.Fatalf("the fixtures do not differ (%s): the test proves nothing", r.Level)
	}
}

// A watcher on recorded facts does not watch this host: nothing under its
// paths is created or read, and its passes come from the timer and CheckNow.
func TestAWatcherOnRecordedFactsLeavesThisHostAlone(t *testing.T) {
	root := t.TempDir()
	passes := make(chan Report, 16)
	facts := NewGatherer(fixturePaths("healthy"), nil, nil).Gather(context.Background())
	w := NewWatcher(Config{Paths: Paths{RootFS: root}, Interval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Recorded: func() (Facts, bool) { return facts, true }, OnReport: func(r Report) { passes <- r }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	first := <-passes
	if first.Facts.RunningKernel != facts.RunningKernel || first.Level != event.OK {
		t.Errorf("first pass: running %q, level %s; want the recorded healthy host", first.Facts.RunningKernel, first.Level)
	}
	w.CheckNow()
	select {
	case <-passes:
	case <-time.After(5 * time.Second):
		t.Fatal("CheckNow did not run a pass")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "run")); !os.IsNotExist(err) {
		t.Errorf("the watcher made the trigger directory under this host's root: %v", err)
	}
}
