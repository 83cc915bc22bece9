// Package hooks holds the package-manager hooks (shell and config files,
// not Go); this test runs them the way apt, run-parts, kernel-install and
// dnf would, and checks they reach a running dkms.Watcher.
package hooks

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/dkms"
)

// runHook runs a hook file with env added and returns stdout, stderr and
// the exit code.
func runHook(t *testing.T, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	abs, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(abs, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return stdout.String(), stderr.String(), code
}

func TestCheckNowTouchesTheTriggerFile(t *testing.T) {
	trigger := filepath.Join(t.TempDir(), "run", "gpuwarden", "check-now")
	out, _, code := runHook(t, []string{"GPUWARDEN_TRIGGER_FILE=" + trigger}, "check-now")
	if code != 0 || out != "" {
		t.Fatalf("exit %d, stdout %q; want 0 and nothing", code, out)
	}
	if _, err := os.Stat(trigger); err != nil {
		t.Fatalf("trigger not made: %v", err)
	}
}

func TestCheckNowNeverFails(t *testing.T) {
	// procfs refuses new files even to root.
	out, errOut, code := runHook(t, []string{"GPUWARDEN_TRIGGER_FILE=/proc/gpuwarden-test/check-now"}, "check-now")
	if code != 0 || out != "" || !strings.Contains(errOut, "could not touch") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0, nothing, a note on stderr", code, out, errOut)
	}
}

func TestKernelHooksCallCheckNowQuietly(t *testing.T) {
	checkNow, _ := filepath.Abs("check-now")
	for _, hook := range []struct {
		file string
		args []string
	}{
		{"kernel/zzz-gpuwarden", []string{"6.1.0-20-amd64", "/boot/vmlinuz-6.1.0-20-amd64"}},
		{"kernel/99-gpuwarden.install", []string{"add", "6.1.0-20-amd64", "/boot/x", "/lib/modules/6.1.0-20-amd64/vmlinuz"}},
		{"kernel/99-gpuwarden.install", []string{"remove", "6.1.0-20-amd64", "/boot/x"}},
	} {
		trigger := filepath.Join(t.TempDir(), "check-now")
		env := []string{"GPUWARDEN_CHECK_NOW=" + checkNow, "GPUWARDEN_TRIGGER_FILE=" + trigger}
		out, _, code := runHook(t, env, hook.file, hook.args...)
		if code != 0 || out != "" {
			t.Errorf("%s %v: exit %d, stdout %q", hook.file, hook.args, code, out)
		}
		if _, err := os.Stat(trigger); err != nil {
			t.Errorf("%s %v: trigger not touched: %v", hook.file, hook.args, err)
		}
		// With gpuwarden removed (check-now gone), the hook is a no-op.
		env = []string{"GPUWARDEN_CHECK_NOW=/nonexistent/check-now"}
		if out, _, code := runHook(t, env, hook.file, hook.args...); code != 0 || out != "" {
			t.Errorf("%s without check-now: exit %d, stdout %q", hook.file, code, out)
		}
	}
}

func TestAptSnippetParsesAndCannotFailApt(t *testing.T) {
	aptConfig, err := exec.LookPath("apt-config")
	if err != nil {
		t.Skip("apt-config not installed (not a Debian host)")
	}
	out, err := exec.Command(aptConfig, "-c", "apt/99gpuwarden", "dump", "DPkg::Post-Invoke").CombinedOutput()
	if err != nil {
		t.Fatalf("apt-config rejects the snippet: %v\n%s", err, out)
	}
	var command string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "gpuwarden") {
			_, v, _ := strings.Cut(sc.Text(), " ")
			command = strings.TrimSuffix(strings.Trim(strings.TrimSuffix(v, ";"), `"`), `"`)
		}
	}
	if !strings.Contains(command, "/usr/lib/gpuwarden/check-now") {
		t.Fatalf("no gpuwarden Post-Invoke in:\n%s", out)
	}
	// apt runs it with sh -c; on a host without gpuwarden it must succeed.
	if out, err := exec.Command("sh", "-c", command).CombinedOutput(); err != nil {
		t.Fatalf("Post-Invoke command fails: %v\n%s", err, out)
	}
}

func TestDNFActionFiles(t *testing.T) {
	lines := func(name string) [][]string {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]string
		for l := range strings.SplitSeq(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, strings.SplitN(l, ":", 5))
			}
		}
		return out
	}
	for _, f := range lines("dnf/gpuwarden.action") {
		// dnf 4: package_filter:transaction_state:command
		if len(f) != 3 || f[0] == "" || (f[1] != "in" && f[1] != "out" && f[1] != "any") || f[2] != "/usr/lib/gpuwarden/check-now" {
			t.Errorf("dnf 4 action %q", strings.Join(f, ":"))
		}
	}
	d5 := lines("dnf/gpuwarden.actions")
	// dnf 5: callback_name:package_filter:direction:options:command
	if len(d5) != 1 || len(d5[0]) != 5 || d5[0][0] != "post_transaction" || d5[0][4] != "/usr/lib/gpuwarden/check-now" {
		t.Errorf("dnf 5 actions %q", d5)
	}
}

// TestHookReachesARunningWatcher: a kernel hook fired on a fixture root
// makes a running Watcher re-check, although the change it reports (a new
// userspace library) is in a directory the Watcher does not watch.
func TestHookReachesARunningWatcher(t *testing.T) {
	root := t.TempDir()
	if out, err := exec.Command("cp", "-a", "../../testdata/rootfs/healthy/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	w := dkms.NewWatcher(dkms.Config{
		Paths:    dkms.Paths{RootFS: root, ProcFS: "proc", SysFS: "sys"},
		Interval: time.Hour,
		Debounce: 20 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()
	waitLevel := func(want string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			if r, ok := w.Latest(); ok && r.Level.String() == want {
				return
			}
			if time.Now().After(deadline) {
				r, _ := w.Latest()
				t.Fatalf("level %s, want %s: %+v", r.Level, want, r.Findings())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLevel("ok")

	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	if err := os.WriteFile(filepath.Join(lib, "libnvidia-ml.so.550.54.15"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(lib, "libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libnvidia-ml.so.550.54.15", filepath.Join(lib, "libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	checkNow, _ := filepath.Abs("check-now")
	env := []string{"GPUWARDEN_CHECK_NOW=" + checkNow, "GPUWARDEN_TRIGGER_FILE=" + w.TriggerFile()}
	if _, _, code := runHook(t, env, "kernel/zzz-gpuwarden", "6.1.0-18-amd64"); code != 0 {
		t.Fatalf("hook exit %d", code)
	}
	waitLevel("critical")
}
