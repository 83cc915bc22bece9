package kubelet

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpuwarden/gpuwarden/collectors/source"
	"github.com/gpuwarden/gpuwarden/collectors/source/sourcetest"
)

func TestSourceOnAMissingSocketIsAbsent(t *testing.T) {
	s := &Source{Client: &Client{Socket: filepath.Join(t.TempDir(), "kubelet.sock")}, Apply: func(Assignments, time.Time) { t.Error("applied") }}
	k := sourcetest.New("")
	err := s.Run(context.Background(), k)
	if !source.IsAbsent(err) || source.FixOf(err) == "" || !strings.Contains(err.Error(), "kubelet.sock") {
		t.Fatalf("Run = %v (fix %q), want absent with a fix naming the socket", err, source.FixOf(err))
	}
	if v, _ := k.Value("gpuwarden_kubelet_up"); v != 0 {
		t.Errorf("gpuwarden_kubelet_up = %v", v)
	}
}

func TestSourceAppliesEachAnswerAndCountsGPUsOfThisNode(t *testing.T) {
	sock := serveKubelet(t, answer(aNode()))
	got := make(chan Assignments, 4)
	s := &Source{Client: &Client{Socket: sock}, Every: 20 * time.Millisecond, Apply: func(a Assignments, _ time.Time) { got <- a }}
	k := sourcetest.New("", source.GPU{UUID: "GPU-1cf032cc-d3c4-4e14-4557-ceade3a8c237"}, source.GPU{UUID: "GPU-2f3b885e-728d-046d-6675-ef8b760879ad"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, k) }()
	for range 2 { // asked again on its interval
		select {
		case a := <-got:
			if len(a["GPU-2f3b885e-728d-046d-6675-ef8b760879ad"]) != 2 {
				t.Fatalf("assignments %+v", a)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no answer applied")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after its context ended", err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gpuwarden_kubelet_up", nil, 1},
		{"gpuwarden_kubelet_pods", nil, 5},
		// train-0 on GPU 0; both notebooks on the shared GPU; GPU 1 is not this node's.
		{"gpuwarden_kubelet_gpu_assignments", nil, 3},
		{"gpuwarden_kubelet_unmapped_devices", []string{"kind", IDGPU}, 1},
		{"gpuwarden_kubelet_unmapped_devices", []string{"kind", IDMIG}, 1},
		{"gpuwarden_kubelet_rejected_total", nil, 0},
	} {
		if v, ok := k.Value(c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
}

func TestSourceCountsARejectedAnswer(t *testing.T) {
	bad := &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{Name: "p", Namespace: "Bad_NS"}}}
	s := &Source{Client: &Client{Socket: serveKubelet(t, answer(bad))}, Apply: func(Assignments, time.Time) { t.Error("a rejected answer was applied") }}
	k := sourcetest.New("")
	for range 2 {
		if err := s.Run(context.Background(), k); err == nil || source.IsAbsent(err) {
			t.Fatalf("Run = %v, want an error", err)
		}
	}
	if v, _ := k.Value("gpuwarden_kubelet_rejected_total"); v != 2 || s.Rejected() != 2 {
		t.Fatalf("gpuwarden_kubelet_rejected_total = %v, want 2", v)
	}
}

func TestSourceLosingASocketItHadIsAnErrorNotAbsent(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, &lister{list: answer(aNode())})
	go srv.Serve(ln)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Source{Client: &Client{Socket: sock}, Apply: func(Assignments, time.Time) { cancel() }}
	if err := s.Run(ctx, sourcetest.New("")); err != nil {
		t.Fatalf("Run = %v", err)
	}
	srv.Stop() // the kubelet restarts: its socket is gone for a moment
	os.Remove(sock)
	s.Client.Close()
	err = s.Run(context.Background(), sourcetest.New(""))
	if err == nil || source.IsAbsent(err) {
		t.Fatalf("Run = %v (absent %v), want a plain error", err, source.IsAbsent(err))
	}
}
