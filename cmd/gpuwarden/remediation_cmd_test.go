package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/remediation/control"
)

// fakeRemediation answers like an engine with one rule and an open breaker.
type fakeRemediation struct{ who []string }

func (f *fakeRemediation) List() (any, error) {
	return map[string]any{"rules": []map[string]any{{"name": "xid-79-drain", "fired": 2}}, "breaker": "open"}, nil
}
func (f *fakeRemediation) Ack(who string) error { f.who = append(f.who, who); return nil }
func (f *fakeRemediation) ResetBreaker(string) error {
	return errors.New("breaker is closed")
}
func (f *fakeRemediation) Test(rule string, event json.RawMessage) (any, error) {
	var ev map[string]any
	json.Unmarshal(event, &ev)
	return map[string]any{"rule": rule, "would_run": []string{"drain"}, "xid": ev["xid"]}, nil
}

func remediationSocket(t *testing.T, h control.Handler) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: the control socket refuses every other peer")
	}
	path := filepath.Join(t.TempDir(), "control.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, path, h, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return path
		}
		if i == 500 {
			t.Fatal("control socket never listened")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runRemediation(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newRemediationCmd()
	var out bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestRemediationListPrintsTheResultIndented(t *testing.T) {
	sock := remediationSocket(t, &fakeRemediation{})
	out, err := runRemediation(t, "", "list", "--socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "breaker": "open",
  "rules": [
    {
      "fired": 2,
      "name": "xid-79-drain"
    }
  ]
}
`
	if out != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
	out, err = runRemediation(t, "", "--socket", sock, "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if out != `{"ok":true,"result":{"breaker":"open","rules":[{"fired":2,"name":"xid-79-drain"}]}}`+"\n" {
		t.Fatalf("json: %s", out)
	}
}

func TestRemediationAckAndAFailedResetBreaker(t *testing.T) {
	h := &fakeRemediation{}
	sock := remediationSocket(t, h)
	out, err := runRemediation(t, "", "ack", "--socket", sock)
	if err != nil || out != "acknowledged\n" {
		t.Fatalf("ack: %q %v", out, err)
	}
	if len(h.who) != 1 || !strings.HasPrefix(h.who[0], "uid 0 pid ") {
		t.Fatalf("ack recorded who %q", h.who)
	}
	_, err = runRemediation(t, "", "reset-breaker", "--socket", sock)
	if err == nil || !strings.Contains(err.Error(), "breaker is closed") {
		t.Fatalf("reset-breaker: %v", err)
	}
}

func TestRemediationTestSendsTheEventFile(t *testing.T) {
	sock := remediationSocket(t, &fakeRemediation{})
	ev := filepath.Join(t.TempDir(), "xid79.json")
	os.WriteFile(ev, []byte(`{"kind": "xid", "xid": 79}`+"\n"), 0o600)
	out, err := runRemediation(t, "", "test", "xid-79-drain", "--event", ev, "--socket", sock, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if out != `{"ok":true,"result":{"rule":"xid-79-drain","would_run":["drain"],"xid":79}}`+"\n" {
		t.Fatalf("test: %s", out)
	}
	out, err = runRemediation(t, `{"xid":48}`, "test", "r", "--event", "-", "--socket", sock)
	if err != nil || !strings.Contains(out, `"xid": 48`) {
		t.Fatalf("test from stdin: %q %v", out, err)
	}
}

func TestRemediationTestRefusesABadEvent(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"xid":`), 0o600)
	sock := filepath.Join(dir, "none.sock") // never reached
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"test", "r", "--socket", sock}, `"event" not set`},
		{[]string{"test", "r", "--event", bad, "--socket", sock}, "not JSON"},
		{[]string{"test", "r", "--event", filepath.Join(dir, "missing.json"), "--socket", sock}, "missing.json"},
		{[]string{"list", "-o", "yaml", "--socket", sock}, `--output "yaml"`},
	} {
		if _, err := runRemediation(t, "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestRemediationWithoutAnAgentSaysSo(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	_, err := runRemediation(t, "", "list", "--socket", sock)
	if err == nil || !strings.Contains(err.Error(), "is the agent running") {
		t.Fatalf("err %v", err)
	}
}
