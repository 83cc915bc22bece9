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
