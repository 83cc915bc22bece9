package agent

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kubelet"
)

// NewRegistry returns a registry of what /metrics serves besides the
// Snapshot: the process metrics and the extra collectors (DKMS, kernel log).
func NewRegistry(extra ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range extra {
		reg.MustRegister(c)
	}
	return reg
}

// Route is one more endpoint, from a part of the agent outside this
// package (remediation's /v1/remediation).
type Route struct {
	Pattern string
	Handler http.Handler
}

// JSONHandler serves what f returns as JSON.
func JSONHandler(f func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, f()) })
}

// Handler serves /metrics, the JSON API and the landing page.
func Handler(state *State, reg *prometheus.Registry, extra ...Route) http.Handler {
	return HandlerAt(state, reg, "/metrics", extra...)
}

// HandlerAt is Handler with the metrics at telemetryPath
// (--web.telemetry-path, as node_exporter spells it).
func HandlerAt(state *State, reg *prometheus.Registry, telemetryPath string, extra ...Route) http.Handler {
	mux := http.NewServeMux()
	for _, r := range extra {
		mux.Handle(r.Pattern, r.Handler)
	}
	mux.Handle("GET "+telemetryPath, MetricsHandler(state, reg))
	mux.HandleFunc("GET /v1/gpus", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, ViewGPUs(state.Snapshot(), state.clock()))
	})
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, healthView(state.Snapshot()))
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		events, err := eventsView(state, r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, events)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		writeLanding(w, state.Snapshot(), telemetryPath)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // kernel text stays verbatim: <unknown>, not \u003cunknown\u003e
	enc.Encode(v)
}

// GPUView is one GPU in /v1/gpus.
type GPUView struct {
	gpu.Info
	Lost        bool               `json:"lost"`
	Health      Health             `json:"health"`
	SampleAge   float64            `json:"sample_age_seconds"`
	Values      map[string]float64 `json:"values"`
	Missing     map[string]string  `json:"missing,omitempty"` // field -> why (not_supported, gpu_lost, ...)
	Error       string             `json:"error,omitempty"`
	LastXid     int                `json:"last_xid,omitempty"`
	LastXidText string             `json:"last_xid_msg,omitempty"`
	// MIGInstances are the GPU's MIG GPU instances with profiling values.
	MIGInstances []InstanceView `json:"mig_instances,omitempty"`
	// Owners are the Slurm jobs and Kubernetes pods of the processes on
	// the GPU, as an event on it names them (at most 4).
	Owners []string `json:"owners,omitempty"`
	// Pods are the containers the kubelet gave the GPU to
	// (collector.gpu.kubernetes).
	Pods []kubelet.Ref `json:"pods,omitempty"`
}

// InstanceView is one MIG GPU instance in /v1/gpus.
type InstanceView struct {
	ID      int                `json:"gpu_instance_id"`
	Profile string             `json:"profile"`
	Values  map[string]float64 `json:"values"`
}

// GPUsView is the body of /v1/gpus.
type GPUsView struct {
	Hostname      string          `json:"hostname"`
	DriverVersion string          `json:"driver_version"`
	GPUs          []GPUView       `json:"gpus"`
	Collector     *CollectorState `json:"collector,omitempty"`
}

// ViewGPUs renders a Snapshot as /v1/gpus does.
func ViewGPUs(s *Snapshot, now time.Time) GPUsView {
	v := GPUsView{Hostname: s.Hostname, DriverVersion: s.DriverVersion, GPUs: []GPUView{}, Collector: s.Collector("gpu")}
	for _, g := range s.GPUs {
		gv := GPUView{Info: g.Info, Lost: g.Lost, Health: g.Health, LastXid: g.LastXid, LastXidText: g.LastXidMsg,
			SampleAge: now.Sub(g.SampleTime).Seconds(), Values: map[string]float64{}, Missing: map[string]string{},
			Owners: withKubeletPods(ownersOn(g.Processes), &g), Pods: g.Pods}
		if g.Sample != nil {
			gv.Error = g.Sample.Err
			for i, f := range gpu.Fields {
				if val, ok := g.Sample.Value(i); ok {
					gv.Values[f.Name] = val
				} else {
					gv.Missing[f.Name] = g.Sample.Status[i].String()
				}
			}
			for k := range g.Sample.Instances {
				in := &g.Sample.Instances[k]
				iv := InstanceView{ID: in.ID, Profile: in.Profile, Values: map[string]float64{}}
				for i, f := range gpu.Fields {
					if val, ok := in.Value(i); ok {
						iv.Values[f.Name] = val
					}
				}
				gv.MIGInstances = append(gv.MIGInstances, iv)
			}
		}
		v.GPUs = append(v.GPUs, gv)
	}
	return v
}

