package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeEngine records what the server asked of it.
type fakeEngine struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeEngine) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeEngine) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeEngine) List() (any, error) {
	f.record("list")
	return map[string]any{"rules": []string{"xid-79-drain"}, "breaker": "closed"}, nil
}
func (f *fakeEngine) Ack(who string) error { f.record("ack by " + who); return nil }
func (f *fakeEngine) ResetBreaker(who string) error {
	f.record("reset by " + who)
	return errors.New("breaker is not open")
}
func (f *fakeEngine) Test(rule string, event json.RawMessage) (any, error) {
	f.record("test " + rule + " " + string(event))
	if rule == "boom" {
		panic("handler bug")
	}
	return map[string]any{"rule": rule, "matched": true}, nil
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// serve runs a Server on path and waits until it answers.
func serve(t *testing.T, s *Server, path string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, path) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	waitListening(t, path, done)
}

func waitListening(t *testing.T, path string, done chan error) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("Serve returned early: %v", err)
		default:
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
	}
	t.Fatal("server never listened")
}

func socketPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "run", "control.sock")
}

func TestARootClientGetsAnswers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the server refuses every other peer")
	}
	path := socketPath(t)
	eng := &fakeEngine{}
	serve(t, &Server{Handler: eng, Log: quiet}, path)
	ctx := context.Background()

	resp, err := Call(ctx, path, Request{Op: OpList})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.OK || string(resp.Result) != `{"breaker":"closed","rules":["xid-79-drain"]}` {
		t.Fatalf("list: %+v", resp)
	}
	if resp, err = Call(ctx, path, Request{Op: OpAck}); err != nil || !resp.OK || resp.Result != nil {
		t.Fatalf("ack: %+v %v", resp, err)
	}
	resp, err = Call(ctx, path, Request{Op: OpTest, Rule: "xid-79-drain", Event: json.RawMessage(`{"kind":"xid","code":79}`)})
	if err != nil || string(resp.Result) != `{"matched":true,"rule":"xid-79-drain"}` {
		t.Fatalf("test: %+v %v", resp, err)
	}
	// A handler's error comes back as ok false and an *Error.
	resp, err = Call(ctx, path, Request{Op: OpResetBreaker})
	var ce *Error
	if !errors.As(err, &ce) || resp.OK || !strings.Contains(ce.Msg, "breaker is not open") {
		t.Fatalf("reset-breaker: %+v %v", resp, err)
	}
	calls := eng.Calls()
	want := fmt.Sprintf("ack by uid 0 pid %d", os.Getpid())
	if len(calls) != 4 || calls[1] != want || !strings.HasPrefix(calls[3], "reset by uid 0 pid ") {
		t.Fatalf("handler calls %q; want ack by %q", calls, want)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	if fi, _ := os.Stat(filepath.Dir(path)); fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory mode %v, want 0700", fi.Mode())
	}
}

func TestMalformedAndIncompleteRequestsAreRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	path := socketPath(t)
	eng := &fakeEngine{}
	serve(t, &Server{Handler: eng, Log: quiet}, path)
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{}, `"op" is required`},
		{Request{Op: "reboot"}, `unknown op "reboot"`},
		{Request{Op: OpTest, Event: json.RawMessage(`{}`)}, `"rule" is required`},
		{Request{Op: OpTest, Rule: "r"}, `"event" is required`},
		{Request{Op: OpTest, Rule: "boom", Event: json.RawMessage(`{}`)}, "internal error in the handler"},
	} {
		_, err := Call(context.Background(), path, tc.req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.req, err, tc.want)
		}
	}
	for raw, want := range map[string]string{
		"not json\n":                     "malformed request",
		`{"op":"list","extra":1}` + "\n": `unknown field "extra"`,
	} {
		if got := rawCall(t, path, []byte(raw)); !strings.Contains(got.Error, want) {
			t.Errorf("%q: answer %+v, want %q", raw, got, want)
		}
	}
}

// rawCall writes b and returns the server's answer.
func rawCall(t *testing.T, path string, b []byte) Response {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write(b) // the server may answer, and close, before reading it all
	// One line, as Call reads: a server that closes with the request unread
	// makes the kernel report ECONNRESET after the answer.
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var r Response
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("answer %q: %v", line, err)
	}
	return r
}

func TestAnOversizedRequestIsRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	path := socketPath(t)
	eng := &fakeEngine{}
	serve(t, &Server{Handler: eng, Log: quiet}, path)
	big := fmt.Sprintf(`{"op":"test","rule":"r","event":{"raw":%q}}`+"\n", strings.Repeat("x", MaxRequest))
	got := rawCall(t, path, []byte(big))
	if got.OK || !strings.Contains(got.Error, "over 64 KiB") {
		t.Fatalf("answer %+v", got)
	}
	// Through the client too.
	_, err := Call(context.Background(), path, Request{Op: OpTest, Rule: "r", Event: json.RawMessage(big[strings.Index(big, `{"raw"`) : len(big)-2])})
	if err == nil || !strings.Contains(err.Error(), "over 64 KiB") {
		t.Fatalf("Call: %v", err)
	}
	if calls := eng.Calls(); len(calls) != 0 {
		t.Fatalf("handler called: %q", calls)
	}
	// Just under the limit is answered.
	event := fmt.Sprintf(`{"raw":%q}`, strings.Repeat("x", MaxRequest-100))
	if _, err := Call(context.Background(), path, Request{Op: OpTest, Rule: "r", Event: json.RawMessage(event)}); err != nil {
		t.Fatalf("a request under the limit: %v", err)
	}
}

func TestAClientThatSendsNothingIsAnsweredAtTheReadDeadline(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	path := socketPath(t)
	serve(t, &Server{Handler: &fakeEngine{}, Log: quiet, ReadTimeout: 200 * time.Millisecond}, path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := io.ReadAll(c)
	if err != nil || !strings.Contains(string(line), "no request line within the read deadline") {
		t.Fatalf("answer %q, %v", line, err)
	}
}

func TestAStaleSocketIsReplaced(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	path := socketPath(t)
	os.MkdirAll(filepath.Dir(path), 0o700)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // what a crashed agent leaves behind
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("no stale socket to test with: %v", err)
	}
	serve(t, &Server{Handler: &fakeEngine{}, Log: quiet}, path)
	if _, err := Call(context.Background(), path, Request{Op: OpList}); err != nil {
		t.Fatal(err)
	}
}

func TestALiveSocketIsNotStolen(t *testing.T) {
	path := socketPath(t)
	os.MkdirAll(filepath.Dir(path), 0o700)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	err = Serve(context.Background(), path, &fakeEngine{}, quiet)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("Serve on a live socket: %v", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("the live socket was removed: %v", err)
	} else {
		c.Close()
	}
}

func TestSomethingElseAtThePathIsNotRemoved(t *testing.T) {
	path := socketPath(t)
	os.MkdirAll(filepath.Dir(path), 0o700)
	os.WriteFile(path, []byte("keep me"), 0o600)
	err := Serve(context.Background(), path, &fakeEngine{}, quiet)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Serve: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatalf("file now %q", b)
	}
}

func TestCallNamesAMissingSocket(t *testing.T) {
	path := socketPath(t)
	_, err := Call(context.Background(), path, Request{Op: OpList})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("err %v", err)
	}
}

func TestServeRemovesItsSocketWhenDone(t *testing.T) {
	path := socketPath(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, path, &fakeEngine{}, quiet) }()
	waitListening(t, path, done)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err == nil {
		t.Fatal("socket file left behind")
	}
}

const helperEnv = "GPUWARDEN_CONTROL_TEST_SOCKET"

// TestHelperClient is not a test on its own: TestANonRootPeerIsRefused runs
// the test binary as nobody with this test selected and helperEnv set.
func TestHelperClient(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper for TestANonRootPeerIsRefused")
	}
	_, err := Call(context.Background(), path, Request{Op: OpAck})
	fmt.Printf("helper uid %d: %v\n", os.Getuid(), err)
}

func TestANonRootPeerIsRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as nobody")
	}
	runuser, err := exec.LookPath("runuser")
	if err != nil {
		t.Skip("no runuser")
	}
	// nobody needs to reach the binary and the socket: a world-readable copy
	// in a world-searchable directory, and a socket made 0666, so that only
	// the peer check stands between nobody and the handler.
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "control.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Join(dir, "run")
	if err := os.Mkdir(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(sockDir, 0o755)
	path := filepath.Join(sockDir, "control.sock")
	eng := &fakeEngine{}
	serve(t, &Server{Handler: eng, Log: quiet}, path)
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(runuser, "-u", "nobody", "--", bin, "-test.run=^TestHelperClient$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "helper uid "+nobody.Uid+":") {
		t.Fatalf("helper did not run as nobody (uid %s):\n%s", nobody.Uid, out)
	}
	if !strings.Contains(string(out), "permission denied: uid ") || !strings.Contains(string(out), "only root (uid 0) may use") {
		t.Fatalf("helper was not refused with the message:\n%s", out)
	}
	if calls := eng.Calls(); len(calls) != 0 {
		t.Fatalf("a non-root peer reached the handler: %q", calls)
	}
	// The server is unharmed and still answers root.
	if _, err := Call(context.Background(), path, Request{Op: OpList}); err != nil {
		t.Fatal(err)
	}
}

