package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func openFDs(t *testing.T, pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func rssMiB(t *testing.T, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Idle keep-alive connections cannot pile up: at most web.max-connections
// are open at once, each is closed after web.idle-timeout, and the agent's
// descriptors and memory come back when the clients go quiet.
func TestIdleConnectionsAreCappedAndClosed(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "1s",
		"--web.idle-timeout", "1s", "--web.max-connections", "32", "--state.dir", t.TempDir())
	pid := a.cmd.Process.Pid
	base := openFDs(t, pid)
	time.Sleep(500 * time.Millisecond) // past start-up
	baseRSS := rssMiB(t, pid)
	const clients = 400
	var wg sync.WaitGroup
	var mu sync.Mutex
	served, closedByServer := 0, 0
	for range clients {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", a.addr, 5*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return
			}
			resp.Body.Close()
			mu.Lock()
			served++
			mu.Unlock()
			// Stay connected and silent: only the server's idle timeout
			// ends this connection.
			if _, err := br.ReadByte(); err != nil {
				mu.Lock()
				closedByServer++
				mu.Unlock()
			}
		})
	}
	peak := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	deadline := time.After(90 * time.Second)
loop:
	for {
		select {
		case <-done:
			break loop
		case <-deadline:
			t.Fatal("clients still connected after 90 s")
		case <-time.After(50 * time.Millisecond):
			peak = max(peak, openFDs(t, pid))
		}
	}
	if served != clients || closedByServer != clients {
		t.Errorf("%d of %d served, %d closed by the server's idle timeout", served, clients, closedByServer)
	}
	if peak > base+32+8 {
		t.Errorf("the agent held %d descriptors at the peak, %d at rest: more than the 32-connection cap", peak, base)
	}
	eventually(t, 10*time.Second, "descriptors back to rest", func() bool { return openFDs(t, pid) <= base+2 })
	// Memory comes back too: within a few MiB of where it was (most of the
	// RSS is the mapped binary, which this test does not measure).
	if rss := rssMiB(t, pid); rss > baseRSS+4 {
		t.Errorf("RSS %.1f MiB after the connections closed, %.1f before them", rss, baseRSS)
	}
	t.Logf("%d clients: peak %d descriptors (rest %d), RSS %.1f MiB (%.1f before)", clients, peak, base, rssMiB(t, pid), baseRSS)
}
