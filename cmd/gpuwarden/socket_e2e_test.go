package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// With --web.systemd-socket the agent serves on the socket systemd passes
// (LISTEN_FDS, fd 3) instead of opening its own: socket activation.
func TestSystemdSocketActivation(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // the child holds the socket now, through f
	defer f.Close()
	// LISTEN_PID must be the agent's own pid: a shell sets it to its pid
	// and execs the agent, which keeps that pid.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, gpuwardenBinary(t),
		"run", "--web.systemd-socket", "--backend", "replay", "--collector.gpu.interval", "200ms")
	cmd.ExtraFiles = []*os.File{f}
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{addr: addr, cmd: cmd, log: log}
	defer a.stop()
	eventually(t, 10*time.Second, "metrics on the passed socket", func() bool {
		body, err := a.get("/metrics")
		return err == nil && strings.Contains(body, "DCGM_FI_DEV_GPU_TEMP")
	})
	if !strings.Contains(log.String(), "systemd activated listeners") {
		t.Errorf("the agent did not say it uses the passed socket:\n%s", log.String())
	}
}
