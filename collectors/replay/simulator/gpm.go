package simulator

import (
	"math"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// The simulated GPUs answer GPM through go-nvml's mock, as an H100 does: a
// sample buffer per call to GpmSampleAlloc, and metrics (in GPM's units,
// percent and MiB/s) that follow the simulated load. A buffer remembers
// which GPU and GPU instance it was taken of, so the metrics are that
// entity's; the collector samples GPUs concurrently, and each buffer is only
// ever used by one of them at a time.

type simSample struct {
	mock.GpmSample
	gpu, gi int
}

// gpmShare is each metric's share of the load, as a simulated training job
// spreads it: mostly tensor work, a little plain FP32.
var gpmShare = map[nvml.GpmMetricId]float64{
	nvml.GPM_METRIC_GRAPHICS_UTIL:   0.97,
	nvml.GPM_METRIC_SM_UTIL:         0.88,
	nvml.GPM_METRIC_SM_OCCUPANCY:    0.41,
	nvml.GPM_METRIC_ANY_TENSOR_UTIL: 0.57,
	nvml.GPM_METRIC_DRAM_BW_UTIL:    0.46,
	nvml.GPM_METRIC_FP64_UTIL:       0.02,
	nvml.GPM_METRIC_FP32_UTIL:       0.18,
	nvml.GPM_METRIC_FP16_UTIL:       0.09,
}

// gpmMiBps is each throughput metric's MiB/s at full load.
var gpmMiBps = map[nvml.GpmMetricId]float64{
	nvml.GPM_METRIC_PCIE_TX_PER_SEC:         9.5e9 / (1 << 20),
	nvml.GPM_METRIC_PCIE_RX_PER_SEC:         12.1e9 / (1 << 20),
	nvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC: 180e9 / (1 << 20),
	nvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC: 174e9 / (1 << 20),
}

// gpmValue is metric id of an entity at the simulated load util (percent).
// NVLink is off on a GPU in MIG mode.
func gpmValue(id nvml.GpmMetricId, util float64, mig bool) (float64, nvml.Return) {
	if f, ok := gpmShare[id]; ok {
		return math.Round(util*f*100) / 100, nvml.SUCCESS
	}
	if f, ok := gpmMiBps[id]; ok {
		if mig && (id == nvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC || id == nvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC) {
			return 0, nvml.SUCCESS
		}
		return math.Round(util/100*f*10) / 10, nvml.SUCCESS
	}
	return 0, nvml.ERROR_NOT_SUPPORTED
}

func (s *Simulation) wireGPM() {
	s.server.GpmSampleAllocFunc = func() (nvml.GpmSample, nvml.Return) {
		return &simSample{gpu: -1, gi: -1}, nvml.SUCCESS
	}
	s.server.GpmSampleFreeFunc = func(nvml.GpmSample) nvml.Return { return nvml.SUCCESS }
	s.server.GpmMetricsGetFunc = func(m *nvml.GpmMetricsGetType) nvml.Return {
		a, ok1 := m.Sample1.(*simSample)
		b, ok2 := m.Sample2.(*simSample)
		if !ok1 || !ok2 || a.gpu != b.gpu || a.gi != b.gi || b.gpu < 0 || int(m.NumMetrics) > len(m.Metrics) {
			return nvml.ERROR_INVALID_ARGUMENT // never pair samples of different entities
		}
		g := &s.gpus[b.gpu]
		util := g.util
		if b.gi >= 0 {
			for _, in := range g.mig {
				if in.id == b.gi {
					util = in.util
				}
			}
		}
		for i := range m.Metrics[:m.NumMetrics] {
			v, ret := gpmValue(nvml.GpmMetricId(m.Metrics[i].MetricId), util, len(g.mig) > 0)
			m.Metrics[i].Value, m.Metrics[i].NvmlReturn = v, uint32(ret)
		}
		return nvml.SUCCESS
	}
	for i, nd := range s.server.Devices {
		d := nd.(*server.Device)
		g := &s.gpus[i]
		d.GpmQueryDeviceSupportFunc = func() (nvml.GpmSupport, nvml.Return) {
			if g.lost {
				return nvml.GpmSupport{}, nvml.ERROR_GPU_IS_LOST
			}
			return nvml.GpmSupport{Version: nvml.GPM_SUPPORT_VERSION, IsSupportedDevice: 1}, nvml.SUCCESS
		}
		d.GpmSampleGetFunc = func(smp nvml.GpmSample) nvml.Return {
			if g.lost {
				return nvml.ERROR_GPU_IS_LOST
			}
			ss, ok := smp.(*simSample)
			if !ok {
				return nvml.ERROR_INVALID_ARGUMENT
			}
			ss.gpu, ss.gi = i, -1
			return nvml.SUCCESS
		}
		d.GpmMigSampleGetFunc = func(gi int, smp nvml.GpmSample) nvml.Return {
			if g.lost {
				return nvml.ERROR_GPU_IS_LOST
			}
			ss, ok := smp.(*simSample)
			if !ok {
				return nvml.ERROR_INVALID_ARGUMENT
			}
			for _, in := range g.mig {
				if in.id == gi {
					ss.gpu, ss.gi = i, gi
					return nvml.SUCCESS
				}
			}
			return nvml.ERROR_NOT_FOUND
		}
		if len(g.mig) == 0 {
			d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
		}
	}
}

// wireMIG puts GPU i in MIG mode with one MIG device (one compute instance)
// per GPU instance.
func (s *Simulation) wireMIG(i int, d *server.Device) {
	g := &s.gpus[i]
	d.MigMode = nvml.DEVICE_MIG_ENABLE
	d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
	d.GetMigDeviceHandleByIndexFunc = func(k int) (nvml.Device, nvml.Return) {
		if g.lost {
			return nil, nvml.ERROR_GPU_IS_LOST
		}
		if k < 0 || k >= len(g.mig) {
			return nil, nvml.ERROR_NOT_FOUND
		}
		in := g.mig[k]
		return &mock.Device{
			GetGpuInstanceIdFunc: func() (int, nvml.Return) { return in.id, nvml.SUCCESS },
			GetAttributesFunc: func() (nvml.DeviceAttributes, nvml.Return) {
				return nvml.DeviceAttributes{GpuInstanceSliceCount: in.slices, ComputeInstanceSliceCount: in.slices, MemorySizeMB: in.memoryMB}, nvml.SUCCESS
			},
		}, nvml.SUCCESS
	}
}