// HealthView is the body of /v1/health.
type HealthView struct {
	Health
	Hostname   string           `json:"hostname"`
	GPUs       []GPUHealthView  `json:"gpus"`
	Collectors []CollectorState `json:"collectors"`
}

// GPUHealthView is one GPU in /v1/health.
type GPUHealthView struct {
	Index    int    `json:"index"`
	UUID     string `json:"uuid"`
	PCIBusID string `json:"pci_bus_id"`
	Lost     bool   `json:"lost"`
	Health
}

func healthView(s *Snapshot) HealthView {
	v := HealthView{Health: s.Health, Hostname: s.Hostname, GPUs: []GPUHealthView{}, Collectors: s.Collectors}
	for _, g := range s.GPUs {
		v.GPUs = append(v.GPUs, GPUHealthView{Index: g.Info.Index, UUID: g.Info.UUID, PCIBusID: g.Info.PCIBusID, Lost: g.Lost, Health: g.Health})
	}
	return v
}

// eventsView filters the ring: ?gpu=N (index, UUID or bus id), ?kind=K,
// ?limit=N (default 100, at most 1000).
func eventsView(state *State, r *http.Request) ([]event.Event, error) {
	q := r.URL.Query()
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return nil, errBadParam("limit", l)
		}
		limit = min(n, 1000)
	}
	gpuQ, kindQ := q.Get("gpu"), q.Get("kind")
	return state.Events().Recent(limit, func(ev *event.Event) bool {
		if kindQ != "" && string(ev.Kind) != kindQ {
			return false
		}
		if gpuQ != "" && gpuQ != strconv.Itoa(ev.GPU.Index) && gpuQ != ev.GPU.UUID &&
			gpu.ShortBusID(gpuQ) != gpu.ShortBusID(ev.GPU.PCIBusID) {
			return false
		}
		return true
	}), nil
}

type paramError struct{ name, value string }

func (e paramError) Error() string {
	return "bad query parameter " + e.name + "=" + strconv.Quote(e.value)
}

func errBadParam(name, value string) error { return paramError{name, value} }

// writeLanding writes the landing page. Every string from outside (the
// hostname, health reasons that quote kernel and DKMS text) goes through
// html.EscapeString; one small page needs no template.
func writeLanding(w io.Writer, s *Snapshot, telemetryPath string) {
	var reasons strings.Builder
	for _, r := range s.Health.Reasons {
		reasons.WriteString("<br>")
		reasons.WriteString(html.EscapeString(r))
	}
	fmt.Fprintf(w, `<!doctype html>
<html><head><title>gpuwarden</title></head><body>
<h1>gpuwarden on %s</h1>
<p>Health: <b>%s</b>%s</p>
<p>%d GPUs, driver %s</p>
<ul>
<li><a href="%s">%s</a>: Prometheus metrics, dcgm-exporter's names</li>
<li><a href="v1/gpus">/v1/gpus</a>: every GPU's latest sample</li>
<li><a href="v1/health">/v1/health</a>: health of the host and each GPU</li>
<li><a href="v1/events">/v1/events</a>: recent events (?gpu=, ?kind=, ?limit=)</li>
</ul></body></html>
`, html.EscapeString(s.Hostname), html.EscapeString(s.Health.Level.String()), reasons.String(),
		len(s.GPUs), html.EscapeString(s.DriverVersion), html.EscapeString(strings.TrimPrefix(telemetryPath, "/")), html.EscapeString(telemetryPath))
}
