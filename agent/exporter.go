package agent

import (
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// Build information, set by the linker.
var (
	Version  = "dev"
	Revision = ""
)

// gpuLabelNames are dcgm-exporter's labels, so its dashboards and alerts work.
var gpuLabelNames = []string{"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"}

// Exporter renders the latest Snapshot as Prometheus metrics. It never calls
// NVML: a scrape costs the same whatever NVML is doing.
type Exporter struct {
	state      *State
	fieldDescs []*prometheus.Desc
	fieldTypes []prometheus.ValueType
}

var (
	descBuild       = prometheus.NewDesc("gpuwarden_build_info", "gpuwarden's version, from the binary.", []string{"version", "revision", "goversion"}, nil)
	descUp          = prometheus.NewDesc("gpuwarden_collector_up", "Whether the collector's last run worked (1) or not (0).", []string{"collector"}, nil)
	descDuration    = prometheus.NewDesc("gpuwarden_collector_duration_seconds", "How long the collector's last run took.", []string{"collector"}, nil)
	descErrors      = prometheus.NewDesc("gpuwarden_collector_errors_total", "Runs of the collector that failed.", []string{"collector"}, nil)
	descLastSuccess = prometheus.NewDesc("gpuwarden_collector_last_success_timestamp_seconds", "When the collector last ran without error.", []string{"collector"}, nil)
	descGPUInfo     = prometheus.NewDesc("gpuwarden_gpu_info", "One series per GPU NVML enumerates, with its identity in labels.", gpuLabelNames, nil)
	descSampleAge   = prometheus.NewDesc("gpuwarden_gpu_sample_age_seconds", "Age of the GPU's newest sample, from the GPU collector.", gpuLabelNames, nil)
	descGPUHealth   = prometheus.NewDesc("gpuwarden_gpu_health", "GPU health from gpuwarden's rules: 0 ok, 1 warning, 2 critical, 3 unknown.", []string{"gpu", "UUID", "pci_bus_id"}, nil)
	descGPULost     = prometheus.NewDesc("gpuwarden_gpu_lost", "Whether NVML reports the GPU lost (GPU_IS_LOST).", []string{"gpu", "UUID", "pci_bus_id"}, nil)
	descVisible     = prometheus.NewDesc("gpuwarden_gpus_visible", "GPUs NVML enumerates now.", nil, nil)
	descExpected    = prometheus.NewDesc("gpuwarden_gpus_expected", "GPUs this host should have: configured gpu.expected, else the first count seen.", nil, nil)
	descHealth      = prometheus.NewDesc("gpuwarden_health", "Host health from gpuwarden's rules: 0 ok, 1 warning, 2 critical, 3 unknown.", nil, nil)
	descXidLast     = prometheus.NewDesc("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", append(append([]string{}, gpuLabelNames...), "err_code", "err_msg"), nil)
	descXidTotal    = prometheus.NewDesc("gpuwarden_xid_errors_total", "Xid errors seen in the kernel log or from NVML, by GPU and code.", []string{"gpu", "UUID", "pci_bus_id", "xid"}, nil)
	descKernel      = prometheus.NewDesc("gpuwarden_kernel_events_total", "NVIDIA-related kernel-log events, by kind.", []string{"kind"}, nil)
	descEvents      = prometheus.NewDesc("gpuwarden_events_total", "Events from every source, by kind and the catalog's severity.", []string{"kind", "severity"}, nil)
)

// NewExporter returns an Exporter over state.
func NewExporter(state *State) *Exporter {
	e := &Exporter{state: state}
	for _, f := range gpu.Fields {
		e.fieldDescs = append(e.fieldDescs, prometheus.NewDesc(f.Name, f.Help, gpuLabelNames, nil))
		t := prometheus.GaugeValue
		if f.Type == gpu.Counter {
			t = prometheus.CounterValue
		}
		e.fieldTypes = append(e.fieldTypes, t)
	}
	return e
}

// Describe sends nothing: the set of series depends on the GPUs (an
// "unchecked" collector, as client_golang calls it).
func (e *Exporter) Describe(chan<- *prometheus.Desc) {}

// Collect renders the latest Snapshot.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	s := e.state.Snapshot()
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, Version, Revision, runtime.Version())
	for _, c := range s.Collectors {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, b2f(c.Up), c.Name)
		ch <- prometheus.MustNewConstMetric(descDuration, prometheus.GaugeValue, c.Duration.Seconds(), c.Name)
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(c.Errors), c.Name)
		if !c.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue, float64(c.LastSuccess.UnixNano())/1e9, c.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(descHealth, prometheus.GaugeValue, float64(s.Health.Level))
	if gc := collectorByName(s, "gpu"); gc != nil && gc.Up {
		ch <- prometheus.MustNewConstMetric(descVisible, prometheus.GaugeValue, float64(len(s.GPUs)))
	}
	if s.GPUsExpected > 0 {
		ch <- prometheus.MustNewConstMetric(descExpected, prometheus.GaugeValue, float64(s.GPUsExpected))
	}
	now := e.state.clock()
	for i := range s.GPUs {
		g := &s.GPUs[i]
		if g.labels == nil {
			continue
		}
		l := g.labels
		ch <- prometheus.MustNewConstMetric(descGPUInfo, prometheus.GaugeValue, 1, l...)
		ch <- prometheus.MustNewConstMetric(descSampleAge, prometheus.GaugeValue, now.Sub(g.SampleTime).Seconds(), l...)
		ch <- prometheus.MustNewConstMetric(descGPUHealth, prometheus.GaugeValue, float64(g.Health.Level), l[0], l[1], l[2])
		ch <- prometheus.MustNewConstMetric(descGPULost, prometheus.GaugeValue, b2f(g.Lost), l[0], l[1], l[2])
		ch <- prometheus.MustNewConstMetric(descXidLast, prometheus.GaugeValue, float64(g.LastXid),
			append(l[:len(l):len(l)], strconv.Itoa(g.LastXid), g.LastXidMsg)...)
		if g.Sample == nil {
			continue
		}
		for fi := range gpu.Fields {
			if g.Sample.Status[fi] != gpu.StatusOK {
				continue // not supported, lost or failed: absent, never 0
			}
			ch <- prometheus.MustNewConstMetric(e.fieldDescs[fi], e.fieldTypes[fi], g.Sample.Values[fi], l...)
		}
	}
	for _, x := range s.XidCounts {
		idx := ""
		if x.GPU >= 0 {
			idx = strconv.Itoa(x.GPU)
		}
		ch <- prometheus.MustNewConstMetric(descXidTotal, prometheus.CounterValue, float64(x.Count), idx, x.UUID, x.PCIBusID, strconv.Itoa(x.Xid))
	}
	for k, v := range s.KindCounts {
		ch <- prometheus.MustNewConstMetric(descKernel, prometheus.CounterValue, float64(v), string(k))
	}
	for k, v := range s.EventCounts {
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(v), string(k.Kind), k.Severity.String())
	}
}

func collectorByName(s *Snapshot, name string) *CollectorState {
	for i := range s.Collectors {
		if s.Collectors[i].Name == name {
			return &s.Collectors[i]
		}
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var _ = event.OK
