package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// Ref is one container that holds a device.
type Ref struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
}

// Assignments are the kubelet's device allocations by device id: a GPU's
// UUID (GPU-...) or a MIG device's (MIG-...), each with the containers that
// hold it, sorted. A device NVIDIA's plugin shares (time-slicing, MPS) is
// listed once per replica as <id>::<n>; the replicas are one device here.
type Assignments map[string][]Ref

// ByDevice collects the pods' NVIDIA devices by device id.
func ByDevice(pods []Pod) Assignments {
	out := Assignments{}
	for _, p := range pods {
		for _, c := range p.Containers {
			for _, d := range c.Devices {
				for _, id := range d.IDs {
					id, _, _ = strings.Cut(id, "::")
					r := Ref{Namespace: p.Namespace, Pod: p.Name, Container: c.Name}
					if !slices.Contains(out[id], r) {
						out[id] = append(out[id], r)
					}
				}
			}
		}
	}
	for _, refs := range out {
		// sort.Slice rather than slices.SortFunc: the binary has it already,
		// and a generic sort of Ref would add its own copy (12 KB).
		sort.Slice(refs, func(i, j int) bool {
			a, b := refs[i], refs[j]
			if a.Namespace != b.Namespace {
				return a.Namespace < b.Namespace
			}
			if a.Pod != b.Pod {
				return a.Pod < b.Pod
			}
			return a.Container < b.Container
		})
	}
	return out
}

// Kinds of device id, for the ones gpuwarden cannot map to a GPU.
const (
	IDGPU        = "gpu_uuid"    // GPU-<uuid>: mapped to the GPU with that UUID
	IDMIG        = "mig_uuid"    // MIG-<uuid>: the GPU collector does not know MIG UUIDs
	IDDeviceName = "device_name" // nvidia0: GKE's device plugin names devices, not UUIDs
	IDOther      = "other"
)

var deviceNameRE = regexp.MustCompile(`^nvidia[0-9]{1,4}$`)

// IDKind says what a device id is.
func IDKind(id string) string {
	switch {
	case strings.HasPrefix(id, "GPU-"):
		return IDGPU
	case strings.HasPrefix(id, "MIG-"):
		return IDMIG
	case deviceNameRE.MatchString(id):
		return IDDeviceName
	}
	return IDOther
}

// Refresh and staleness of the kubelet's answer: asked every RefreshEvery,
// off the scrape path; an answer older than Stale is no longer believed
// (the labels go, rather than name a pod that may be gone).
const (
	RefreshEvery = 15 * time.Second
	Stale        = 2 * time.Minute
)

// Source asks the kubelet every RefreshEvery and hands the assignments to
// Apply. A missing socket means this is no Kubernetes node, or not yet: the
// source is reported absent, once, and asked again rarely; once the socket
// has been there, losing it is an error like any other.
type Source struct {
	Client *Client
	// Apply takes each answer, with when it was had.
	Apply func(Assignments, time.Time)
	Log   *slog.Logger
	Every time.Duration // RefreshEvery when 0

	seen     bool
	rejected atomic.Uint64
	failures atomic.Uint64
	noted    map[string]bool // device-id kinds already explained in the log
}

