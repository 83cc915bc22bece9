package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// runDir is where an agent run as root keeps its control socket and the
// DKMS trigger file when a test does not name others.
const runDir = "/run/gpuwarden"

// TestMain leaves nothing of the tests on the host: the built binary, and
// /run/gpuwarden when the tests made it (a host that had one, such as a
// node running the agent, keeps it).
func TestMain(m *testing.M) {
	_, err := os.Lstat(runDir)
	hadRunDir := err == nil
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	if !hadRunDir {
		os.RemoveAll(runDir)
	}
	os.Exit(code)
}

// gpuwardenBinary builds the command once per test run: exit codes, signals
// and sd_notify are what systemd, Ansible and Nagios see, so the end-to-end
// tests run the real binary, built as `make build` builds the shipped one.
func gpuwardenBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gpuwarden-test")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "gpuwarden")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -Wno-deprecated-declarations")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
