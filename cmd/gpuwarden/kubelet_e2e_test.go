package main

import (
	"context"
	"debug/buildinfo"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// kubeletServer is the kubelet's pod-resources API as the kubelet serves
// it: its own generated service on a real gRPC server, on a unix socket.
type kubeletServer struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	answer *podresourcesv1.ListPodResourcesResponse
}

func (k *kubeletServer) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return k.answer, nil
}

func serveKubeletAt(t *testing.T, sock string, answer *podresourcesv1.ListPodResourcesResponse) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, &kubeletServer{answer: answer})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
}

func gpuDevices(ids ...string) []*podresourcesv1.ContainerDevices {
	return []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: ids}}
}

// The real binary on the demo trace, with a real kubelet gRPC server that
// gives the demo's GPUs to pods: the GPU series carry pod, namespace and
// container, and a real Prometheus selects GPUs by pod.
func TestKubeletPodsLabelTheDemosGPUSeries(t *testing.T) {
	trace, err := openReplay("")
	if err != nil {
		t.Fatal(err)
	}
	gpus := trace.Header.GPUs
	if len(gpus) < 3 {
		t.Fatalf("the demo has %d GPUs", len(gpus))
	}
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	serveKubeletAt(t, sock, &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
		{Name: "train-0", Namespace: "ml", Containers: []*podresourcesv1.ContainerResources{{Name: "trainer", Devices: gpuDevices(gpus[0].UUID)}}},
		// Time-sliced: NVIDIA's device plugin names each replica <uuid>::<n>.
		{Name: "nb-a", Namespace: "research", Containers: []*podresourcesv1.ContainerResources{{Name: "lab", Devices: gpuDevices(gpus[1].UUID + "::0")}}},
		{Name: "nb-b", Namespace: "research", Containers: []*podresourcesv1.ContainerResources{{Name: "lab", Devices: gpuDevices(gpus[1].UUID + "::1")}}},
		// GKE's plugin names devices; gpuwarden says so and leaves them.
		{Name: "gke", Namespace: "default", Containers: []*podresourcesv1.ContainerResources{{Name: "c", Devices: gpuDevices("nvidia2")}}},
	}})
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "500ms",
		"--collector.kmsg=false", "--collector.dkms=false",
		"--collector.gpu.kubernetes", "--collector.gpu.pod-resources-socket", sock)
	var body string
	eventually(t, 20*time.Second, "GPU 0's series carry its pod", func() bool {
		body = a.mustGet(t, "/metrics")
		_, ok := metricValue(body, "DCGM_FI_DEV_GPU_TEMP", `gpu="0"`, `container="trainer",namespace="ml",pod="train-0"}`)
		return ok
	})
	for _, c := range []struct {
		metric   string
		matchers []string
		want     string
	}{
		{"DCGM_FI_DEV_GPU_TEMP", []string{`gpu="1"`, `,container="lab,lab",namespace="research,research",pod="nb-a,nb-b"}`}, ""},
		{"DCGM_FI_DEV_GPU_TEMP", []string{`gpu="2"`, `,container="",namespace="",pod=""}`}, ""},
		{"gpuwarden_kubelet_up", nil, "1"},
		{"gpuwarden_kubelet_pods", nil, "4"},
		{"gpuwarden_kubelet_gpu_assignments", nil, "3"},
		{"gpuwarden_kubelet_unmapped_devices", []string{`kind="device_name"`}, "1"},
		{"gpuwarden_kubelet_rejected_total", nil, "0"},
		{"gpuwarden_collector_up", []string{`collector="kubelet"`}, "1"},
	} {
		v, ok := metricValue(body, c.metric, c.matchers...)
		if !ok || (c.want != "" && v != c.want) {
			t.Errorf("%s%v = %q (present %v), want %q", c.metric, c.matchers, v, ok, c.want)
		}
	}
	// /v1/gpus says who holds each GPU.
	var view struct {
		GPUs []struct {
			Index int `json:"index"`
			Pods  []struct {
				Namespace string `json:"namespace"`
				Pod       string `json:"pod"`
				Container string `json:"container"`
			} `json:"pods"`
		} `json:"gpus"`
	}
	if err := json.Unmarshal([]byte(a.mustGet(t, "/v1/gpus")), &view); err != nil {
		t.Fatal(err)
	}
	if len(view.GPUs) < 3 || len(view.GPUs[0].Pods) != 1 || view.GPUs[0].Pods[0].Pod != "train-0" || len(view.GPUs[1].Pods) != 2 || len(view.GPUs[2].Pods) != 0 {
		t.Errorf("/v1/gpus pods: %+v", view.GPUs)
	}
	if strings.Contains(body, `pod="gke"`) {
		t.Error("a GKE device name labels a series")
	}
	if strings.Contains(a.log.String(), "does not sample") {
		t.Errorf("the demo's own GPUs were taken for another node's:\n%s", a.log.String())
	}
	if n := strings.Count(a.log.String(), "GKE's device plugin"); n != 1 {
		t.Errorf("the GKE device name is explained %d times, want once:\n%s", n, a.log.String())
	}

	// The exposition with the pod labels parses, and lints as the golden
	// file does (dcgm-exporter's own names aside).
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not installed (make deps installs it)")
	}
	lint := exec.Command(promtool, "check", "metrics")
	lint.Stdin = strings.NewReader(body)
	out, _ := lint.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasPrefix(line, "DCGM_") && !strings.HasSuffix(line, "label names should be written in 'snake_case' not 'camelCase'") {
			t.Errorf("promtool check metrics: %s", line)
		}
	}

	prom := prometheusServer(t, a.addr)
	eventually(t, 60*time.Second, "Prometheus selects GPU 0 by pod", func() bool {
		r := promQuery(t, prom, `DCGM_FI_DEV_GPU_TEMP{namespace="ml",pod="train-0",container="trainer"}`)
		return len(r.Data.Result) == 1 && r.Data.Result[0].Metric["gpu"] == "0" && r.Data.Result[0].Metric["UUID"] == gpus[0].UUID
	})
	// One series per GPU: the shared GPU is one series, found by either pod.
	for _, pod := range []string{"nb-a", "nb-b"} {
		r := promQuery(t, prom, `DCGM_FI_DEV_GPU_TEMP{pod=~"(.*,)?`+pod+`(,.*)?"}`)
		if len(r.Data.Result) != 1 || r.Data.Result[0].Metric["gpu"] != "1" {
			t.Errorf("GPU series of pod %s: %+v, want GPU 1 alone", pod, r.Data.Result)
		}
	}
}

