package kubelet

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// lister is a PodResourcesLister: the kubelet's own generated server
// interface, served by a real gRPC server.
type lister struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	list func(ctx context.Context) (*podresourcesv1.ListPodResourcesResponse, error)
}

func (l *lister) List(ctx context.Context, _ *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return l.list(ctx)
}

// serveKubelet serves list on a unix socket in a temporary directory, as
// the kubelet does, and returns the socket's path.
func serveKubelet(t *testing.T, list func(ctx context.Context) (*podresourcesv1.ListPodResourcesResponse, error)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, &lister{list: list})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return sock
}

func answer(r *podresourcesv1.ListPodResourcesResponse) func(context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
	return func(context.Context) (*podresourcesv1.ListPodResourcesResponse, error) { return r, nil }
}

// aNode is what a kubelet with NVIDIA's device plugin answers: GPUs by UUID,
// a time-sliced GPU shared by two pods, a MIG device, CPU and memory
// assignments and another vendor's devices beside them.
func aNode() *podresourcesv1.ListPodResourcesResponse {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
		{Name: "train-0", Namespace: "ml", Containers: []*podresourcesv1.ContainerResources{
			{Name: "trainer", Devices: []*podresourcesv1.ContainerDevices{
				{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-1cf032cc-d3c4-4e14-4557-ceade3a8c237", "GPU-4e0b20de-a7e5-86d5-5229-683372805549"},
					Topology: &podresourcesv1.TopologyInfo{Nodes: []*podresourcesv1.NUMANode{{ID: 0}}}},
				{ResourceName: "rdma/hca_shared_devices_a", DeviceIds: []string{"rdma0"}},
			}, CpuIds: []int64{2, 3, 4}, Memory: []*podresourcesv1.ContainerMemory{{MemoryType: "memory", Size: 1 << 30}}},
			{Name: "sidecar"},
		}},
		{Name: "notebook.a", Namespace: "research", Containers: []*podresourcesv1.ContainerResources{
			{Name: "jupyter", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-2f3b885e-728d-046d-6675-ef8b760879ad::0"}}}},
		}},
		{Name: "notebook-b", Namespace: "research", Containers: []*podresourcesv1.ContainerResources{
			{Name: "jupyter", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-2f3b885e-728d-046d-6675-ef8b760879ad::1"}}}},
		}},
		{Name: "infer", Namespace: "serving", Containers: []*podresourcesv1.ContainerResources{
			{Name: "server", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/mig-1g.10gb", DeviceIds: []string{"MIG-8b22c5b0-4c7e-5a1f-9e3b-1d2c3b4a5f6e"}}}},
		}},
		{Name: "web", Namespace: "default", Containers: []*podresourcesv1.ContainerResources{{Name: "nginx", CpuIds: []int64{1}}}},
	}}
}

func TestListReadsPodsAndTheirGPUsFromARealGRPCServer(t *testing.T) {
	c := &Client{Socket: serveKubelet(t, answer(aNode()))}
	defer c.Close()
	for round := range 2 { // the second call reuses the connection
		pods, err := c.List(context.Background())
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(pods) != 5 {
			t.Fatalf("round %d: %d pods, want 5: %+v", round, len(pods), pods)
		}
		a := ByDevice(pods)
		want := map[string][]Ref{
			"GPU-1cf032cc-d3c4-4e14-4557-ceade3a8c237": {{"ml", "train-0", "trainer"}},
			"GPU-4e0b20de-a7e5-86d5-5229-683372805549": {{"ml", "train-0", "trainer"}},
			"GPU-2f3b885e-728d-046d-6675-ef8b760879ad": {{"research", "notebook-b", "jupyter"}, {"research", "notebook.a", "jupyter"}},
			"MIG-8b22c5b0-4c7e-5a1f-9e3b-1d2c3b4a5f6e": {{"serving", "infer", "server"}},
		}
		if len(a) != len(want) {
			t.Fatalf("assignments %+v, want %+v", a, want)
		}
		for id, refs := range want {
			if got := a[id]; len(got) != len(refs) || (len(got) > 0 && got[0] != refs[0]) || (len(got) > 1 && got[1] != refs[1]) {
				t.Errorf("%s: %+v, want %+v", id, got, refs)
			}
		}
		for _, p := range pods {
			for _, ctr := range p.Containers {
				for _, d := range ctr.Devices {
					if !strings.HasPrefix(d.Resource, NVIDIAPrefix) {
						t.Errorf("pod %s kept another vendor's devices: %+v", p.Name, d)
					}
				}
			}
		}
	}
}

func TestListOfAnEmptyNodeIsNoPodsAndNoError(t *testing.T) {
	c := &Client{Socket: serveKubelet(t, answer(&podresourcesv1.ListPodResourcesResponse{}))}
	pods, err := c.List(context.Background())
	if err != nil || len(pods) != 0 {
		t.Fatalf("List = %+v, %v; want no pods, no error", pods, err)
	}
}

func TestListRejectsAnAnswerOverTheSizeLimit(t *testing.T) {
	// One pod whose name alone is 5 MiB: a kubelet never sends it, a
	// hostile peer may. The length prefix alone rejects it.
	big := &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{Name: strings.Repeat("a", 5<<20), Namespace: "ml"}}}
	c := &Client{Socket: serveKubelet(t, answer(big))}
	_, err := c.List(context.Background())
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("List = %v, want a rejection for size", err)
	}
}

