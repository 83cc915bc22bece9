package dkms

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// copyTree copies a fixture tree (files, directories, symlinks as links).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, dst)
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls the watcher's latest report until cond holds or the
// deadline passes.
func waitFor(t *testing.T, w *Watcher, within time.Duration, what string, cond func(Report) bool) Report {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, ok := w.Latest()
		if ok && cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %v; last report level %s, findings %+v", what, within, r.Level, r.Findings())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func nextBootLevel(r Report) event.Level {
	c, _ := r.Check(CheckNextBootModule)
	return c.Level
}

// TestWatcherSeesANewKernelWithoutModule runs the watcher on a copy of the
// healthy fixture, installs a newer kernel that /boot/vmlinuz points to (as
// a kernel package would, DKMS not run), and expects critical within a
// second from inotify alone (the timer is an hour); then DKMS installs the
// module and next_boot_module is ok again. The host then stays at warning:
// a reboot into the new kernel is pending, which is true.
func TestWatcherSeesANewKernelWithoutModule(t *testing.T) {
	root := t.TempDir()
	copyTree(t, fixturePaths("healthy").RootFS, root)

	var mu sync.Mutex
	var events []event.Event
	var logs strings.Builder
	w := NewWatcher(Config{
		Paths:    Paths{RootFS: root, ProcFS: "proc", SysFS: "sys"},
		Interval: time.Hour,
		Debounce: 50 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(io.MultiWriter(&lockedWriter{mu: &mu, w: &logs}), nil)),
		OnEvent: func(e event.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	r := waitFor(t, w, 5*time.Second, "first report", func(Report) bool { return true })
	if r.Level != event.OK {
		t.Fatalf("healthy fixture starts at %s: %+v", r.Level, r.Findings())
	}
	// Let the watches settle: the first pass runs after they are added, so
	// a report means they are in place.

	const k2 = "6.1.0-20-amd64"
	start := time.Now()
	writeFile(t, root, "lib/modules/"+k2+"/modules.dep", "")
	writeFile(t, root, "usr/src/linux-headers-"+k2+"/Makefile", "")
	if err := os.Symlink("/usr/src/linux-headers-"+k2, filepath.Join(root, "lib/modules", k2, "build")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, root, "boot/vmlinuz-"+k2, "x")
	if err := os.Remove(filepath.Join(root, "boot/vmlinuz")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("vmlinuz-"+k2, filepath.Join(root, "boot/vmlinuz")); err != nil {
		t.Fatal(err)
	}
	r = waitFor(t, w, time.Second, "critical", func(r Report) bool { return r.Level == event.Critical })
	t.Logf("critical %v after the new kernel appeared", time.Since(start))
	if nextBootLevel(r) != event.Critical || r.Facts.NextBoot.Kernel != k2 {
		t.Fatalf("next boot %+v, findings %+v", r.Facts.NextBoot, r.Findings())
	}
	if h := w.Health(); h.Level != event.Critical || !strings.Contains(h.Fix, "dkms autoinstall -k "+k2) {
		t.Errorf("health = %+v", h)
	}

	// DKMS installs the module into the new kernel's (new) updates/dkms.
	start = time.Now()
	writeFile(t, root, "lib/modules/"+k2+"/updates/dkms/nvidia.ko", "\x00version=535.104.05\x00")
	r = waitFor(t, w, time.Second, "next_boot_module ok", func(r Report) bool { return nextBootLevel(r) == event.OK })
	t.Logf("ok %v after the module appeared", time.Since(start))
	if r.Level != event.Warning {
		t.Errorf("level = %s, want warning (reboot pending only): %+v", r.Level, r.Findings())
	}
	if f := r.Findings(); len(f) != 1 || f[0].Check != CheckRebootPending {
		t.Errorf("findings = %+v, want only reboot_pending", f)
	}

	mu.Lock()
	defer mu.Unlock()
	var crit, back bool
	for _, e := range events {
		if e.Kind != event.KindFinding || e.Source != "dkms" {
			t.Errorf("event %+v", e)
		}
		if e.Fields["check"] == CheckNextBootModule {
			crit = crit || e.Severity == event.Critical
			back = back || (crit && e.Severity == event.OK)
		}
	}
	if !crit || !back {
		t.Errorf("events did not show next_boot_module going critical and back: %+v", events)
	}
	// One log line per change, not per pass.
	if n := strings.Count(logs.String(), "check=next_boot_module"); n != 2 {
		t.Errorf("next_boot_module logged %d times, want 2 (critical, ok):\n%s", n, logs.String())
	}
}

// TestTriggerFileAsksForAPass: with inotify on the trees blind to a change
// (a library upgrade outside them), touching the trigger file makes the
// watcher look again.
func TestTriggerFileAsksForAPass(t *testing.T) {
	root := t.TempDir()
	copyTree(t, fixturePaths("healthy").RootFS, root)
	w := NewWatcher(Config{
		Paths:    Paths{RootFS: root, ProcFS: "proc", SysFS: "sys"},
		Interval: time.Hour,
		Debounce: 20 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()
	waitFor(t, w, 5*time.Second, "first report", func(Report) bool { return true })

	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	writeFile(t, root, "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15", "x")
	if err := os.Remove(filepath.Join(lib, "libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libnvidia-ml.so.550.54.15", filepath.Join(lib, "libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if r, _ := w.Latest(); r.Level != event.OK {
		t.Fatalf("the library directory is not watched, yet the report changed: %s", r.Level)
	}
	if w.TriggerFile() != filepath.Join(root, DefaultTriggerFile) {
		t.Fatalf("trigger file %s", w.TriggerFile())
	}
	// What the hooks do: mkdir -p /run/gpuwarden && touch /run/gpuwarden/check-now
	writeFile(t, root, DefaultTriggerFile, "")
	r := waitFor(t, w, time.Second, "critical after the trigger", func(r Report) bool { return r.Level == event.Critical })
	if c, _ := r.Check(CheckDriverLibrary); c.Level != event.Critical {
		t.Errorf("driver_library_mismatch = %+v", c)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// SetInterval (a configuration reload) changes the timer of a running
// watcher: from an hour to 50 ms, passes follow each other without any change
// on disk.
func TestSetIntervalChangesTheTimerOfARunningWatcher(t *testing.T) {
	root := t.TempDir()
	copyTree(t, fixturePaths("healthy").RootFS, root)
	w := NewWatcher(Config{
		Paths:    Paths{RootFS: root, ProcFS: "proc", SysFS: "sys"},
		Interval: time.Hour,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()
	first := waitFor(t, w, 5*time.Second, "first report", func(Report) bool { return true })
	w.SetInterval(0) // ignored: a ticker cannot run at 0
	w.SetInterval(50 * time.Millisecond)
	waitFor(t, w, 2*time.Second, "a pass on the new timer", func(r Report) bool { return r.Time.After(first.Time) })
}
