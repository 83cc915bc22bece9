// Package simulator is go-nvml's DGX H100 mock driven by a scenario
// (replay.Scenario): what `gpuwarden record --backend mock` and make
// demo-trace record, and what the tests of the collector and the recorder
// sample. Only a build with -tags simulator links it into gpuwarden; the
// agent never runs it, and the mock is some 0.7 MB of file and a table built
// at initialisation that every agent would otherwise carry.
package simulator

import (
	"fmt"
	"math"
	"math/rand"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpuwarden/gpuwarden/collectors/attribution"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// Simulation is go-nvml's DGX H100 mock driven by a Scenario: the mock gives
// the identity of 8 H100s, the scenario gives their telemetry over time.
// Step moves it to a time; then the collector reads it like any NVML.
type Simulation struct {
	sc     *replay.Scenario
	server *server.Server
	gpus   [8]simGPU
	rng    *rand.Rand
	migRNG *rand.Rand // MIG instances' noise: its own stream, so adding instances leaves the rest as it was
	t      float64
}

type simGPU struct {
	lost         bool
	util         float64
	tempC        float64
	powerW       float64
	smClock      uint32
	energyMJ     float64
	reasons      uint64
	swThermNS    float64
	hwThermNS    float64
	powerCapNS   float64
	thermalViol  float64
	powerViol    float64
	eccCorr      uint64
	eccUnc       uint64
	remapCorr    int
	remapUnc     int
	remapPending bool
	remapFailed  bool
	memPct       float64 // framebuffer in use, percent; < 0: follows the load
	nvlinkFlit   float64
	nvlinkBytes  float64
	off          map[string]bool
	mig          []simInstance // MIG GPU instances; none: MIG off
}

// simInstance is a MIG GPU instance: its id, profile and load.
type simInstance struct {
	id       int
	slices   uint32
	memoryMB uint64
	curve    [][2]float64
	util     float64
}

// DefaultBusIDs are a DGX H100's GPU addresses.
var DefaultBusIDs = []string{"0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
	"0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"}

// New builds the mock node at time 0.
func New(sc *replay.Scenario) *Simulation {
	s := &Simulation{sc: sc, server: dgxh100.New(), rng: rand.New(rand.NewSource(sc.Seed)), migRNG: rand.New(rand.NewSource(sc.Seed + 1))}
	bus := sc.BusIDs
	if len(bus) == 0 {
		bus = DefaultBusIDs
	}
	for _, off := range sc.NotSupported {
		g := &s.gpus[off.GPU]
		if g.off == nil {
			g.off = map[string]bool{}
		}
		for _, f := range off.Fields {
			g.off[f] = true
		}
	}
	for i, nd := range s.server.Devices {
		d := nd.(*server.Device)
		d.PciBusID = bus[i]
		// The mock draws random UUIDs; a trace must come out the same each time.
		var u [16]byte
		s.rng.Read(u[:])
		d.UUID = fmt.Sprintf("GPU-%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
		s.wire(i, d)
	}
	for _, m := range sc.MIG {
		g := &s.gpus[m.GPU]
		for _, in := range m.Instances {
			slices, gb := in.Size()
			// A profile's memory is a little under its name's, as on an H100
			// (1g.10gb has 9856 MiB).
			g.mig = append(g.mig, simInstance{id: in.ID, slices: slices, memoryMB: uint64(gb) * 1024 * 98 / 100, curve: in.Load})
		}
		s.wireMIG(m.GPU, s.server.Devices[m.GPU].(*server.Device))
	}
	s.wireGPM()
	s.Step(0)
	return s
}

// Library is the simulated node as the collector's NVML.
func (s *Simulation) Library() gpu.Library { return simLibrary{gpu.FromNVML(s.server)} }

// simLibrary is the mock as gpu.Library and nothing more: the mock has no
// event sets (NVML() has them for the tests that set them up).
type simLibrary struct{ gpu.Library }

// BusID is GPU i's PCI address as the kernel prints it (0000:18:00.0).
func (s *Simulation) BusID(i int) string { return s.server.Devices[i].(*server.Device).PciBusID }

// Step moves the simulation to t seconds, integrating counters since the
// previous step.
func (s *Simulation) Step(t float64) {
	dt := t - s.t
	if dt < 0 {
		dt = 0
	}
	s.t = t
	for i := range s.gpus {
		g := &s.gpus[i]
		for _, l := range s.sc.Lost {
			if l.GPU == i && t >= l.At {
				g.lost = true
			}
		}
		curve := s.sc.Load.Default
		if c, ok := s.sc.Load.GPUs[i]; ok {
			curve = c
		}
		g.util = clamp(interpolate(curve, t)+s.rng.NormFloat64()*2.5, 0, 100)
		g.memPct = -1
		if c, ok := s.sc.Memory[i]; ok && t >= c[0][0] {
			g.memPct = interpolate(c, t)
		}
		for k := range g.mig {
			in := &g.mig[k]
			c := in.curve
			if len(c) == 0 {
				c = curve
			}
			in.util = clamp(interpolate(c, t)+s.migRNG.NormFloat64()*2.5, 0, 100)
		}
		thermal := false
		for _, w := range s.sc.Thermal {
			if w.GPU == i && t >= w.From && t < w.To {
				thermal = true
			}
		}
		g.tempC = 31 + 0.42*g.util + float64(i%3)
		g.smClock = 1980
		g.reasons = 0
		if g.util < 1 {
			g.reasons |= uint64(nvml.ClocksEventReasonGpuIdle)
			g.smClock = 345
		}
		if thermal {
			g.tempC = 87 + s.rng.Float64()*3
			g.smClock = 1350
			g.reasons |= uint64(nvml.ClocksEventReasonSwThermalSlowdown)
			g.swThermNS += dt * 1e9
			g.thermalViol += dt * 1e9
		}
		g.powerW = 72 + 6.1*g.util
		if g.powerW > 650 {
			g.reasons |= uint64(nvml.ClocksEventReasonSwPowerCap)
			g.powerCapNS += dt * 0.4e9
			g.powerViol += dt * 0.4e9
		}
		g.energyMJ += g.powerW * dt * 1000
		g.nvlinkBytes += g.util / 100 * 180e9 * dt / 1024 // KiB, as NVML counts it
		if i == 1 && g.util > 50 {
			g.nvlinkFlit += dt * 0.2
		}
		for _, e := range s.sc.ECC {
			if e.GPU == i && t >= e.At && t-dt < e.At {
				g.eccCorr += e.Corrected
				g.eccUnc += e.Uncorrected
				if e.Uncorrected > 0 {
					g.remapUnc += int(e.Uncorrected)
					g.remapPending = true
				}
				if e.Corrected > 0 {
					g.remapCorr++
				}
				if e.RemapFailure {
					g.remapFailed = true
				}
			}
		}
	}
}

// usedMB is the framebuffer in use, in MiB: the scenario's memory curve
// where it has one, else a base plus what the load holds.
func (g *simGPU) usedMB() uint64 {
	if g.memPct >= 0 {
		return uint64(g.memPct / 100 * (81559 - 573))
	}
	return uint64(1200 + g.util*720)
}

func interpolate(pts [][2]float64, t float64) float64 {
	if t <= pts[0][0] {
		return pts[0][1]
	}
	for i := 1; i < len(pts); i++ {
		if t <= pts[i][0] {
			a, b := pts[i-1], pts[i]
			if b[0] == a[0] {
				return b[1]
			}
			return a[1] + (b[1]-a[1])*(t-a[0])/(b[0]-a[0])
		}
	}
	return pts[len(pts)-1][1]
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

// wire sets the mock's telemetry functions (go-nvml leaves them nil).
func (s *Simulation) wire(i int, d *server.Device) {
	g := &s.gpus[i]
	ret := func(field string) nvml.Return {
		if g.lost {
			return nvml.ERROR_GPU_IS_LOST
		}
		if g.off[field] {
			return nvml.ERROR_NOT_SUPPORTED
		}
		return nvml.SUCCESS
	}
	serial := "165322" + strings.Repeat("0", 6) + string(rune('0'+i))
	d.GetSerialFunc = func() (string, nvml.Return) { return serial, nvml.SUCCESS }
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		var p nvml.PciInfo
		full := strings.ToUpper("0000" + d.PciBusID)
		for j := 0; j < len(full) && j < len(p.BusId)-1; j++ {
			p.BusId[j] = int8(full[j])
		}
		p.PciDeviceId = 0x233010DE
		return p, nvml.SUCCESS
	}
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) {
		return uint32(g.tempC), ret("DCGM_FI_DEV_GPU_TEMP")
	}
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) {
		return uint32(g.powerW * 1000), ret("DCGM_FI_DEV_POWER_USAGE")
	}
	d.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) {
		return uint64(g.energyMJ), ret("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: uint32(g.util), Memory: uint32(g.util * 0.6)}, ret("DCGM_FI_DEV_GPU_UTIL")
	}
	d.GetEncoderUtilizationFunc = func() (uint32, uint32, nvml.Return) {
		return 0, 167000, ret("DCGM_FI_DEV_ENC_UTIL")
	}
	d.GetDecoderUtilizationFunc = func() (uint32, uint32, nvml.Return) {
		return 0, 167000, ret("DCGM_FI_DEV_DEC_UTIL")
	}
	d.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
		if c == nvml.CLOCK_MEM {
			return 2619, ret("DCGM_FI_DEV_MEM_CLOCK")
		}
		return g.smClock, ret("DCGM_FI_DEV_SM_CLOCK")
	}
	d.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
		total, reserved, used := uint64(81559)<<20, uint64(573)<<20, g.usedMB()<<20
		return nvml.Memory_v2{Total: total, Reserved: reserved, Used: used, Free: total - reserved - used}, ret("DCGM_FI_DEV_FB_USED")
	}
	d.GetTotalEccErrorsFunc = func(t nvml.MemoryErrorType, _ nvml.EccCounterType) (uint64, nvml.Return) {
		if t == nvml.MEMORY_ERROR_TYPE_CORRECTED {
			return g.eccCorr, ret("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")
		}
		return g.eccUnc, ret("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL")
	}
	d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
		return g.remapCorr, g.remapUnc, g.remapPending, g.remapFailed, ret("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS")
	}
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
		return g.reasons, ret("DCGM_FI_DEV_CLOCKS_EVENT_REASONS")
	}
	d.GetViolationStatusFunc = func(p nvml.PerfPolicyType) (nvml.ViolationTime, nvml.Return) {
		v := g.powerViol
		if p == nvml.PERF_POLICY_THERMAL {
			v = g.thermalViol
		}
		return nvml.ViolationTime{ReferenceTime: uint64(s.t * 1e9), ViolationTime: uint64(v)}, ret("DCGM_FI_DEV_POWER_VIOLATION")
	}
	d.GetCurrPcieLinkGenerationFunc = func() (int, nvml.Return) { return 5, ret("DCGM_FI_DEV_PCIE_LINK_GEN") }
	d.GetCurrPcieLinkWidthFunc = func() (int, nvml.Return) { return 16, ret("DCGM_FI_DEV_PCIE_LINK_WIDTH") }
	// The demo's one training job runs on GPUs 0 and 1: a process each,
	// holding the GPU's used memory. Nothing graphical runs.
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		if g.lost {
			return nil, nvml.ERROR_GPU_IS_LOST
		}
		if i > 1 {
			return nil, nvml.SUCCESS
		}
		return []nvml.ProcessInfo{{Pid: uint32(31337 + i), UsedGpuMemory: g.usedMB() << 20}}, nvml.SUCCESS
	}
	d.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		if g.lost {
			return nil, nvml.ERROR_GPU_IS_LOST
		}
		return nil, nvml.SUCCESS
	}
	d.GetFieldValuesFunc = func(vals []nvml.FieldValue) nvml.Return {
		if g.lost {
			return nvml.ERROR_GPU_IS_LOST
		}
		for j := range vals {
			v, name, ok := s.fieldValue(g, vals[j].FieldId)
			r := nvml.SUCCESS
			if !ok || g.off[name] {
				r = nvml.ERROR_NOT_SUPPORTED
			}
			vals[j].NvmlReturn = uint32(r)
			gpu.SetFieldValueFloat(&vals[j], v)
		}
		return nvml.SUCCESS
	}
}