// blockingEngine's List waits until release is closed.
type blockingEngine struct {
	fakeEngine
	started chan struct{}
	release chan struct{}
}

func (b *blockingEngine) List() (any, error) {
	b.started <- struct{}{}
	<-b.release
	return "done", nil
}

func TestRequestsBeyondTheInFlightBoundAreToldBusy(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	path := socketPath(t)
	eng := &blockingEngine{started: make(chan struct{}, maxInFlight), release: make(chan struct{})}
	serve(t, &Server{Handler: eng, Log: quiet}, path)
	errs := make(chan error, maxInFlight)
	for i := 0; i < maxInFlight; i++ {
		go func() {
			_, err := Call(context.Background(), path, Request{Op: OpList})
			errs <- err
		}()
	}
	for i := 0; i < maxInFlight; i++ {
		<-eng.started
	}
	_, err := Call(context.Background(), path, Request{Op: OpList})
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("request %d: %v, want busy", maxInFlight+1, err)
	}
	close(eng.release)
	for i := 0; i < maxInFlight; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// fakeProfiling records what the server asked of it.
type fakeProfiling struct{ fakeEngine }

func (f *fakeProfiling) PauseProfiling(d time.Duration, who string) (any, error) {
	f.record("pause " + d.String() + " by " + who)
	return map[string]any{"paused": true}, nil
}
func (f *fakeProfiling) ResumeProfiling(who string) (any, error) {
	f.record("resume by " + who)
	return map[string]any{"paused": false}, nil
}
func (f *fakeProfiling) ProfilingStatus() (any, error) {
	f.record("status")
	return map[string]any{"paused": false}, nil
}

func TestWithoutRemediationTheProfilingOpsAreAnsweredAndTheOthersSaySo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root's requests are answered")
	}
	path := socketPath(t)
	p := &fakeProfiling{}
	serve(t, &Server{Profiling: p, Log: quiet}, path)
	ctx := context.Background()
	for _, op := range []string{OpList, OpAck, OpResetBreaker} {
		_, err := Call(ctx, path, Request{Op: op})
		if err == nil || !strings.Contains(err.Error(), "remediation is not configured") {
			t.Errorf("%s: %v, want remediation is not configured", op, err)
		}
	}
	if _, err := Call(ctx, path, Request{Op: OpProfilingPause, Duration: "90m"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Call(ctx, path, Request{Op: OpProfilingPause}); err == nil || !strings.Contains(err.Error(), `"duration" is required`) {
		t.Errorf("a pause without a duration: %v", err)
	}
	if _, err := Call(ctx, path, Request{Op: OpProfilingPause, Duration: "soon"}); err == nil || !strings.Contains(err.Error(), `"soon"`) {
		t.Errorf("a pause with a bad duration: %v", err)
	}
	if _, err := Call(ctx, path, Request{Op: OpProfilingResume}); err != nil {
		t.Fatal(err)
	}
	if _, err := Call(ctx, path, Request{Op: OpProfilingStatus}); err != nil {
		t.Fatal(err)
	}
	calls := p.Calls()
	if len(calls) != 3 || !strings.HasPrefix(calls[0], "pause 1h30m0s by uid 0 pid ") ||
		!strings.HasPrefix(calls[1], "resume by uid 0 pid ") || calls[2] != "status" {
		t.Fatalf("calls %q", calls)
	}
}

func TestWithoutAProfilingHandlerItsOpsSaySo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root's requests are answered")
	}
	path := socketPath(t)
	serve(t, &Server{Handler: &fakeEngine{}, Log: quiet}, path)
	_, err := Call(context.Background(), path, Request{Op: OpProfilingStatus})
	if err == nil || !strings.Contains(err.Error(), "profiling control is not available") {
		t.Fatalf("profiling-status: %v", err)
	}
}
