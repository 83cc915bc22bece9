package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// writeKmsg writes lines into the real kernel log, as a driver would show up
// in it (root only).
func writeKmsg(t *testing.T, lines ...string) {
	t.Helper()
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("cannot write /dev/kmsg (needs root): %v", err)
	}
	defer f.Close()
	for _, l := range lines {
		// One write is one record.
		if _, err := f.Write([]byte(l + "\n")); err != nil {
			t.Fatalf("write /dev/kmsg: %v", err)
		}
	}
}

// uniqueGPUTrace writes a one-GPU trace whose GPU sits at a PCI domain no
// earlier run used, so lines left in the ring buffer by other runs cannot be
// mistaken for this run's.
func uniqueGPUTrace(t *testing.T) (path, bus, nvmlBus string) {
	t.Helper()
	dom := 0x1000 + rand.New(rand.NewSource(time.Now().UnixNano())).Intn(0xe000)
	bus = fmt.Sprintf("%04x:3b:00", dom)
	nvmlBus = strings.ToUpper(fmt.Sprintf("0000%04x:3b:00.0", dom))
	zero := 0
	tr := &replay.Trace{Header: replay.Header{Format: replay.Format, Version: replay.Version, Hostname: "kmsg-e2e", DurationS: 60,
		GPUs: []gpu.Info{{Index: 0, UUID: "GPU-11111111-2222-3333-4444-555555555555", Name: "NVIDIA H100 80GB HBM3",
			PCIBusID: nvmlBus}}}}
	tr.Records = []replay.Record{{T: 0, GPU: &zero, NVML: map[string]replay.Answer{"GetTemperature(0)": {V: []byte("40")}}}}
	path = filepath.Join(t.TempDir(), "one.trace.jsonl")
	if err := replay.WriteFile(tr, path); err != nil {
		t.Fatal(err)
	}
	return path, bus, nvmlBus
}

func TestKernelLogEventsEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	trace, bus, nvmlBus := uniqueGPUTrace(t)
	state := t.TempDir()
	args := []string{"--backend", "replay", "--replay", trace, "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.kmsg=true", "--collector.dkms=false", "--state.dir", state}
	a := startAgent(t, nil, args...)
	// The counter labels a known GPU as its other series do (NVML's spelling).
	sel := `pci_bus_id="` + nvmlBus + `"`
	xidCount := func(a *agentProc, xid int) int {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_xid_errors_total", sel, `xid="`+strconv.Itoa(xid)+`"`)
		n, _ := strconv.Atoi(v)
		return n
	}
	eventually(t, 10*time.Second, "kmsg collector up", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="kmsg"`)
		return v == "1"
	})
	if !strings.Contains(a.mustGet(t, "/v1/health"), `"level": "ok"`) {
		t.Fatalf("GPU not healthy before the test wrote anything:\n%s", a.mustGet(t, "/v1/health"))
	}
	marker := fmt.Sprintf("e2e%d", time.Now().UnixNano())
	hostile := "$(reboot); rm -rf / \x1b[31m" + marker
	writeKmsg(t,
		fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=4242, name=%s, Graphics SM Warp Exception on (GPC 1, TPC 0, SM 0): Out Of Range Address", bus, hostile),
		fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=4243, name=%s, Graphics Exception: ESR 0x51e730=0x0", bus, marker),
		fmt.Sprintf("<3>nvidia-nvswitch3: SXid (PCI:%s.0): 20034, Fatal, Link 48 LTSSM Fault Up", strings.Replace(bus, ":3b:", ":c1:", 1)),
		fmt.Sprintf("<3>pcieport %s:00:01.0: AER: Uncorrected (Fatal) error received: %s.0", bus[:4], bus),
		fmt.Sprintf("<3>NVRM: GPU %s.0: GPU has fallen off the bus.", bus),
	)
	written := time.Now()
	eventually(t, time.Second, "Xid counter, /v1/events and /v1/health change", func() bool {
		return xidCount(a, 13) == 2 &&
			strings.Contains(a.mustGet(t, "/v1/events?kind=fallen_off_bus"), bus) &&
			strings.Contains(a.mustGet(t, "/v1/health"), `"level": "critical"`)
	})
	t.Logf("seen %s after the write", time.Since(written).Round(time.Millisecond))
	m := a.mustGet(t, "/metrics")
	for _, kind := range []string{"xid", "sxid", "aer", "fallen_off_bus"} {
		if v, ok := metricValue(m, "gpuwarden_kernel_events_total", `kind="`+kind+`"`); !ok || v == "0" {
			t.Errorf("gpuwarden_kernel_events_total{kind=%q} = %q", kind, v)
		}
	}
	if _, ok := metricValue(m, "gpuwarden_kmsg_lost_records_total"); !ok {
		t.Error("no gpuwarden_kmsg_lost_records_total")
	}
	if v, _ := metricValue(m, "gpuwarden_kmsg_records_total"); v == "" || v == "0" {
		t.Errorf("gpuwarden_kmsg_records_total = %q", v)
	}
	events := a.mustGet(t, "/v1/events?gpu=0&kind=xid")
	// The hostile name is kept verbatim in JSON (escaped only as JSON must).
	if !strings.Contains(events, `$(reboot); rm -rf / \u001b[31m`+marker) {
		t.Errorf("process name not kept verbatim in /v1/events:\n%s", events)
	}
	if strings.Contains(m, marker) {
		t.Error("a process name reached /metrics as a label")
	}
	if !strings.Contains(events, `"action"`) || !strings.Contains(events, `"explanation"`) {
		t.Errorf("events lack the catalog's explanation and action:\n%s", events)
	}

	// A restart reads on from the saved cursor: nothing is counted twice.
	a.stop()
	b := startAgent(t, nil, args...)
	eventually(t, 10*time.Second, "restarted kmsg collector up", func() bool {
		v, _ := metricValue(b.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="kmsg"`)
		return v == "1"
	})
	time.Sleep(time.Second)
	if n := xidCount(b, 13); n != 0 {
		t.Errorf("after a restart the old Xid 13 lines were counted again: %d", n)
	}
	// They are listed again, as restored, so /v1/events still shows the
	// boot's history; only the count and the subscribers skip them.
	var listed []event.Event
	if err := json.Unmarshal([]byte(b.mustGet(t, "/v1/events?limit=1000")), &listed); err != nil {
		t.Fatal(err)
	}
	restored := 0
	for _, ev := range listed {
		if strings.Contains(ev.Raw, marker) {
			if !ev.Restored {
				t.Errorf("after a restart an old event is listed as new: %s", ev.Raw)
			}
			restored++
		}
	}
	if restored == 0 {
		t.Error("after a restart the boot's old events are not listed at all")
	}
	// What they meant is not forgotten: the GPU that fell off the bus is
	// still critical, and its last Xid is still 13.
	if h := b.mustGet(t, "/v1/health"); !strings.Contains(h, `"level": "critical"`) || !strings.Contains(h, "fell off the bus") {
		t.Errorf("after a restart the GPU that fell off the bus is no longer critical:\n%s", h)
	}
	if v, _ := metricValue(b.mustGet(t, "/metrics"), "DCGM_FI_DEV_XID_ERRORS", sel); v != "13" {
		t.Errorf("after a restart DCGM_FI_DEV_XID_ERRORS = %q, want 13", v)
	}
	writeKmsg(t, fmt.Sprintf("<3>NVRM: Xid (PCI:%s): 13, pid=1, name=%s-2, Graphics Exception", bus, marker))
	eventually(t, time.Second, "a new line after the restart is counted once", func() bool { return xidCount(b, 13) == 1 })
}

