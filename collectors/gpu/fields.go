package gpu

import (
	"encoding/binary"
	"math"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Type is the Prometheus type of a field.
type Type uint8

const (
	Gauge Type = iota
	Counter
)

// Field is one row of the table that drives sampling, exposition and the
// README's metric list. A row has exactly one source: Read (a direct NVML
// call), NVMLField (batched through one GetFieldValues call per GPU), or
// Profiling (a GPM metric computed by NVML from two samples, gpm.go).
type Field struct {
	Name    string // dcgm-exporter's metric name
	DCGMID  int    // DCGM field id, for the docs and for DCGM later
	Type    Type
	Help    string
	Default bool // in dcgm-exporter's default set
	Read    func(d Device, c *calls) (float64, nvml.Return)
	// NVMLField reads nvml.FieldValue NVMLField at scope NVMLScope.
	NVMLField uint32
	NVMLScope uint32
	// Profiling reads GPM metric GPM, in GPM's unit Unit, converted to
	// DCGM's. PerInstance fields are also read per MIG GPU instance; on a GPU
	// in MIG mode they come only per instance, as DCGM serves them.
	Profiling   bool
	GPM         nvml.GpmMetricId
	Unit        GPMUnit
	PerInstance bool
}

// GPMUnit is the unit a GPM metric comes in.
type GPMUnit uint8

const (
	// GPMPercent is 0..100; DCGM's field is the ratio 0..1.
	GPMPercent GPMUnit = iota
	// GPMMiBPerSecond is MiB/s; DCGM's field is whole bytes/s, truncated.
	GPMMiBPerSecond
)

// DCGM converts a value in u to DCGM's unit, as DCGM does itself.
func (u GPMUnit) DCGM(v float64) float64 {
	if u == GPMMiBPerSecond {
		return math.Trunc(v * (1 << 20))
	}
	return v / 100 // not v * 0.01: 0.01 is inexact, and 67.15 would become 0.6715000000000001
}

// allLinks is NVML's scope id for "summed over every NVLink".
const allLinks = math.MaxUint32

// Fields is the table. Names, types and HELP are dcgm-exporter's, so its
// dashboards and alerts work unchanged; the order is the exposition order.
var Fields = []Field{
	{Name: "DCGM_FI_DEV_SM_CLOCK", DCGMID: 100, Type: Gauge, Default: true, Help: "SM clock frequency (in MHz).",
		Read: clock(nvml.CLOCK_SM)},
	{Name: "DCGM_FI_DEV_MEM_CLOCK", DCGMID: 101, Type: Gauge, Default: true, Help: "Memory clock frequency (in MHz).",
		Read: clock(nvml.CLOCK_MEM)},
	{Name: "DCGM_FI_DEV_MEMORY_TEMP", DCGMID: 140, Type: Gauge, Default: true, Help: "Memory temperature (in C).",
		NVMLField: nvml.FI_DEV_MEMORY_TEMP},
	{Name: "DCGM_FI_DEV_GPU_TEMP", DCGMID: 150, Type: Gauge, Default: true, Help: "GPU temperature (in C).",
		Read: func(d Device, _ *calls) (float64, nvml.Return) {
			return u32(d.GetTemperature(nvml.TEMPERATURE_GPU))
		}},
	{Name: "DCGM_FI_DEV_POWER_USAGE", DCGMID: 155, Type: Gauge, Default: true, Help: "Power draw (in W).",
		Read: func(d Device, _ *calls) (float64, nvml.Return) {
			mw, ret := d.GetPowerUsage()
			return float64(mw) / 1000, ret
		}},
	{Name: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", DCGMID: 156, Type: Counter, Default: true, Help: "Total energy consumption since boot (in mJ).",
		Read: func(d Device, _ *calls) (float64, nvml.Return) {
			mj, ret := d.GetTotalEnergyConsumption()
			return float64(mj), ret
		}},
	{Name: "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", DCGMID: 202, Type: Counter, Default: true, Help: "Total number of PCIe retries.",
		NVMLField: nvml.FI_DEV_PCIE_REPLAY_COUNTER},
	{Name: "DCGM_FI_DEV_GPU_UTIL", DCGMID: 203, Type: Gauge, Default: true, Help: "GPU utilization (in %).",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			u, ret := c.utilization(d)
			return float64(u.Gpu), ret
		}},
	{Name: "DCGM_FI_DEV_MEM_COPY_UTIL", DCGMID: 204, Type: Gauge, Default: true, Help: "Memory utilization (in %).",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			u, ret := c.utilization(d)
			return float64(u.Memory), ret
		}},
	{Name: "DCGM_FI_DEV_ENC_UTIL", DCGMID: 206, Type: Gauge, Default: true, Help: "Encoder utilization (in %).",
		Read: func(d Device, _ *calls) (float64, nvml.Return) {
			u, _, ret := d.GetEncoderUtilization()
			return float64(u), ret
		}},
	{Name: "DCGM_FI_DEV_DEC_UTIL", DCGMID: 207, Type: Gauge, Default: true, Help: "Decoder utilization (in %).",
		Read: func(d Device, _ *calls) (float64, nvml.Return) {
			u, _, ret := d.GetDecoderUtilization()
			return float64(u), ret
		}},
	{Name: "DCGM_FI_DEV_FB_FREE", DCGMID: 251, Type: Gauge, Default: true, Help: "Framebuffer memory free (in MiB).",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			m, ret := c.memory(d)
			return mib(m.Free), ret
		}},
	{Name: "DCGM_FI_DEV_FB_USED", DCGMID: 252, Type: Gauge, Default: true, Help: "Framebuffer memory used (in MiB).",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			m, ret := c.memory(d)
			return mib(m.Used), ret
		}},
	{Name: "DCGM_FI_DEV_FB_RESERVED", DCGMID: 253, Type: Gauge, Default: true, Help: "Framebuffer memory reserved (in MiB).",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			m, ret := c.memory(d)
			return mib(m.Reserved), ret
		}},
	{Name: "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", DCGMID: 449, Type: Counter, Default: true, Help: "Total number of NVLink bandwidth counters for all lanes.",
		NVMLField: nvml.FI_DEV_NVLINK_THROUGHPUT_RAW_TX, NVMLScope: allLinks},
	{Name: "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", DCGMID: 393, Type: Counter, Default: true, Help: "Number of remapped rows for uncorrectable errors",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			r, ret := c.remapped(d)
			return float64(r.unc), ret
		}},
	{Name: "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", DCGMID: 394, Type: Counter, Default: true, Help: "Number of remapped rows for correctable errors",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			r, ret := c.remapped(d)
			return float64(r.corr), ret
		}},
	{Name: "DCGM_FI_DEV_ROW_REMAP_FAILURE", DCGMID: 395, Type: Gauge, Default: true, Help: "Whether remapping of rows has failed",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			r, ret := c.remapped(d)
			return b2f(r.failed), ret
		}},
	{Name: "DCGM_FI_DEV_ROW_REMAP_PENDING", DCGMID: 396, Type: Gauge, Help: "Whether there are pending row remappings (a GPU reset is needed).",
		Read: func(d Device, c *calls) (float64, nvml.Return) {
			r, ret := c.remapped(d)
			return b2f(r.pending), ret
		}},

	// Profiling, from GPM on Hopper and newer; absent elsewhere. DCGM's own
	// field-to-metric mapping (docs/profiling.md).
	{Name: "DCGM_FI_PROF_GR_ENGINE_ACTIVE", DCGMID: 1001, Type: Gauge, Default: true, Help: "Ratio of time the graphics engine is active.",
		Profiling: true, GPM: nvml.GPM_METRIC_GRAPHICS_UTIL, Unit: GPMPercent, PerInstance: true},
	{Name: "DCGM_FI_PROF_SM_ACTIVE", DCGMID: 1002, Type: Gauge, Help: "The ratio of cycles an SM has at least 1 warp assigned.",
		Profiling: true, GPM: nvml.GPM_METRIC_SM_UTIL, Unit: GPMPercent, PerInstance: true},
	{Name: "DCGM_FI_PROF_SM_OCCUPANCY", DCGMID: 1003, Type: Gauge, Help: "The ratio of number of warps resident on an SM.",
		Profiling: true, GPM: nvml.GPM_METRIC_SM_OCCUPANCY, Unit: GPMPercent, PerInstance: true},
	{Name: "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", DCGMID: 1004, Type: Gauge, Default: true, Help: "Ratio of cycles the tensor (HMMA) pipe is active.",
		Profiling: true, GPM: nvml.GPM_METRIC_ANY_TENSOR_UTIL, Unit: GPMPercent, PerInstance: true},
	{Name: "DCGM_FI_PROF_DRAM_ACTIVE", DCGMID: 1005, Type: Gauge, Default: true, Help: "Ratio of cycles the device memory interface is active sending or receiving data.",
		Profiling: true, GPM: nvml.GPM_METRIC_DRAM_BW_UTIL, Unit: GPMPercent, PerInstance: true},
	{Name: "DCGM_FI_PROF_PIPE_FP64_ACTIVE", DCGMID: 1006, Type: Gauge, Help: "Ratio of cycles the fp64 pipes are active.",
		Profiling: true, GPM: nvml.GPM_METRIC_FP64_UTIL, Unit: GPMPercent, PerInstance: true},
	{Name: "DCGM_FI_PROF_PIPE_FP32_ACTIVE", DCGMID: 1007, Type: Gauge, Help: "Ratio of cycles the fp32 pipes are active.",
		Profiling: true, GPM: nvml.GPM_METRIC_FP32_UTIL, Unit: GPMPercent, PerInstance: true},
	{Name: "DCGM_FI_PROF_PIPE_FP16_ACTIVE", DCGMID: 1008, Type: Gauge, Help: "Ratio of cycles the fp16 pipes are active.",
		Profiling: true, GPM: nvml.GPM_METRIC_FP16_UTIL, Unit: GPMPercent, PerInstance: true},
	{Name: "DCGM_FI_PROF_PCIE_TX_BYTES", DCGMID: 1009, Type: Gauge, Default: true, Help: "The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second.",
		Profiling: true, GPM: nvml.GPM_METRIC_PCIE_TX_PER_SEC, Unit: GPMMiBPerSecond},
	{Name: "DCGM_FI_PROF_PCIE_RX_BYTES", DCGMID: 1010, Type: Gauge, Default: true, Help: "The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second.",
		Profiling: true, GPM: nvml.GPM_METRIC_PCIE_RX_PER_SEC, Unit: GPMMiBPerSecond},
	{Name: "DCGM_FI_PROF_NVLINK_TX_BYTES", DCGMID: 1011, Type: Gauge, Help: "The rate of NvLink data transmitted, header and payload, over all links, in bytes per second.",
		Profiling: true, GPM: nvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC, Unit: GPMMiBPerSecond},
	{Name: "DCGM_FI_PROF_NVLINK_RX_BYTES", DCGMID: 1012, Type: Gauge, Help: "The rate of NvLink data received, header and payload, over all links, in bytes per second.",
		Profiling: true, GPM: nvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC, Unit: GPMMiBPerSecond},

	// Off in dcgm-exporter's defaults, on in ours: what operators turn on.
	{Name: "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", DCGMID: 310, Type: Counter, Help: "Total number of single-bit volatile ECC errors.",
		Read: ecc(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC)},
	{Name: "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", DCGMID: 311, Type: Counter, Help: "Total number of double-bit volatile ECC errors.",
		Read: ecc(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)},
	{Name: "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", DCGMID: 312, Type: Counter, Help: "Total number of single-bit persistent ECC errors.",
		Read: ecc(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.AGGREGATE_ECC)},
	{Name: "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", DCGMID: 313, Type: Counter, Help: "Total number of double-bit persistent ECC errors.",
		Read: ecc(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.AGGREGATE_ECC)},
	{Name: "DCGM_FI_DEV_RETIRED_SBE", DCGMID: 390, Type: Counter, Help: "Total number of retired pages due to single-bit errors.",
		NVMLField: nvml.FI_DEV_RETIRED_SBE},
	{Name: "DCGM_FI_DEV_RETIRED_DBE", DCGMID: 391, Type: Counter, Help: "Total number of retired pages due to double-bit errors.",
		NVMLField: nvml.FI_DEV_RETIRED_DBE},
	{Name: "DCGM_FI_DEV_RETIRED_PENDING", DCGMID: 392, Type: Counter, Help: "Total number of pages pending retirement.",
		NVMLField: nvml.FI_DEV_RETIRED_PENDING},
	{Name: "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", DCGMID: 409, Type: Counter, Help: "Total number of NVLink flow-control CRC errors.",
		NVMLField: nvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL},
	{Name: "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", DCGMID: 419, Type: Counter, Help: "Total number of NVLink data CRC errors.",
		NVMLField: nvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL},
	{Name: "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", DCGMID: 429, Type: Counter, Help: "Total number of NVLink retries.",
		NVMLField: nvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL},
	{Name: "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", DCGMID: 439, Type: Counter, Help: "Total number of NVLink recovery errors.",
		NVMLField: nvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL},
	{Name: "DCGM_FI_DEV_POWER_VIOLATION", DCGMID: 240, Type: Counter, Help: "Throttling duration due to power constraints (in ns).",
		Read: violation(nvml.PERF_POLICY_POWER)},
	{Name: "DCGM_FI_DEV_THERMAL_VIOLATION", DCGMID: 241, Type: Counter, Help: "Throttling duration due to thermal constraints (in ns).",
		Read: violation(nvml.PERF_POLICY_THERMAL)},
	{Name: "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", DCGMID: 112, Type: Gauge, Help: "Current clock event reasons (bitmask of DCGM_CLOCKS_EVENT_REASON_*).",
		Read: func(d Device, _ *calls) (float64, nvml.Return) {
			r, ret := d.GetCurrentClocksEventReasons()
			return float64(r), ret
		}},
	{Name: "DCGM_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP_NS", DCGMID: 1420, Type: Counter, Help: "Time the clocks were held down to stay within the power limit (in ns).",
		NVMLField: nvml.FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP},
	{Name: "DCGM_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST_NS", DCGMID: 1421, Type: Counter, Help: "Time the clocks were held down to match the sync-boost group (in ns).",
		NVMLField: nvml.FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST},
	{Name: "DCGM_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN_NS", DCGMID: 1422, Type: Counter, Help: "Time the clocks were held down by the driver to keep GPU and memory below their operating temperature (in ns).",
		NVMLField: nvml.FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN},
	{Name: "DCGM_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN_NS", DCGMID: 1423, Type: Counter, Help: "Time the hardware cut the clocks because the GPU was too hot (in ns).",
		NVMLField: nvml.FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN},
	{Name: "DCGM_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN_NS", DCGMID: 1424, Type: Counter, Help: "Time the hardware cut the clocks on an external power brake signal (in ns).",
		NVMLField: nvml.FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN},
	{Name: "DCGM_FI_DEV_PCIE_LINK_GEN", DCGMID: 237, Type: Gauge, Help: "PCIe current link generation.",
		Read: func(d Device, _ *calls) (float64, nvml.Return) {
			g, ret := d.GetCurrPcieLinkGeneration()
			return float64(g), ret
		}},
	{Name: "DCGM_FI_DEV_PCIE_LINK_WIDTH", DCGMID: 238, Type: Gauge, Help: "PCIe current link width.",
		Read: func(d Device, _ *calls) (float64, nvml.Return) {
			w, ret := d.GetCurrPcieLinkWidth()
			return float64(w), ret
		}},
}

