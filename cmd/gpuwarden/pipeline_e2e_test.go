package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// writeKmsgEach writes each line through its own open of /dev/kmsg: the
// kernel rate-limits writers per open file (printk_devkmsg=ratelimit lets
// one through 10 lines in 5 s), and a flood must reach the ring whole.
func writeKmsgEach(t testing.TB, lines []string) {
	t.Helper()
	for _, l := range lines {
		fd, err := syscall.Open("/dev/kmsg", syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("open /dev/kmsg: %v", err)
			return
		}
		_, err = syscall.Write(fd, []byte(l+"\n"))
		syscall.Close(fd)
		if err != nil {
			t.Errorf("write /dev/kmsg: %v", err)
			return
		}
	}
}

// counter reads one series of a scrape as a number (0 when absent).
func counter(body, metric string, matchers ...string) float64 {
	v, _ := metricValue(body, metric, matchers...)
	f, _ := strconv.ParseFloat(v, 64)
	return f
}

// liveHostAgent is the agent as it runs on a GPU host: the NVML backend
// (no GPUs here: the GPU collector is down and says why), the live kernel
// log, a state dir that outlives restarts.
func liveHostAgent(t *testing.T, stateDir string) *agentProc {
	a := startAgent(t, nil, "--backend", "nvml", "--collector.kmsg=true", "--no-collector.dkms", "--state.dir", stateDir)
	eventually(t, 20*time.Second, "kmsg collector up", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="kmsg"`)
		return v == "1"
	})
	return a
}

// settled waits until the agent has read what the ring holds: its record
// count stops moving.
func settled(t *testing.T, a *agentProc) string {
	t.Helper()
	last, stable := -1.0, 0
	for range 200 {
		m := a.mustGet(t, "/metrics")
		n := counter(m, "gpuwarden_kmsg_records_total") + counter(m, "gpuwarden_kmsg_skipped_records_total")
		if n == last {
			if stable++; stable == 4 {
				return m
			}
		} else {
			last, stable = n, 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the kernel-log reader never settled")
	return ""
}

// kill -9 at every stage of a flood, again and again: while the agent
// reads the ring at start, while records arrive, between a batch and its
// cursor. After the last restart every line is counted exactly once and
// listed exactly once: the cursor moves only with the counters it covers.
func TestKill9DuringAFloodLosesAndDoublesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	state := t.TempDir()
	marker := fmt.Sprintf("kill9-%d", rand.Int63())
	// Xid 28 on a bus id no GPU has: the one unknown-device series of code
	// 28, which earlier runs of this test may have left lines for.
	series := []string{`pci_bus_id="unknown"`, `xid="28"`}
	a := liveHostAgent(t, state)
	base := counter(settled(t, a), "gpuwarden_xid_errors_total", series...)

	const n = 300
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("<3>NVRM: Xid (PCI:%04x:%02x:00): 28, pid=%d, name=flood, %s-%d", 0xf000+i%4096, i%256, i, marker, i)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < n; i += 10 {
			writeKmsgEach(t, lines[i:i+10])
			time.Sleep(15 * time.Millisecond)
		}
	})
	kills := 0
	for i := 0; kills < 8; i++ {
		// Kill at a random moment: in the start-up read, in a batch, idle.
		time.Sleep(time.Duration(rand.Intn(250)) * time.Millisecond)
		a.cmd.Process.Signal(syscall.SIGKILL)
		a.cmd.Wait()
		kills++
		a = startAgent(t, nil, "--backend", "nvml", "--collector.kmsg=true", "--no-collector.dkms", "--state.dir", state)
	}
	wg.Wait()

	want := base + n
	eventually(t, 20*time.Second, fmt.Sprintf("Xid 28 counted %v times", want), func() bool {
		return counter(a.mustGet(t, "/metrics"), "gpuwarden_xid_errors_total", series...) >= want
	})
	m := settled(t, a)
	if got := counter(m, "gpuwarden_xid_errors_total", series...); got != want {
		t.Errorf("after %d kill -9s: Xid 28 counted %v times, want %v (%v before the flood + %d lines)", kills, got, want, base, n)
	}
	if lost := counter(m, "gpuwarden_kmsg_lost_records_total") + counter(m, "gpuwarden_kmsg_dropped_records_total"); lost != 0 {
		t.Logf("the reader counted %v records lost or dropped", lost)
	}
	var listed []event.Event
	if err := json.Unmarshal([]byte(a.mustGet(t, "/v1/events?kind=xid&limit=1000")), &listed); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, ev := range listed {
		if i := strings.Index(ev.Raw, marker+"-"); i >= 0 {
			seen[ev.Raw[i:]]++
		}
	}
	for i := range n {
		if c := seen[fmt.Sprintf("%s-%d", marker, i)]; c != 1 {
			t.Errorf("line %d listed %d times in /v1/events, want once", i, c)
		}
	}
}

// 20 000 distinct lines that name no GPU of the host, with codes in and
// out of the catalog, and forgeries: the series stay bounded, the reader
// keeps up, and every record is applied or counted as lost or dropped.
func TestAFloodOfUnknownDeviceLinesStaysBoundedAndCurrent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	a := liveHostAgent(t, t.TempDir())
	before := settled(t, a)
	applied := func(m string) float64 {
		return counter(m, "gpuwarden_xid_errors_total", `pci_bus_id="unknown"`, `xid="29"`) +
			counter(m, "gpuwarden_xid_errors_total", `pci_bus_id="unknown"`, `xid="other"`) +
			counter(m, "gpuwarden_kmsg_rejected_records_total", `reason="process_name_prefix"`) +
			counter(m, "gpuwarden_kmsg_rejected_records_total", `reason="malformed"`)
	}
	accounted := func(m string) float64 {
		return counter(m, "gpuwarden_kmsg_records_total") + counter(m, "gpuwarden_kmsg_lost_records_total") +
			counter(m, "gpuwarden_kmsg_dropped_records_total")
	}

	// Written at level 4 (warning): this kernel prints levels 0-3 on its
	// serial console as well, at about 1.5 ms a line, which would make
	// the test time the console rather than the agent. The rules never
	// look at the level.
	const n = 20000
	lines := make([]string, n)
	for i := range lines {
		bus := fmt.Sprintf("%04x:%02x:%02x", 0xe000+i%8192, (i/8192)%256, i%32)
		switch i % 4 {
		case 0: // a catalog code
			lines[i] = fmt.Sprintf("<4>NVRM: Xid (PCI:%s): 29, pid=%d, name=flood%d, distinct", bus, i, i)
		case 1: // codes no catalog has: folded into "other"
			lines[i] = fmt.Sprintf("<4>NVRM: Xid (PCI:%s): %d, pid=%d, name=flood, distinct", bus, 1000+i, i)
		case 2: // a task's segfault report with a driver line for a name
			lines[i] = fmt.Sprintf("<4>NVRM: [%d]: segfault at 0 ip 0000 sp 0000 error 4 in GPU %s.0 has fallen off the bus[400000+1000]", i, bus)
		default: // the driver's grammar broken
			lines[i] = fmt.Sprintf("<4>NVRM: Xid (PCI:%s): x%d, pid=%d, 79 13 48", bus, i, i)
		}
	}
	writeKmsgEach(t, lines)
	wrote := time.Now()

	// Current within a second of the last write: every line read, or
	// counted as overwritten before it could be read, or dropped.
	eventually(t, time.Second, "the reader current after 20 000 lines", func() bool {
		return accounted(a.mustGet(t, "/metrics"))-accounted(before) >= n
	})
	t.Logf("current %s after the last write", time.Since(wrote).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond) // the reader's own counters are published within 250 ms
	m := a.mustGet(t, "/metrics")
	missed := counter(m, "gpuwarden_kmsg_lost_records_total") - counter(before, "gpuwarden_kmsg_lost_records_total") +
		counter(m, "gpuwarden_kmsg_dropped_records_total") - counter(before, "gpuwarden_kmsg_dropped_records_total")
	if got := applied(m) - applied(before); got < n-missed {
		t.Errorf("%v of %d lines applied, %v lost or dropped: %v unaccounted for", got, n, missed, n-missed-got)
	}
	t.Logf("%v lines lost or dropped, all counted", missed)

	// The bound: one unknown-device series per catalog code seen and one
	// for "other", on top of one series per GPU and code.
	series := 0
	for _, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, "gpuwarden_xid_errors_total{") {
			series++
			if !strings.Contains(line, `pci_bus_id="unknown"`) {
				t.Errorf("a series per address: %s", line)
			}
		}
	}
	if series > 173 {
		t.Errorf("%d gpuwarden_xid_errors_total series, over the bound of 173 (172 catalog codes + other)", series)
	}
	if strings.Contains(m, "flood") || len(m) > 256<<10 {
		t.Errorf("/metrics is %d bytes or carries log text", len(m))
	}
	if h := a.mustGet(t, "/v1/health"); strings.Contains(h, "fell off the bus") {
		t.Errorf("a forged line reached health:\n%s", h)
	}
	if ev := a.mustGet(t, "/v1/events?limit=1000"); len(ev) > 16<<20 {
		t.Errorf("/v1/events is %d bytes", len(ev))
	}
}

// /metrics of an agent with every source on is one exposition: each
// family once, each series (name and labels) once, and it parses.
func TestNoSeriesIsWrittenTwice(t *testing.T) {
	args := []string{"--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms", "--state.dir", t.TempDir(), "--collector.dkms=true"}
	if os.Geteuid() == 0 {
		args = append(args, "--collector.kmsg=true")
	}
	a := startAgent(t, nil, args...)
	eventually(t, 20*time.Second, "dkms source reported", func() bool {
		return strings.Contains(a.mustGet(t, "/metrics"), "gpuwarden_check_status{")
	})
	time.Sleep(500 * time.Millisecond)
	body := a.mustGet(t, "/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := parser.TextToMetricFamilies(strings.NewReader(body)); err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" {
			continue
		}
		key := line
		if !strings.HasPrefix(line, "#") {
			key = line[:strings.LastIndexByte(line, ' ')]
		}
		if seen[key] {
			t.Errorf("written twice: %s", key)
		}
		seen[key] = true
	}
	for _, want := range []string{"gpuwarden_kmsg_records_total", "gpuwarden_check_status{", "DCGM_FI_DEV_GPU_TEMP{", "gpuwarden_collector_up{collector=\"replay_kmsg\"}"} {
		if os.Geteuid() != 0 && strings.HasPrefix(want, "gpuwarden_kmsg") {
			continue
		}
		if !strings.Contains(body, want) {
			t.Errorf("no %s in /metrics", want)
		}
	}
}

// State files are read as files from outside: /dev/zero, a FIFO or a
// symlink in their place is refused with a clear reason and moved aside;
// the agent starts, reads the kernel log and says what it found.
func TestHostileStateFilesAreRefusedAndTheAgentRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading /dev/kmsg needs root")
	}
	state := t.TempDir()
	if err := os.Symlink("/dev/zero", filepath.Join(state, "kmsg-cursor.json")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(state, "gpus.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan *agentProc, 1)
	go func() { done <- liveHostAgent(t, state) }()
	var a *agentProc
	select {
	case a = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not come up with a FIFO and a /dev/zero link among its state files")
	}
	h := a.mustGet(t, "/v1/health")
	for _, want := range []string{"kmsg-cursor.json", "a symbolic link, not followed", "gpus.json", "a FIFO"} {
		if !strings.Contains(h, want) {
			t.Errorf("/v1/health does not say %q:\n%s", want, h)
		}
	}
	for _, f := range []string{"kmsg-cursor.json", "gpus.json"} {
		if m, _ := filepath.Glob(filepath.Join(state, f+".corrupt-*")); len(m) != 1 {
			t.Errorf("%s not moved aside: %v", f, m)
		}
	}
}

// A kernel image whose name is not UTF-8 leaves every DKMS series in the
// scrape, with the name escaped, and the exposition parses.
func TestAKernelNameThatIsNotUTF8KeepsEveryDKMSSeries(t *testing.T) {
	root := t.TempDir()
	if out, err := exec.Command("cp", "-a", filepath.Join("..", "..", "testdata", "rootfs", "healthy")+"/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(root, "boot", "vmlinuz-6.1.0-\xff-amd64"), []byte("kernel"), 0o644)
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms", "--collector.dkms=true",
		"--path.rootfs", root, "--path.procfs", "proc", "--path.sysfs", "sys", "--state.dir", t.TempDir())
	eventually(t, 20*time.Second, "the DKMS series", func() bool {
		return strings.Contains(a.mustGet(t, "/metrics"), "gpuwarden_check_status{")
	})
	time.Sleep(300 * time.Millisecond)
	m := a.mustGet(t, "/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := parser.TextToMetricFamilies(strings.NewReader(m)); err != nil {
		t.Fatalf("the exposition does not parse: %v", err)
	}
	for _, want := range []string{`gpuwarden_nvidia_module_present{kernel="6.1.0-\\xff-amd64"}`, "gpuwarden_check_status{", "gpuwarden_dkms_module_state{", "gpuwarden_reboot_pending "} {
		if !strings.Contains(m, want) {
			t.Errorf("no %s in /metrics", want)
		}
	}
}

// On a replayed trace whose GPUs 0 and 1 run a Slurm job (the demo's), an
// Xid on GPU 0 names the job: in /v1/events, as a hook's JSON would.
func TestAnXidOnAReplayedJobsGPUNamesTheJob(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.kmsg=true", "--collector.dkms=false", "--state.dir", t.TempDir())
	eventually(t, 10*time.Second, "kmsg collector up and the job's process seen", func() bool {
		m := a.mustGet(t, "/metrics")
		v, _ := metricValue(m, "gpuwarden_collector_up", `collector="kmsg"`)
		return v == "1" && strings.Contains(m, `hpc_job="4242"`)
	})
	marker := fmt.Sprintf("jobxid-%d", rand.Int63())
	writeKmsgEach(t, []string{"<3>NVRM: Xid (PCI:0000:18:00): 13, pid=31337, name=" + marker + ", Graphics Exception"})
	var ev event.Event
	eventually(t, 10*time.Second, "the Xid listed", func() bool {
		var evs []event.Event
		json.Unmarshal([]byte(a.mustGet(t, "/v1/events?gpu=0&kind=xid&limit=1000")), &evs)
		for _, e := range evs {
			if strings.Contains(e.Raw, marker) {
				ev = e
				return true
			}
		}
		return false
	})
	if got := ev.Fields["owners"]; got != "slurm job 4242.0 (demo)" {
		t.Errorf("the Xid on GPU 0 names %q, want the demo's Slurm job", got)
	}
}