func TestListRejectsNamesKubernetesWouldNotAllow(t *testing.T) {
	gpu := []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-1cf032cc-d3c4-4e14-4557-ceade3a8c237"}}}
	for _, tc := range []struct {
		name string
		pod  *podresourcesv1.PodResources
		want string
	}{
		{"a label-breaking namespace", &podresourcesv1.PodResources{Name: "p", Namespace: "ml\",evil=\"1"}, "namespace"},
		{"an upper-case pod name", &podresourcesv1.PodResources{Name: "Train", Namespace: "ml"}, "DNS-1123 subdomain"},
		{"an empty pod name", &podresourcesv1.PodResources{Namespace: "ml"}, "DNS-1123 subdomain"},
		{"a namespace over 63 bytes", &podresourcesv1.PodResources{Name: "p", Namespace: strings.Repeat("n", 64)}, "namespace"},
		{"a container name with a newline", &podresourcesv1.PodResources{Name: "p", Namespace: "ml",
			Containers: []*podresourcesv1.ContainerResources{{Name: "c\nx", Devices: gpu}}}, "container name"},
		{"a device id with a space", &podresourcesv1.PodResources{Name: "p", Namespace: "ml",
			Containers: []*podresourcesv1.ContainerResources{{Name: "c", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-1 $(reboot)"}}}}}}, "device id"},
		{"a resource name with a quote", &podresourcesv1.PodResources{Name: "p", Namespace: "ml",
			Containers: []*podresourcesv1.ContainerResources{{Name: "c", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/\"gpu", DeviceIds: []string{"GPU-1"}}}}}}, "resource name"},
		{"too many containers", &podresourcesv1.PodResources{Name: "p", Namespace: "ml", Containers: make([]*podresourcesv1.ContainerResources, MaxContainers+1)}, "containers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, c := range tc.pod.Containers {
				if c == nil {
					tc.pod.Containers[i] = &podresourcesv1.ContainerResources{Name: "c"}
				}
			}
			r := &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{Name: "fine", Namespace: "ml"}, tc.pod}}
			c := &Client{Socket: serveKubelet(t, answer(r))}
			pods, err := c.List(context.Background())
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("List = %+v, %v; want a rejection naming %q", pods, err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("the error carries the peer's newline: %q", err)
			}
		})
	}
}

func TestListRejectsTooManyPods(t *testing.T) {
	r := &podresourcesv1.ListPodResourcesResponse{}
	for range MaxPods + 1 {
		r.PodResources = append(r.PodResources, &podresourcesv1.PodResources{Name: "p", Namespace: "ml"})
	}
	c := &Client{Socket: serveKubelet(t, answer(r))}
	if _, err := c.List(context.Background()); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "pods") {
		t.Fatalf("List = %v, want a rejection for the pod count", err)
	}
}