// Without a kubelet the source is absent: said once, and the host's
// health does not turn unknown for it.
func TestWithoutAKubeletSocketPodLabelsAreAbsentNotAnError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	a := startAgent(t, nil, "--backend", "replay", "--replay.loop", "--collector.gpu.interval", "500ms",
		"--collector.kmsg=false", "--collector.dkms=false",
		"--collector.gpu.kubernetes", "--collector.gpu.pod-resources-socket", sock)
	eventually(t, 20*time.Second, "the kubelet source is down", func() bool {
		v, ok := metricValue(a.mustGet(t, "/metrics"), "gpuwarden_collector_up", `collector="kubelet"`)
		return ok && v == "0"
	})
	body := a.mustGet(t, "/metrics")
	if v, _ := metricValue(body, "gpuwarden_kubelet_up"); v != "0" {
		t.Errorf("gpuwarden_kubelet_up = %q, want 0", v)
	}
	if _, ok := metricValue(body, "DCGM_FI_DEV_GPU_TEMP", `gpu="0"`, `pod=""}`); !ok {
		t.Errorf("GPU series lack the empty pod label:\n%s", grepPrefixes(body, "DCGM_FI_DEV_GPU_TEMP"))
	}
	time.Sleep(time.Second)
	log := a.log.String()
	kubeletErrors := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=ERROR") && strings.Contains(l, "kubelet") {
			kubeletErrors++
		}
	}
	if n := strings.Count(log, "no kubelet pod-resources socket at "+sock); n != 1 || kubeletErrors != 0 {
		t.Errorf("the missing socket is logged %d times (want once, not as an error):\n%s", n, log)
	}
	if h := a.mustGet(t, "/v1/health"); strings.Contains(h, "collector kubelet is down") {
		t.Errorf("a missing kubelet weighs on health:\n%s", h)
	}
}

// The kubelet client speaks gRPC's wire format itself: gRPC's runtime and
// the Kubernetes types serve the tests only, never the shipped binary.
func TestTheAgentLinksNeitherGRPCNorKubernetesTypes(t *testing.T) {
	info, err := buildinfo.ReadFile(gpuwardenBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Deps) == 0 {
		t.Fatal("the binary lists no modules")
	}
	for _, d := range info.Deps {
		if d.Path == "google.golang.org/grpc" || strings.HasPrefix(d.Path, "k8s.io/") {
			t.Errorf("the agent links %s %s", d.Path, d.Version)
		}
	}
}
