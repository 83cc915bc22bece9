// Package packaging holds the tests for what packaging/ and systemd/ ship:
// the packages installed for real, the unit, the Prometheus rules, the
// dashboards and the Ansible role. They drive the real tools (dpkg, rpm,
// systemd-analyze, promtool, prometheus, ansible-playbook) and skip, naming
// the tool, only where one is missing or root is needed.
package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the module root, one level above this file.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Dir(filepath.Dir(file))
}

func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (make deps installs it)", n)
		}
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: installs packages on this machine")
	}
}

// run runs a command in the repository root and fails the test unless it
// exits 0. It returns stdout and stderr together.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

var (
	pkgOnce sync.Once
	pkgDeb  string
	pkgRpm  string
	pkgErr  string
)

// packages runs `make package` once per test binary and returns the .deb and
// .rpm it built.
func packages(t *testing.T) (deb, rpm string) {
	t.Helper()
	needTool(t, "make", "gzip")
	pkgOnce.Do(func() {
		// A test re-run in a throwaway root takes the packages its parent built.
		if paths := strings.Split(os.Getenv(packagesEnv), "\n"); len(paths) == 2 {
			pkgDeb, pkgRpm = paths[0], paths[1]
			return
		}
		root := repoRoot(t)
		cmd := exec.Command("make", "package")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			pkgErr = "make package: " + err.Error() + "\n" + string(out)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(root, "dist", "gpuwarden_*.deb"))
		rpms, _ := filepath.Glob(filepath.Join(root, "dist", "gpuwarden-*.rpm"))
		if len(debs) != 1 || len(rpms) != 1 {
			pkgErr = "make package left " + strings.Join(append(debs, rpms...), ", ") + "; want one .deb and one .rpm"
			return
		}
		pkgDeb, pkgRpm = debs[0], rpms[0]
	})
	if pkgErr != "" {
		t.Fatal(pkgErr)
	}
	return pkgDeb, pkgRpm
}

// binary returns the binary the packages ship (dist/stage/bin/gpuwarden,
// linked against glibc 2.17), building the packages first.
func binary(t *testing.T) string {
	t.Helper()
	packages(t)
	return filepath.Join(repoRoot(t), "dist", "stage", "bin", "gpuwarden")
}

// sysroot is the glibc 2.17 sysroot of the toolchain `make package` links
// with (packaging/package.mk), fetched by it into .toolchain/.
func sysroot(t *testing.T) string {
	t.Helper()
	packages(t)
	dir := filepath.Join(repoRoot(t), ".toolchain", "x86_64-unknown-linux-gnu", "x86_64-unknown-linux-gnu", "sysroot")
	if _, err := os.Stat(filepath.Join(dir, "lib", "ld-linux-x86-64.so.2")); err != nil {
		t.Fatalf("make package built without the glibc 2.17 toolchain's sysroot: %v", err)
	}
	return dir
}

// underSysroot returns a command that runs name under the sysroot's own
// dynamic loader and C library, not the host's.
func underSysroot(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	s := sysroot(t)
	cmd := exec.Command(filepath.Join(s, "lib", "ld-linux-x86-64.so.2"),
		append([]string{"--library-path", filepath.Join(s, "lib") + ":" + filepath.Join(s, "usr", "lib"), name}, args...)...)
	cmd.Dir = repoRoot(t)
	return cmd
}

// sysrootGlibc is the glibc version of the sysroot, as its libc.so.6 prints it.
func sysrootGlibc(t *testing.T) string {
	t.Helper()
	out, err := underSysroot(t, filepath.Join(sysroot(t), "lib", "libc.so.6")).CombinedOutput()
	m := regexp.MustCompile(`release version (\d+\.\d+)[,.\s]`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("the sysroot's libc.so.6 did not print its version: %v\n%s", err, out)
	}
	return string(m[1])
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return cond()
}

// runIn runs a command in dir and returns its combined output.
func runIn(t *testing.T, dir, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}