// Run asks until ctx ends or a call fails.
func (s *Source) Run(ctx context.Context, sink source.Sink) error {
	every := s.Every
	if every <= 0 {
		every = RefreshEvery
	}
	// The GPUs first: counted against an empty list, every GPU the kubelet
	// names would look like another node's.
	sink.GPUs().WaitFirstRound(ctx, 30*time.Second)
	for {
		start := time.Now()
		pods, err := s.Client.List(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return s.failed(sink, err)
		}
		s.seen = true
		a := ByDevice(pods)
		s.Apply(a, time.Now())
		sink.Stats(s.metrics(true, len(pods), a, sink.GPUs().GPUs()))
		sink.Ran(time.Since(start))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

func (s *Source) failed(sink source.Sink, err error) error {
	if errors.Is(err, ErrRejected) {
		s.rejected.Add(1)
	} else {
		s.failures.Add(1)
	}
	sink.Stats(s.metrics(false, 0, nil, nil))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(s.Client.Socket); errors.Is(serr, fs.ErrNotExist) && !s.seen {
			return source.Absent(source.WithFix(fmt.Errorf("no kubelet pod-resources socket at %s: not a Kubernetes node, or the kubelet is not up", s.Client.Socket),
				"set collector.gpu.pod-resources-socket to the kubelet's socket (mounted into the container, if gpuwarden runs in one), or turn collector.gpu.kubernetes off"))
		}
	}
	return err
}

// Rejected is how many answers broke a limit or a shape rule.
func (s *Source) Rejected() uint64 { return s.rejected.Load() }

// metrics are the source's own series. mapped counts (container, GPU)
// pairs on this node's GPUs; unmapped, device ids by why they map to none.
func (s *Source) metrics(up bool, pods int, a Assignments, gpus []source.GPU) []source.Metric {
	b2f := 0.0
	if up {
		b2f = 1
	}
	out := []source.Metric{
		{Name: "gpuwarden_kubelet_up", Help: "Whether the kubelet's pod-resources API answered the last List call (1) or not (0).", Value: b2f},
		{Name: "gpuwarden_kubelet_rejected_total", Help: "kubelet pod-resources answers rejected for breaking a size, count or name-shape limit.", Counter: true, Value: float64(s.rejected.Load())},
		{Name: "gpuwarden_kubelet_errors_total", Help: "kubelet pod-resources calls that failed (no socket, timeout, a gRPC error), rejections apart.", Counter: true, Value: float64(s.failures.Load())},
	}
	if !up {
		return out
	}
	known := map[string]bool{}
	for _, g := range gpus {
		known[g.UUID] = true
	}
	mapped := 0
	unmapped := map[string]int{IDGPU: 0, IDMIG: 0, IDDeviceName: 0, IDOther: 0}
	for id, refs := range a {
		switch k := IDKind(id); {
		case k == IDGPU && known[id]:
			mapped += len(refs)
		default:
			unmapped[k]++
			s.note(k, id)
		}
	}
	out = append(out,
		source.Metric{Name: "gpuwarden_kubelet_pods", Help: "Pods the kubelet's pod-resources API listed in its last answer.", Value: float64(pods)},
		source.Metric{Name: "gpuwarden_kubelet_gpu_assignments", Help: "Containers holding a GPU of this node, by the kubelet's last answer (a GPU shared by two containers counts twice).", Value: float64(mapped)})
	for _, k := range []string{IDGPU, IDMIG, IDDeviceName, IDOther} {
		out = append(out, source.Metric{Name: "gpuwarden_kubelet_unmapped_devices", Help: "NVIDIA device ids in the kubelet's last answer that name no GPU gpuwarden samples, by the id's kind.",
			Labels: []string{"kind", k}, Value: float64(unmapped[k])})
	}
	return out
}

// note says once per kind why some device ids get no labels.
func (s *Source) note(kind, id string) {
	if s.Log == nil || s.noted[kind] {
		return
	}
	if s.noted == nil {
		s.noted = map[string]bool{}
	}
	s.noted[kind] = true
	switch kind {
	case IDMIG:
		s.Log.Info("kubelet lists MIG devices; gpuwarden labels whole GPUs and does not know MIG UUIDs, so these get no pod labels", "device", id)
	case IDDeviceName:
		s.Log.Info("kubelet lists GPUs by device name (GKE's device plugin), not by UUID; these get no pod labels", "device", id,
			"fix", "use NVIDIA's device plugin, which names GPUs by UUID")
	case IDGPU:
		s.Log.Info("kubelet lists a GPU this agent does not sample", "device", id)
	default:
		s.Log.Info("kubelet lists an NVIDIA device id of a shape gpuwarden does not map", "device", id)
	}
}
