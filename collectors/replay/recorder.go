package replay

import (
	"bytes"
	"encoding/json"
	"sort"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuwarden/gpuwarden/collectors/attribution"
	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// Recorder wraps a Library and keeps every answer the collector gets from it.
// After each round, Commit writes what changed as records at time t. The
// static facts (UUID, name, bus id) go into the header, not the records.
type Recorder struct {
	lib gpu.Library
	// Owners, when set, says whose a process is (the recording host's
	// /proc, or a scenario's jobs), recorded beside the process lists.
	Owners func(pid uint32) attribution.Owner

	mu      sync.Mutex
	pending map[int]map[string]Answer
	last    map[int]map[string]Answer
	records []Record
}

// NewRecorder records what lib answers.
func NewRecorder(lib gpu.Library) *Recorder {
	return &Recorder{lib: lib, pending: map[int]map[string]Answer{}, last: map[int]map[string]Answer{}}
}

// Library is the recording NVML to hand the collector.
func (r *Recorder) Library() gpu.Library { return recLibrary{r} }

// Commit turns the answers since the previous Commit into records at t
// seconds, one per GPU, holding only what changed.
func (r *Recorder) Commit(t float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	gpus := make([]int, 0, len(r.pending))
	for i := range r.pending {
		gpus = append(gpus, i)
	}
	sort.Ints(gpus)
	for _, i := range gpus {
		p := r.pending[i]
		last := r.last[i]
		if last == nil {
			last = map[string]Answer{}
			r.last[i] = last
		}
		delta := map[string]Answer{}
		for k, a := range p {
			if old, ok := last[k]; !ok || old.R != a.R || !bytes.Equal(old.V, a.V) {
				delta[k] = a
				last[k] = a
			}
		}
		if len(delta) > 0 {
			idx := i
			r.records = append(r.records, Record{T: t, GPU: &idx, NVML: delta})
		}
	}
	r.pending = map[int]map[string]Answer{}
}

// Kmsg records a raw kernel-log record at t seconds.
func (r *Recorder) Kmsg(t float64, raw string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, Record{T: t, Kmsg: raw})
}

// EBPF records an eBPF ring-buffer record at t seconds: raw in the trace's
// layout (ebpf.Record.EncodeTrace), memcg the victim's memory cgroup path
// where known.
func (r *Recorder) EBPF(t float64, raw []byte, memcg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, Record{T: t, EBPF: &EBPFRecord{Layout: ebpf.Layout, Raw: append([]byte(nil), raw...), Memcg: memcg}})
}

// Hang records an NVML hang at t seconds (gpuIndex -1: every call).
func (r *Recorder) Hang(t float64, gpuIndex int, seconds float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := Record{T: t, HangS: seconds}
	if gpuIndex >= 0 {
		rec.GPU = &gpuIndex
	}
	r.records = append(r.records, rec)
}

// Host records the host's kernel, driver and DKMS facts at t seconds.
func (r *Recorder) Host(t float64, h Host) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h.Version = HostVersion
	r.records = append(r.records, Record{T: t, Host: &h})
}

// Trace returns what was recorded under h.
func (r *Recorder) Trace(h Header) *Trace {
	r.mu.Lock()
	defer r.mu.Unlock()
	h.Format, h.Version = Format, Version
	t := &Trace{Header: h, Records: append([]Record(nil), r.records...)}
	if n := len(t.Records); n > 0 && h.DurationS < t.Records[n-1].T {
		t.Header.DurationS = t.Records[n-1].T
	}
	return t
}

func (r *Recorder) note(gpuIndex int, key string, v any, ret nvml.Return) {
	var a Answer
	if ret == nvml.SUCCESS {
		b, err := json.Marshal(v)
		if err != nil {
			a.R = "UNKNOWN"
		} else {
			a.V = b
		}
	} else {
		a.R = returnName(ret)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.pending[gpuIndex]
	if m == nil {
		m = map[string]Answer{}
		r.pending[gpuIndex] = m
	}
	m[key] = a
}

type recLibrary struct{ r *Recorder }

func (l recLibrary) Init() nvml.Return     { return l.r.lib.Init() }
func (l recLibrary) Shutdown() nvml.Return { return l.r.lib.Shutdown() }
func (l recLibrary) SystemGetDriverVersion() (string, nvml.Return) {
	return l.r.lib.SystemGetDriverVersion()
}
func (l recLibrary) DeviceGetCount() (int, nvml.Return) { return l.r.lib.DeviceGetCount() }
func (l recLibrary) DeviceGetHandleByIndex(i int) (gpu.Device, nvml.Return) {
	d, ret := l.r.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return nil, ret
	}
	return &recDevice{r: l.r, i: i, d: d}, ret
}

type recDevice struct {
	r *Recorder
	i int
	d gpu.Device
}

func (d *recDevice) GetUUID() (string, nvml.Return)          { return d.d.GetUUID() }
func (d *recDevice) GetName() (string, nvml.Return)          { return d.d.GetName() }
func (d *recDevice) GetSerial() (string, nvml.Return)        { return d.d.GetSerial() }
func (d *recDevice) GetMinorNumber() (int, nvml.Return)      { return d.d.GetMinorNumber() }
func (d *recDevice) GetPciInfo() (nvml.PciInfo, nvml.Return) { return d.d.GetPciInfo() }

// The methods answered by key are in recorder_gen.go.

func (d *recDevice) GetFieldValues(vals []nvml.FieldValue) nvml.Return {
	ret := d.d.GetFieldValues(vals)
	for i := range vals {
		fr := ret
		if ret == nvml.SUCCESS {
			fr = nvml.Return(vals[i].NvmlReturn)
		}
		d.r.note(d.i, keyFieldValue(vals[i].FieldId, vals[i].ScopeId), gpu.FieldValueFloat(vals[i]), fr)
	}
	return ret
}
