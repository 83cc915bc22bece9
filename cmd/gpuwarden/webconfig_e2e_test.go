package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// --web.config.file is exporter-toolkit's: basic auth (and TLS) on every
// endpoint, /metrics and the JSON API alike.
func TestWebConfigFileRequiresBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "web.yml")
	os.WriteFile(cfg, []byte("basic_auth_users:\n  prometheus: "+string(hash)+"\n"), 0o600)
	addr := freePort(t)
	cmd := exec.Command(gpuwardenBinary(t), "run", "--web.listen-address", addr, "--web.config.file", cfg,
		"--backend", "replay", "--collector.gpu.interval", "200ms")
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	status := func(path, user, pass string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, 10*time.Second, "agent listening", func() bool { return status("/metrics", "", "") != 0 })
	for _, path := range []string{"/metrics", "/v1/health", "/v1/events"} {
		if got := status(path, "", ""); got != http.StatusUnauthorized {
			t.Errorf("%s without credentials: %d, want 401", path, got)
		}
		if got := status(path, "prometheus", "wrong"); got != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d, want 401", path, got)
		}
		if got := status(path, "prometheus", "s3cret"); got != http.StatusOK {
			t.Errorf("%s with credentials: %d, want 200\n%s", path, got, log.String())
		}
	}
}
