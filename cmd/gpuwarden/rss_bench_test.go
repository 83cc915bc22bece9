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
// every second) and reports its resident memory at the end: RSS-MiB in all
// (VmRSS), and its two parts, anon-MiB (RssAnon: heap, stacks, the
// runtime's own) and file-MiB (RssFile: the pages of the binary and libc
// mapped in; the binary was just built, so all its pages are in the page
// cache, which is the most of it the kernel maps on a fault).
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
		st := procStatusKiB(b, a.cmd.Process.Pid)
		b.ReportMetric(float64(st["VmRSS"])/1024, "RSS-MiB")
		b.ReportMetric(float64(st["RssAnon"])/1024, "anon-MiB")
		b.ReportMetric(float64(st["RssFile"])/1024, "file-MiB")
		a.stop()
	}
}

// procStatusKiB is the memory lines of /proc/<pid>/status, in KiB.
func procStatusKiB(b *testing.B, pid int) map[string]int {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	kib := map[string]int{}
	for _, line := range strings.Split(string(st), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if f := strings.Fields(rest); ok && len(f) == 2 && f[1] == "kB" {
			n, err := strconv.Atoi(f[0])
			if err != nil {
				b.Fatalf("%s: %v", line, err)
			}
			kib[name] = n
		}
	}
	for _, want := range []string{"VmRSS", "RssAnon", "RssFile"} {
		if _, ok := kib[want]; !ok {
			b.Fatalf("no %s in /proc/%d/status", want, pid)
		}
	}
	return kib
}