// What the kernel said before the agent started (since boot, still in the
// ring buffer) counts on a first start: a GPU that fell off the bus an hour
// ago is critical the moment the agent comes up.
func TestKernelEventsFromBeforeTheAgentStartedMarkTheirGPU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writing /dev/kmsg needs root")
	}
	trace, bus, _ := uniqueGPUTrace(t)
	writeKmsg(t, fmt.Sprintf("<3>NVRM: GPU %s.0: GPU has fallen off the bus.", bus))
	a := startAgent(t, nil, "--backend", "replay", "--replay", trace, "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.kmsg=true", "--collector.dkms=false", "--state.dir", t.TempDir())
	eventually(t, 10*time.Second, "GPU 0 critical from the earlier line", func() bool {
		h := a.mustGet(t, "/v1/health")
		return strings.Contains(h, `"level": "critical"`) && strings.Contains(h, "fell off the bus")
	})
}

// Without the kernel log the collector is down with the cause and the fix,
// and everything else keeps working.
func TestWithoutTheKernelLogTheRestKeepsRunning(t *testing.T) {
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "200ms",
		"--collector.kmsg=true", "--collector.kmsg.path", "/nonexistent/kmsg", "--collector.dkms=false", "--state.dir", t.TempDir())
	eventually(t, 20*time.Second, "kmsg collector down", func() bool {
		v, _ := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="kmsg"`)
		return v == "0"
	})
	h := a.mustGet(t, "/v1/health")
	if !strings.Contains(h, "collector kmsg is down") || !strings.Contains(h, "/dev/kmsg") {
		t.Errorf("/v1/health does not say why the kernel log is not read:\n%s", h)
	}
	m := a.mustGet(t, "/metrics")
	if v, _ := metricValue(m, "gpuwarden_collector_up", `collector="gpu"`); v != "1" {
		t.Errorf("GPU collector up = %q, want 1", v)
	}
	if _, ok := metricValue(m, "DCGM_FI_DEV_GPU_TEMP", `gpu="7"`); !ok {
		t.Error("GPU metrics stopped with the kernel log")
	}
	if n := strings.Count(a.log.String(), "source down; the agent keeps running\" source=kmsg"); n != 1 {
		t.Errorf("the cause is logged %d times, want once", n)
	}
}