// FieldIndex returns the index of the named field in Fields, or -1.
func FieldIndex(name string) int {
	for i := range Fields {
		if Fields[i].Name == name {
			return i
		}
	}
	return -1
}

// calls memoises the NVML calls that answer several fields at once, for one
// GPU in one sample.
type calls struct {
	util    *nvml.Utilization
	utilRet nvml.Return
	mem     *nvml.Memory_v2
	memRet  nvml.Return
	remap   *remapped
	remapR  nvml.Return
}

type remapped struct {
	corr, unc       int
	pending, failed bool
}

func (c *calls) utilization(d Device) (nvml.Utilization, nvml.Return) {
	if c.util == nil {
		u, ret := d.GetUtilizationRates()
		c.util, c.utilRet = &u, ret
	}
	return *c.util, c.utilRet
}

func (c *calls) memory(d Device) (nvml.Memory_v2, nvml.Return) {
	if c.mem == nil {
		m, ret := d.GetMemoryInfo_v2()
		c.mem, c.memRet = &m, ret
	}
	return *c.mem, c.memRet
}

func (c *calls) remapped(d Device) (remapped, nvml.Return) {
	if c.remap == nil {
		corr, unc, pending, failed, ret := d.GetRemappedRows()
		c.remap, c.remapR = &remapped{corr, unc, pending, failed}, ret
	}
	return *c.remap, c.remapR
}

