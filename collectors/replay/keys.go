package replay

import (
	"strconv"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// The keys under which a trace stores NVML answers: the call and its
// arguments, so a trace reads like the calls that produced it. The recorder
// and the player both use these, so they cannot drift apart.

const (
	keyPowerUsage   = "GetPowerUsage()"
	keyEnergy       = "GetTotalEnergyConsumption()"
	keyUtilization  = "GetUtilizationRates()"
	keyEncoder      = "GetEncoderUtilization()"
	keyDecoder      = "GetDecoderUtilization()"
	keyMemory       = "GetMemoryInfo_v2()"
	keyRemappedRows = "GetRemappedRows()"
	keyClockEvents  = "GetCurrentClocksEventReasons()"
	keyPcieGen      = "GetCurrPcieLinkGeneration()"
	keyPcieWidth    = "GetCurrPcieLinkWidth()"
	keyProfiling    = "GetProfilingActivity()"
)

func keyTemperature(s nvml.TemperatureSensors) string {
	return "GetTemperature(" + strconv.Itoa(int(s)) + ")"
}

func keyClock(c nvml.ClockType) string { return "GetClockInfo(" + strconv.Itoa(int(c)) + ")" }

func keyEcc(t nvml.MemoryErrorType, c nvml.EccCounterType) string {
	return "GetTotalEccErrors(" + strconv.Itoa(int(t)) + "," + strconv.Itoa(int(c)) + ")"
}

func keyViolation(p nvml.PerfPolicyType) string {
	return "GetViolationStatus(" + strconv.Itoa(int(p)) + ")"
}

func keyFieldValue(id, scope uint32) string {
	return "FieldValue(" + strconv.FormatUint(uint64(id), 10) + "/" + strconv.FormatUint(uint64(scope), 10) + ")"
}

// JSON shapes of the answers that are not a single number.
type utilJSON struct {
	GPU    uint32 `json:"gpu"`
	Memory uint32 `json:"memory"`
}

type memoryJSON struct {
	Total    uint64 `json:"total"`
	Reserved uint64 `json:"reserved"`
	Free     uint64 `json:"free"`
	Used     uint64 `json:"used"`
}

// remappedJSON is [correctable, uncorrectable, pending, failed].
type remappedJSON struct {
	Correctable   int  `json:"correctable"`
	Uncorrectable int  `json:"uncorrectable"`
	Pending       bool `json:"pending"`
	Failed        bool `json:"failed"`
}

type codecJSON struct {
	Util     uint32 `json:"util"`
	PeriodUs uint32 `json:"period_us"`
}

type violationJSON struct {
	Reference uint64 `json:"reference"`
	Violation uint64 `json:"violation"`
}
