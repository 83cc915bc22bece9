package replay

import (
	"strconv"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// GPM in a trace. A GPM sample is an opaque buffer that only NVML can read,
// so a trace does not hold samples: it holds whether taking one succeeded
// ("GpmSampleGet()", "GpmMigSampleGet(GI)") and what NVML computed from two,
// one answer per metric ("GpmMetricsGet(ID)" for the GPU, "GpmMigMetricsGet(GI,ID)"
// for GPU instance GI), value and return as NVML gave them (GPM's own units:
// percent, MiB/s). The collector converts them the same way live and in
// replay, so an H100 trace replays its profiling fields exactly.
//
// The recorder hands the collector its own sample buffers, each wrapping the
// real one, to learn which GPU (and GPU instance) a GpmMetricsGet is about:
// the GPU of its newer sample.

const (
	keyGpmSampleGet = "GpmSampleGet()"
)

func keyGpmMigSampleGet(gi int) string { return "GpmMigSampleGet(" + strconv.Itoa(gi) + ")" }

// keyGpmMetric is the key of metric id for the GPU (gi < 0) or GPU instance gi.
func keyGpmMetric(gi int, id uint32) string {
	if gi < 0 {
		return "GpmMetricsGet(" + strconv.FormatUint(uint64(id), 10) + ")"
	}
	return "GpmMigMetricsGet(" + strconv.Itoa(gi) + "," + strconv.FormatUint(uint64(id), 10) + ")"
}

func keyMigDevice(i int) string { return "GetMigDeviceHandleByIndex(" + strconv.Itoa(i) + ")" }

// migDeviceJSON is what the collector reads from a MIG device handle.
type migDeviceJSON struct {
	GPUInstanceID int    `json:"gpu_instance_id"`
	Slices        uint32 `json:"gpu_instance_slices"`
	MemoryMB      uint64 `json:"memory_mb"`
}

// entity is the GPU (and GPU instance, or -1) a sample was taken of.
type entity struct{ gpu, gi int }

// The player's samples only remember their entity.

type playerSample struct{ e entity }

func (s *playerSample) Free() nvml.Return                   { return nvml.SUCCESS }
func (s *playerSample) Get(nvml.Device) nvml.Return         { return nvml.ERROR_NOT_SUPPORTED }
func (s *playerSample) MigGet(nvml.Device, int) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }

type playerExtensions struct{}

// LookupSymbol: a trace has every GPM function; what a GPU answered is in it.
func (playerExtensions) LookupSymbol(string) error { return nil }

func (l playerLibrary) Extensions() nvml.ExtendedInterface { return playerExtensions{} }
func (l playerLibrary) GpmSampleAlloc() (nvml.GpmSample, nvml.Return) {
	return &playerSample{e: entity{-1, -1}}, nvml.SUCCESS
}
func (l playerLibrary) GpmSampleFree(nvml.GpmSample) nvml.Return { return nvml.SUCCESS }