func clock(t nvml.ClockType) func(Device, *calls) (float64, nvml.Return) {
	return func(d Device, _ *calls) (float64, nvml.Return) { return u32(d.GetClockInfo(t)) }
}

func ecc(t nvml.MemoryErrorType, c nvml.EccCounterType) func(Device, *calls) (float64, nvml.Return) {
	return func(d Device, _ *calls) (float64, nvml.Return) {
		n, ret := d.GetTotalEccErrors(t, c)
		return float64(n), ret
	}
}

func violation(p nvml.PerfPolicyType) func(Device, *calls) (float64, nvml.Return) {
	return func(d Device, _ *calls) (float64, nvml.Return) {
		v, ret := d.GetViolationStatus(p)
		return float64(v.ViolationTime), ret // ns, as NVML and dcgm-exporter count it
	}
}

func u32(v uint32, ret nvml.Return) (float64, nvml.Return) { return float64(v), ret }

func mib(bytes uint64) float64 { return float64(bytes) / (1 << 20) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// FieldValueFloat decodes an nvml.FieldValue's value by its type.
func FieldValueFloat(v nvml.FieldValue) float64 {
	b := v.Value[:]
	switch nvml.ValueType(v.ValueType) {
	case nvml.VALUE_TYPE_DOUBLE:
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return float64(binary.LittleEndian.Uint32(b))
	case nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		return float64(binary.LittleEndian.Uint64(b))
	case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
		return float64(int64(binary.LittleEndian.Uint64(b)))
	case nvml.VALUE_TYPE_SIGNED_INT:
		return float64(int32(binary.LittleEndian.Uint32(b)))
	}
	return math.NaN()
}

// SetFieldValueFloat is FieldValueFloat's inverse for the types a trace keeps.
func SetFieldValueFloat(v *nvml.FieldValue, f float64) {
	if f == math.Trunc(f) && f >= 0 && f < 1<<63 {
		v.ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_LONG_LONG)
		binary.LittleEndian.PutUint64(v.Value[:], uint64(f))
		return
	}
	v.ValueType = uint32(nvml.VALUE_TYPE_DOUBLE)
	binary.LittleEndian.PutUint64(v.Value[:], math.Float64bits(f))
}