func TestListGivesUpOnAHungKubelet(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	// Hung for real: it does not even heed the deadline gRPC gives it.
	sock := serveKubelet(t, func(context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
		<-release
		return nil, errors.New("released")
	})
	c := &Client{Socket: sock, Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := c.List(context.Background())
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("List = %v, want a timeout", err)
	}
	if took > 2*time.Second {
		t.Fatalf("List took %s with a 300ms timeout", took)
	}
}

func TestListGivesUpOnAPeerThatNeverSpeaksHTTP2(t *testing.T) {
	// A socket whose peer accepts and then says nothing at all.
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
		}
	}()
	c := &Client{Socket: sock, Timeout: 300 * time.Millisecond}
	start := time.Now()
	if _, err := c.List(context.Background()); err == nil {
		t.Fatal("List of a silent peer worked")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("List took %s with a 300ms timeout", took)
	}
}

func TestListOnAMissingSocketIsNotExist(t *testing.T) {
	c := &Client{Socket: filepath.Join(t.TempDir(), "kubelet.sock")}
	_, err := c.List(context.Background())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List = %v, want fs.ErrNotExist", err)
	}
}

func TestListReportsTheKubeletsGRPCStatus(t *testing.T) {
	c := &Client{Socket: serveKubelet(t, func(context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
		return nil, status.Error(codes.Unavailable, "kubelet is shutting down: 100% sure")
	})}
	_, err := c.List(context.Background())
	var se *StatusError
	if !errors.As(err, &se) || se.Code != int(codes.Unavailable) || se.Message != "kubelet is shutting down: 100% sure" {
		t.Fatalf("List = %v, want gRPC status 14 with its message", err)
	}
	if errors.Is(err, ErrRejected) {
		t.Fatal("a gRPC error is not a rejected answer")
	}
}

// servePeer serves h on a unix socket over cleartext HTTP/2, as a gRPC
// server speaks, for peers that break gRPC's rules in ways a gRPC server
// never would.
func servePeer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestListRejectsPeersThatBreakGRPCsRules(t *testing.T) {
	msg, err := proto.Marshal(aNode())
	if err != nil {
		t.Fatal(err)
	}
	frame := func(flag byte, b []byte) []byte {
		return append([]byte{flag, byte(len(b) >> 24), byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...)
	}
	grpcOK := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
	}
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		want string
	}{
		{"no grpc-status trailer", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Write(frame(0, msg))
		}, "no grpc-status"},
		{"a compressed message", func(w http.ResponseWriter, _ *http.Request) {
			grpcOK(w)
			w.Write(frame(1, msg))
			w.Header().Set("Grpc-Status", "0")
		}, "compressed"},
		{"two messages", func(w http.ResponseWriter, _ *http.Request) {
			grpcOK(w)
			w.Write(frame(0, msg))
			w.Write(frame(0, msg))
			w.Header().Set("Grpc-Status", "0")
		}, "more than one message"},
		{"a length over the limit", func(w http.ResponseWriter, _ *http.Request) {
			grpcOK(w)
			w.Write([]byte{0, 0xff, 0xff, 0xff, 0xff})
		}, "limit"},
		{"not gRPC at all", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>"))
		}, "not gRPC"},
		{"an HTTP error", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusServiceUnavailable) }, "HTTP status 503"},
		{"a grpc-status that is no code", func(w http.ResponseWriter, _ *http.Request) {
			grpcOK(w)
			w.Write(frame(0, msg))
			w.Header().Set("Grpc-Status", "OK\"")
		}, "not a gRPC code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{Socket: servePeer(t, tc.h)}
			pods, err := c.List(context.Background())
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("List = %d pods, %v; want a rejection naming %q", len(pods), err, tc.want)
			}
		})
	}
	// The same peer, keeping gRPC's rules, is believed: the cases above
	// fail for what they break.
	c := &Client{Socket: servePeer(t, func(w http.ResponseWriter, _ *http.Request) {
		grpcOK(w)
		w.Write(frame(0, msg))
		w.Header().Set("Grpc-Status", "0")
	})}
	if pods, err := c.List(context.Background()); err != nil || len(pods) != 5 {
		t.Fatalf("List = %d pods, %v; want the 5 pods", len(pods), err)
	}
}
