package gpu

import (
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Library is the part of NVML the collector uses. go-nvml's nvml.Interface
// satisfies it through FromNVML; the replay backend implements it from a
// trace. Nothing else in gpuwarden calls NVML.
type Library interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	SystemGetDriverVersion() (string, nvml.Return)
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (Device, nvml.Return)

	// Extensions answers LookupSymbol: whether the loaded libnvidia-ml has a
	// function, asked before calling one a driver may lack (go-nvml binds
	// lazily, so calling a missing symbol kills the process).
	Extensions() nvml.ExtendedInterface
	// GPM (GPU Performance Monitoring, Hopper and newer): sample buffers and
	// the metrics NVML computes from two samples of one GPU or GPU instance.
	GpmSampleAlloc() (nvml.GpmSample, nvml.Return)
	GpmSampleFree(nvml.GpmSample) nvml.Return
	GpmMetricsGet(*nvml.GpmMetricsGetType) nvml.Return
}

// Device is the part of nvml.Device the collector reads. Every method has
// go-nvml's exact signature, so an nvml.Device (live or go-nvml's mocks) is a
// Device as it is. A method added here is answered from traces once it has a
// row in the replay package's table (see "Adding an NVML method" there);
// replay's tests fail until it does.
type Device interface {
	GetUUID() (string, nvml.Return)
	GetName() (string, nvml.Return)
	GetSerial() (string, nvml.Return)
	GetMinorNumber() (int, nvml.Return)
	GetPciInfo() (nvml.PciInfo, nvml.Return)
	GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return)
	GetPowerUsage() (uint32, nvml.Return)
	GetTotalEnergyConsumption() (uint64, nvml.Return)
	GetUtilizationRates() (nvml.Utilization, nvml.Return)
	GetEncoderUtilization() (uint32, uint32, nvml.Return)
	GetDecoderUtilization() (uint32, uint32, nvml.Return)
	GetClockInfo(nvml.ClockType) (uint32, nvml.Return)
	GetMemoryInfo_v2() (nvml.Memory_v2, nvml.Return)
	GetTotalEccErrors(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return)
	GetRemappedRows() (int, int, bool, bool, nvml.Return)
	GetCurrentClocksEventReasons() (uint64, nvml.Return)
	GetViolationStatus(nvml.PerfPolicyType) (nvml.ViolationTime, nvml.Return)
	GetCurrPcieLinkGeneration() (int, nvml.Return)
	GetCurrPcieLinkWidth() (int, nvml.Return)
	GetFieldValues([]nvml.FieldValue) nvml.Return
	GetComputeRunningProcesses() ([]nvml.ProcessInfo, nvml.Return)
	GetGraphicsRunningProcesses() ([]nvml.ProcessInfo, nvml.Return)

	// GPM, for the DCGM_FI_PROF_* fields (gpm.go).
	GpmQueryDeviceSupport() (nvml.GpmSupport, nvml.Return)
	GpmSampleGet(nvml.GpmSample) nvml.Return
	GpmMigSampleGet(int, nvml.GpmSample) nvml.Return
	// MIG: the GPU instances whose profiling GPM reports one by one.
	GetMigMode() (int, int, nvml.Return)
	GetMaxMigDeviceCount() (int, nvml.Return)
	GetMigDeviceHandleByIndex(int) (nvml.Device, nvml.Return)
}

// FromNVML adapts go-nvml's full interface (nvml.New(), or a mock such as
// mock/dgxh100) to Library.
func FromNVML(lib nvml.Interface) Library { return nvmlLibrary{lib} }

type nvmlLibrary struct{ lib nvml.Interface }

func (l nvmlLibrary) Init() nvml.Return     { return l.lib.Init() }
func (l nvmlLibrary) Shutdown() nvml.Return { return l.lib.Shutdown() }
func (l nvmlLibrary) SystemGetDriverVersion() (string, nvml.Return) {
	return l.lib.SystemGetDriverVersion()
}
func (l nvmlLibrary) DeviceGetCount() (int, nvml.Return) { return l.lib.DeviceGetCount() }
func (l nvmlLibrary) Extensions() nvml.ExtendedInterface { return l.lib.Extensions() }
func (l nvmlLibrary) GpmSampleAlloc() (nvml.GpmSample, nvml.Return) {
	return l.lib.GpmSampleAlloc()
}
func (l nvmlLibrary) GpmSampleFree(s nvml.GpmSample) nvml.Return { return l.lib.GpmSampleFree(s) }
func (l nvmlLibrary) GpmMetricsGet(m *nvml.GpmMetricsGetType) nvml.Return {
	return l.lib.GpmMetricsGet(m)
}
func (l nvmlLibrary) EventSetCreate() (nvml.EventSet, nvml.Return) {
	return l.lib.EventSetCreate()
}
func (l nvmlLibrary) DeviceGetHandleByIndex(i int) (Device, nvml.Return) {
	d, ret := l.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return nil, ret
	}
	return d, ret
}

// BusID renders NVML's PCI bus id the way dcgm-exporter labels it
// ("00000000:18:00.0"), from whichever of the structure's fields is filled.
func BusID(p nvml.PciInfo) string {
	s := cString(p.BusId[:])
	if s == "" {
		s = cString(p.BusIdLegacy[:])
	}
	if s == "" {
		// go-nvml's mocks fill only the numeric fields.
		return fmt.Sprintf("%08X:%02X:%02X.0", p.Domain, p.Bus, p.Device)
	}
	return strings.ToUpper(s)
}

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// ShortBusID turns any spelling of a PCI address ("00000000:3B:00.0",
// "0000:3b:00.0", "3b:00.0") into the kernel's "0000:3b:00.0", the key used to
// match kernel-log events to GPUs.
func ShortBusID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		return "0000:" + s
	case 3:
		dom := parts[0]
		if len(dom) > 4 {
			dom = dom[len(dom)-4:]
		}
		for len(dom) < 4 {
			dom = "0" + dom
		}
		return dom + ":" + parts[1] + ":" + parts[2]
	}
	return s
}