// fieldValue answers GetFieldValues. Retired pages are NOT_SUPPORTED, as on
// a real H100: row remapping replaced page retirement on Ampere and newer.
func (s *Simulation) fieldValue(g *simGPU, id uint32) (float64, string, bool) {
	switch id {
	case nvml.FI_DEV_MEMORY_TEMP:
		return math.Round(g.tempC + 6), "DCGM_FI_DEV_MEMORY_TEMP", true
	case nvml.FI_DEV_PCIE_REPLAY_COUNTER:
		return 0, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", true
	case nvml.FI_DEV_NVLINK_THROUGHPUT_RAW_TX:
		return math.Round(g.nvlinkBytes), "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", true
	case nvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL:
		return math.Floor(g.nvlinkFlit), "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", true
	case nvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL:
		return 0, "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", true
	case nvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL:
		return 0, "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", true
	case nvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL:
		return 0, "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", true
	case nvml.FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP:
		return math.Round(g.powerCapNS), "DCGM_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP_NS", true
	case nvml.FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST:
		return 0, "DCGM_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST_NS", true
	case nvml.FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN:
		return math.Round(g.swThermNS), "DCGM_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN_NS", true
	case nvml.FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN:
		return math.Round(g.hwThermNS), "DCGM_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN_NS", true
	case nvml.FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN:
		return 0, "DCGM_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN_NS", true
	}
	return 0, "", false
}

// MockDevice is GPU i's go-nvml mock device, for tests that make one GPU
// misbehave.
func (s *Simulation) MockDevice(i int) *server.Device { return s.server.Devices[i].(*server.Device) }

// NVML is the simulated node as go-nvml's whole interface (the mock server),
// for tests of NVML features a trace does not carry, such as event sets.
func (s *Simulation) NVML() nvml.Interface { return s.server }

// demoJob is the Slurm job the simulated node runs on GPUs 0 and 1.
var demoJob = attribution.Owner{SlurmJob: "4242", SlurmStep: "0", SlurmUID: "1000", SlurmUser: "demo"}

// Owner says whose a simulated process is: the demo job's two.
func (s *Simulation) Owner(pid uint32) attribution.Owner {
	if pid == 31337 || pid == 31338 {
		return demoJob
	}
	return attribution.Owner{}
}
