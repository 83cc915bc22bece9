package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkAgentRSSAfterAMinuteOfReplay runs the real binary on the demo
// trace for a minute (looping at 5x speed, sampling every 100 ms, scraped
// every second) and reports its resident memory at the end.
func BenchmarkAgentRSSAfterAMinuteOfReplay(b *testing.B) {
	gpuwardenBinary(b)
	for b.Loop() {
		a := startAgent(b, nil, "--backend", "replay", "--replay.loop", "--replay.speed", "5",
			"--collector.gpu.interval", "100ms", "--collector.kmsg=false", "--collector.dkms=false")
		end := time.Now().Add(time.Minute)
		for time.Now().Before(end) {
			a.get("/metrics")
			time.Sleep(time.Second)
		}
		b.ReportMetric(float64(rssKiB(b, a.cmd.Process.Pid))/1024, "RSS-MiB")
		a.stop()
	}
}

func rssKiB(b *testing.B, pid int) int {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