// GpmMetricsGet answers each metric the trace holds for the entity of the
// newer sample, with its own return.
func (l playerLibrary) GpmMetricsGet(m *nvml.GpmMetricsGetType) nvml.Return {
	s, ok := m.Sample2.(*playerSample)
	if !ok || s.e.gpu < 0 || int(m.NumMetrics) > len(m.Metrics) {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	for i := range m.Metrics[:m.NumMetrics] {
		var v float64
		// A metric the trace has no answer for yet is NOT_READY, not
		// NOT_SUPPORTED: a trace (or a loop of one) starts with the
		// recording collector's warm-up round, which asked for none.
		// NVML computes metrics from the samples on the host, without the
		// GPU: a hang in the trace does not hold them up.
		ret := l.p.lookup(s.e.gpu, keyGpmMetric(s.e.gi, m.Metrics[i].MetricId), &v, nvml.ERROR_NOT_READY)
		m.Metrics[i].Value, m.Metrics[i].NvmlReturn = v, uint32(ret)
	}
	return nvml.SUCCESS
}

func (d *playerDevice) GpmSampleGet(s nvml.GpmSample) nvml.Return {
	ps, ok := s.(*playerSample)
	if !ok {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	ps.e = entity{d.i, -1}
	var v any
	return d.p.answer(d.i, keyGpmSampleGet, &v)
}

func (d *playerDevice) GpmMigSampleGet(gi int, s nvml.GpmSample) nvml.Return {
	ps, ok := s.(*playerSample)
	if !ok {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	ps.e = entity{d.i, gi}
	var v any
	return d.p.answer(d.i, keyGpmMigSampleGet(gi), &v)
}

func (d *playerDevice) GetMigDeviceHandleByIndex(i int) (nvml.Device, nvml.Return) {
	var j migDeviceJSON
	if ret := d.p.answer(d.i, keyMigDevice(i), &j); ret != nvml.SUCCESS {
		return nil, ret
	}
	return playerMigDevice{j: j}, nvml.SUCCESS
}

// playerMigDevice is a MIG device handle from a trace. It answers what the
// collector asks of one; any other method panics (nil embedded interface),
// as a go-nvml mock does for a function it was not given.
type playerMigDevice struct {
	nvml.Device
	j migDeviceJSON
}

func (m playerMigDevice) GetGpuInstanceId() (int, nvml.Return) {
	return m.j.GPUInstanceID, nvml.SUCCESS
}
func (m playerMigDevice) GetAttributes() (nvml.DeviceAttributes, nvml.Return) {
	return nvml.DeviceAttributes{GpuInstanceSliceCount: m.j.Slices, MemorySizeMB: m.j.MemoryMB}, nvml.SUCCESS
}

// The recorder's samples wrap the library's and remember their entity.

type recSample struct {
	inner nvml.GpmSample
	e     entity
}

func (s *recSample) Free() nvml.Return                        { return s.inner.Free() }
func (s *recSample) Get(d nvml.Device) nvml.Return            { return s.inner.Get(d) }
func (s *recSample) MigGet(d nvml.Device, gi int) nvml.Return { return s.inner.MigGet(d, gi) }

func unwrap(s nvml.GpmSample) nvml.GpmSample {
	if rs, ok := s.(*recSample); ok {
		return rs.inner
	}
	return s
}

func (l recLibrary) Extensions() nvml.ExtendedInterface { return l.r.lib.Extensions() }
func (l recLibrary) GpmSampleAlloc() (nvml.GpmSample, nvml.Return) {
	s, ret := l.r.lib.GpmSampleAlloc()
	if ret != nvml.SUCCESS {
		return nil, ret
	}
	return &recSample{inner: s, e: entity{-1, -1}}, ret
}
func (l recLibrary) GpmSampleFree(s nvml.GpmSample) nvml.Return {
	return l.r.lib.GpmSampleFree(unwrap(s))
}

// GpmMetricsGet asks the library with its own samples and keeps each
// metric's answer under the newer sample's entity.
func (l recLibrary) GpmMetricsGet(m *nvml.GpmMetricsGetType) nvml.Return {
	s1, s2 := m.Sample1, m.Sample2
	m.Sample1, m.Sample2 = unwrap(s1), unwrap(s2)
	ret := l.r.lib.GpmMetricsGet(m)
	m.Sample1, m.Sample2 = s1, s2
	rs, ok := s2.(*recSample)
	if !ok || rs.e.gpu < 0 || int(m.NumMetrics) > len(m.Metrics) {
		return ret
	}
	for i := range m.Metrics[:m.NumMetrics] {
		mr := ret
		if ret == nvml.SUCCESS {
			mr = nvml.Return(m.Metrics[i].NvmlReturn)
		}
		l.r.note(rs.e.gpu, keyGpmMetric(rs.e.gi, m.Metrics[i].MetricId), m.Metrics[i].Value, mr)
	}
	return ret
}

func (d *recDevice) GpmSampleGet(s nvml.GpmSample) nvml.Return {
	if rs, ok := s.(*recSample); ok {
		rs.e = entity{d.i, -1}
	}
	ret := d.d.GpmSampleGet(unwrap(s))
	d.r.note(d.i, keyGpmSampleGet, nil, ret)
	return ret
}

func (d *recDevice) GpmMigSampleGet(gi int, s nvml.GpmSample) nvml.Return {
	if rs, ok := s.(*recSample); ok {
		rs.e = entity{d.i, gi}
	}
	ret := d.d.GpmMigSampleGet(gi, unwrap(s))
	d.r.note(d.i, keyGpmMigSampleGet(gi), nil, ret)
	return ret
}

// GetMigDeviceHandleByIndex keeps what the collector reads from the handle:
// its GPU-instance id and the attributes that name its profile.
func (d *recDevice) GetMigDeviceHandleByIndex(i int) (nvml.Device, nvml.Return) {
	md, ret := d.d.GetMigDeviceHandleByIndex(i)
	if ret != nvml.SUCCESS {
		d.r.note(d.i, keyMigDevice(i), nil, ret)
		return md, ret
	}
	id, r := md.GetGpuInstanceId()
	a, ra := md.GetAttributes()
	if r == nvml.SUCCESS {
		r = ra
	}
	d.r.note(d.i, keyMigDevice(i), migDeviceJSON{GPUInstanceID: id, Slices: a.GpuInstanceSliceCount, MemoryMB: a.MemorySizeMB}, r)
	return md, ret
}
