package sdnotify

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a real unixgram socket where systemd's would be and points
// NOTIFY_SOCKET at it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// next returns the next datagram, or "" when none arrives within wait.
func next(t *testing.T, conn *net.UnixConn, wait time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return ""
		}
		t.Fatalf("read notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestMessagesReachTheSocket(t *testing.T) {
	conn := listen(t)
	n := New()
	if !Enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}
	steps := []struct {
		name string
		send func() error
		want []string
	}{
		{"ready", n.Ready, []string{"READY=1"}},
		{"status", func() error { return n.Status("8 GPUs, 1 unhealthy: GPU 3 fell off the bus") },
			[]string{"STATUS=8 GPUs, 1 unhealthy: GPU 3 fell off the bus"}},
		{"reloading", n.Reloading, []string{"RELOADING=1", "MONOTONIC_USEC="}},
		{"stopping", n.Stopping, []string{"STOPPING=1"}},
	}
	for _, s := range steps {
		if err := s.send(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := next(t, conn, time.Second)
		lines := strings.Split(got, "\n")
		if len(lines) != len(s.want) {
			t.Fatalf("%s: datagram %q, want %d lines", s.name, got, len(s.want))
		}
		for i, w := range s.want {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("%s: line %d = %q, want prefix %q", s.name, i, lines[i], w)
			}
		}
	}
	if got := n.Sent(); got != uint64(len(steps)) {
		t.Errorf("Sent() = %d, want %d", got, len(steps))
	}
}

func TestStatusWithNewlineCannotInjectReady(t *testing.T) {
	conn := listen(t)
	// Kernel-log text is attacker-controlled; a newline must not start a
	// second assignment such as READY=1 or WATCHDOG=1.
	if err := New().Status("GPU 3: Xid 79\nREADY=1"); err != nil {
		t.Fatal(err)
	}
	got := next(t, conn, time.Second)
	if strings.Contains(got, "\n") || got != "STATUS=GPU 3: Xid 79 READY=1" {
		t.Fatalf("datagram %q, want a single STATUS line", got)
	}
}

func TestWithoutNotifySocketEverythingIsANoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := New()
	for _, f := range []func() error{n.Ready, n.Reloading, n.Stopping, func() error { return n.Status("x") }} {
		if err := f(); err != nil {
			t.Fatalf("send without a socket: %v", err)
		}
	}
	if n.Sent() != 0 || Enabled() {
		t.Fatalf("Sent() = %d, Enabled() = %v without a socket", n.Sent(), Enabled())
	}
	d, err := n.StartWatchdog(context.Background(), nil)
	if err != nil || d != 0 {
		t.Fatalf("StartWatchdog without WATCHDOG_USEC = %v, %v; want 0, nil", d, err)
	}
}

func TestWatchdogIntervalIsHalfOfWatchdogUsec(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	d, err := WatchdogInterval()
	if err != nil || d != 15*time.Second {
		t.Fatalf("WatchdogInterval() = %v, %v; want 15s", d, err)
	}
	// A hook the agent starts inherits the environment; it must not ping.
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if d, _ := WatchdogInterval(); d != 0 {
		t.Fatalf("WatchdogInterval() for another PID = %v, want 0", d)
	}
}

func TestWatchdogPingsOnlyWhileSamplingAdvances(t *testing.T) {
	conn := listen(t)
	const interval = 20 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(2*interval/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	n := New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, err := n.StartWatchdog(ctx, nil)
	if err != nil || got != interval {
		t.Fatalf("StartWatchdog = %v, %v; want %v", got, err, interval)
	}

	// No sample completed yet: ten intervals pass without a ping.
	if msg := next(t, conn, 10*interval); msg != "" {
		t.Fatalf("ping %q before the first sample", msg)
	}

	// Samples complete: pings arrive.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(interval / 4)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				n.Progress()
			}
		}
	}()
	for i := 0; i < 3; i++ {
		if msg := next(t, conn, 10*interval); msg != "WATCHDOG=1" {
			t.Fatalf("ping %d while sampling: got %q, want WATCHDOG=1", i, msg)
		}
	}

	// The loop hangs (an NVML call never returns): after at most one more
	// ping for samples already counted, the pings stop.
	close(stop)
	<-done
	deadline := time.Now().Add(2 * interval)
	for time.Now().Before(deadline) {
		next(t, conn, interval/2)
	}
	if msg := next(t, conn, 10*interval); msg != "" {
		t.Fatalf("ping %q while the sampling loop is stuck", msg)
	}

	// It recovers: pings resume.
	n.Progress()
	if msg := next(t, conn, 10*interval); msg != "WATCHDOG=1" {
		t.Fatalf("after recovery: got %q, want WATCHDOG=1", msg)
	}

	// Cancelled: no more pings, even with progress.
	cancel()
	time.Sleep(2 * interval)
	for next(t, conn, interval/4) != "" {
	}
	n.Progress()
	if msg := next(t, conn, 5*interval); msg != "" {
		t.Fatalf("ping %q after the context ended", msg)
	}
}

func TestWatchdogUsesTheGivenProgressFunction(t *testing.T) {
	conn := listen(t)
	var samples uint64 = 7
	n := New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	step := make(chan uint64, 1)
	go n.Watchdog(ctx, 10*time.Millisecond, func() uint64 {
		select {
		case v := <-step:
			samples = v
		default:
		}
		return samples
	})
	if msg := next(t, conn, 100*time.Millisecond); msg != "" {
		t.Fatalf("ping %q with a constant count", msg)
	}
	step <- 8
	if msg := next(t, conn, time.Second); msg != "WATCHDOG=1" {
		t.Fatalf("got %q after the count moved, want WATCHDOG=1", msg)
	}
}
