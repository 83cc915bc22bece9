package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kubelet"
)

// testClock is a clock a test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func podRound(at time.Time, procs map[int][]gpu.Process) gpu.Round {
	r := gpu.Round{Time: at}
	for i := range 3 {
		r.Samples = append(r.Samples, &gpu.Sample{GPU: gpu.Info{Index: i, UUID: "GPU-" + strconv.Itoa(i) + "0000000-0000-0000-0000-000000000000",
			PCIBusID: "00000000:" + strconv.Itoa(18+i) + ":00.0", Minor: i}, Time: at,
			Values: make([]float64, len(gpu.Fields)), Status: make([]gpu.Status, len(gpu.Fields)), Processes: procs[i]})
	}
	return r
}

func uuid(i int) string { return "GPU-" + strconv.Itoa(i) + "0000000-0000-0000-0000-000000000000" }

func TestGPUSeriesCarryTheKubeletsPodsAfterDCGMExportersLabels(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	st := NewState("h", 0, time.Hour, clk.now)
	st.LabelPods(true)
	st.ApplyRound(podRound(clk.now(), nil))
	st.SetPods(kubelet.Assignments{
		uuid(0): {{Namespace: "ml", Pod: "train-0", Container: "trainer"}},
		// A time-sliced GPU: one series, both containers in the same order in each label.
		uuid(1): {{Namespace: "research", Pod: "notebook-b", Container: "jupyter"}, {Namespace: "research", Pod: "notebook.a", Container: "lab"}},
		"GPU-ffffffff-0000-0000-0000-000000000000": {{Namespace: "other", Pod: "elsewhere", Container: "c"}},
	}, clk.now())
	body := scrape(t, st)
	for _, want := range []string{
		`DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="` + uuid(0) + `",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="",Hostname="h",DCGM_FI_DRIVER_VERSION="",container="trainer",namespace="ml",pod="train-0"} `,
		`DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="` + uuid(1) + `",pci_bus_id="00000000:19:00.0",device="nvidia1",modelName="",Hostname="h",DCGM_FI_DRIVER_VERSION="",container="jupyter,lab",namespace="research,research",pod="notebook-b,notebook.a"} `,
		`DCGM_FI_DEV_GPU_TEMP{gpu="2",UUID="` + uuid(2) + `",pci_bus_id="00000000:20:00.0",device="nvidia2",modelName="",Hostname="h",DCGM_FI_DRIVER_VERSION="",container="",namespace="",pod=""} `,
		`gpuwarden_gpu_info{gpu="0",UUID="` + uuid(0) + `",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="",Hostname="h",DCGM_FI_DRIVER_VERSION="",container="trainer",namespace="ml",pod="train-0"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("no series\n%s\nin\n%s", want, grepLines(body, "DCGM_FI_DEV_GPU_TEMP"))
		}
	}
	if strings.Contains(body, "elsewhere") {
		t.Error("a GPU of another node labels a series")
	}
	if n := strings.Count(grepLines(body, "DCGM_FI_DEV_GPU_TEMP{"), "\n") + 1; n != 3 {
		t.Errorf("%d GPU temperature series, want one per GPU", n)
	}

	// Two minutes without an answer: the labels go, the series stay.
	clk.add(kubelet.Stale + time.Second)
	st.ApplyRound(podRound(clk.now(), nil))
	body = scrape(t, st)
	if strings.Contains(body, "train-0") || !strings.Contains(body, `DCGM_FI_DRIVER_VERSION="",container="",namespace="",pod=""} `) {
		t.Errorf("a stale answer still labels the series:\n%s", grepLines(body, "DCGM_FI_DEV_GPU_TEMP"))
	}
}

func TestPodLabelsAreOffByDefault(t *testing.T) {
	st := NewState("h", 0, time.Hour, nil)
	st.ApplyRound(podRound(time.Now(), nil))
	st.SetPods(kubelet.Assignments{uuid(0): {{Namespace: "ml", Pod: "train-0", Container: "trainer"}}}, time.Now())
	if body := scrape(t, st); strings.Contains(body, "namespace=") || strings.Contains(body, "train-0") {
		t.Errorf("pod labels without collector.gpu.kubernetes:\n%s", grepLines(body, "gpuwarden_gpu_info"))
	}
}

// The kubelet names pods, cgroups give UIDs: the join holds where one pod
// holds a GPU and one pod UID runs on it, and nowhere else.
func TestProcessesAndXidsNameTheirPodWhenTheJoinIsUnambiguous(t *testing.T) {
	const (
		uidA = "6b1c8f1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
		uidB = "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
		uidC = "11111111-2222-3333-4444-555555555555"
		ctr  = "3f2a9d8c7b6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a"
	)
	proc := t.TempDir()
	for pid, uid := range map[int]string{101: uidA, 102: uidB, 103: uidC} {
		dir := filepath.Join(proc, strconv.Itoa(pid))
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "cgroup"), []byte("0::/kubepods/burstable/pod"+uid+"/"+ctr+"\n"), 0o644)
	}
	st := NewState("h", 0, time.Hour, nil)
	st.Attribute(proc)
	st.LabelPods(true)
	st.SetPods(kubelet.Assignments{
		uuid(0): {{Namespace: "ml", Pod: "train-0", Container: "trainer"}},
		// Given to one pod, but two pods' processes run on it: no name for either.
		uuid(1): {{Namespace: "ml", Pod: "eval-0", Container: "eval"}},
		// Given to a pod with no process on it yet.
		uuid(2): {{Namespace: "serving", Pod: "infer", Container: "server"}},
	}, time.Now())
	st.ApplyRound(podRound(time.Now(), map[int][]gpu.Process{
		0: {{PID: 101, UsedMemory: 1 << 30}},
		1: {{PID: 102, UsedMemory: 2 << 30}, {PID: 103, UsedMemory: 3 << 30}},
	}))
	body := scrape(t, st)
	if !strings.Contains(body, `pid="101",hpc_job="",pod_uid="`+uidA+`",container_id="`+ctr+`",namespace="ml",pod="train-0"} `) {
		t.Errorf("the process on GPU 0 does not name its pod:\n%s", grepLines(body, "gpuwarden_gpu_process"))
	}
	for _, pid := range []string{"102", "103"} {
		for _, l := range strings.Split(grepLines(body, "gpuwarden_gpu_process_memory_bytes{"), "\n") {
			if strings.Contains(l, `pid="`+pid+`"`) && strings.Contains(l, "eval-0") {
				t.Errorf("pid %s is named after a pod the join cannot tie it to: %s", pid, l)
			}
		}
	}
	for _, tc := range []struct {
		bus, want string
	}{
		{"0000:18:00", "pod ml/train-0 container 3f2a9d8c7b6e"},
		{"0000:20:00", "pod serving/infer container server"},
	} {
		ev := st.ApplyEvent(kernelEvent(t, "NVRM: Xid (PCI:"+tc.bus+"): 79, pid=1, GPU has fallen off the bus."))
		if got := ev.Fields[FieldOwners]; got != tc.want {
			t.Errorf("an Xid on %s names %q, want %q", tc.bus, got, tc.want)
		}
	}
	ev := st.ApplyEvent(kernelEvent(t, "NVRM: Xid (PCI:0000:19:00): 13, pid=1, Graphics Exception"))
	if got := ev.Fields[FieldOwners]; !strings.Contains(got, "pod "+uidB) || !strings.Contains(got, "pod "+uidC) || !strings.Contains(got, "pod ml/eval-0 container eval") {
		t.Errorf("an Xid on the shared GPU names %q, want both pod UIDs and the kubelet's pod", got)
	}
}
