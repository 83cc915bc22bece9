// Package nvmlcalls is the table of the NVML device methods a trace answers
// by key, and the generator of the replay player's and recorder's methods
// from it (player_gen.go and recorder_gen.go in package replay).
//
// A row says everything the two need: the method's arguments, its results
// and how they are stored in a trace. The key is the call as written, its
// integer arguments in decimal ("GetTotalEccErrors(0,1)"), which is the
// trace format's convention; a value is stored as is when the method has one
// result, or as a JSON object whose fields hold the results otherwise.
package nvmlcalls

// Method is one NVML device method answered from a trace by key.
type Method struct {
	Name    string
	Args    []Arg    // in the order of go-nvml's signature
	Results []string // Go types of the results before the nvml.Return
	// JSON is the Go type (in package replay) of the stored value, with Fields
	// saying which of its fields holds each result; empty when the method has
	// one result, stored as it is.
	JSON   string
	Fields []Field
	// Fallback names a playerDevice method that answers, with its results
	// and true, when the trace has no answer (NOT_SUPPORTED): the trace
	// header's static facts. Empty for none.
	Fallback string
}

// Arg is an argument of a method; each is an integer type and is written into
// the key.
type Arg struct{ Name, Type string }

// Field maps a result, or a field of one, to a field of the JSON type.
// Result is v0, v1, ... for the results in order, with a selector for a
// field of a structure result ("v0.Gpu").
type Field struct{ Result, JSON string }

// Methods is every table method, in the order the generated files hold them.
var Methods = []Method{
	{Name: "GetTemperature", Args: []Arg{{"s", "nvml.TemperatureSensors"}}, Results: []string{"uint32"}},
	{Name: "GetPowerUsage", Results: []string{"uint32"}},
	{Name: "GetTotalEnergyConsumption", Results: []string{"uint64"}},
	{Name: "GetUtilizationRates", Results: []string{"nvml.Utilization"},
		JSON: "utilJSON", Fields: []Field{{"v0.Gpu", "GPU"}, {"v0.Memory", "Memory"}}},
	{Name: "GetEncoderUtilization", Results: []string{"uint32", "uint32"},
		JSON: "codecJSON", Fields: []Field{{"v0", "Util"}, {"v1", "PeriodUs"}}},
	{Name: "GetDecoderUtilization", Results: []string{"uint32", "uint32"},
		JSON: "codecJSON", Fields: []Field{{"v0", "Util"}, {"v1", "PeriodUs"}}},
	{Name: "GetClockInfo", Args: []Arg{{"t", "nvml.ClockType"}}, Results: []string{"uint32"}},
	{Name: "GetMemoryInfo_v2", Results: []string{"nvml.Memory_v2"},
		JSON: "memoryJSON", Fields: []Field{{"v0.Total", "Total"}, {"v0.Reserved", "Reserved"}, {"v0.Free", "Free"}, {"v0.Used", "Used"}},
		Fallback: "staticMemory"},
	{Name: "GetTotalEccErrors", Args: []Arg{{"t", "nvml.MemoryErrorType"}, {"c", "nvml.EccCounterType"}}, Results: []string{"uint64"}},
	{Name: "GetRemappedRows", Results: []string{"int", "int", "bool", "bool"},
		JSON: "remappedJSON", Fields: []Field{{"v0", "Correctable"}, {"v1", "Uncorrectable"}, {"v2", "Pending"}, {"v3", "Failed"}}},
	{Name: "GetCurrentClocksEventReasons", Results: []string{"uint64"}},
	{Name: "GetViolationStatus", Args: []Arg{{"p", "nvml.PerfPolicyType"}}, Results: []string{"nvml.ViolationTime"},
		JSON: "violationJSON", Fields: []Field{{"v0.ReferenceTime", "Reference"}, {"v0.ViolationTime", "Violation"}}},
	{Name: "GetCurrPcieLinkGeneration", Results: []string{"int"}},
	{Name: "GetCurrPcieLinkWidth", Results: []string{"int"}},
	{Name: "GpmQueryDeviceSupport", Results: []string{"nvml.GpmSupport"},
		JSON: "gpmSupportJSON", Fields: []Field{{"v0.IsSupportedDevice", "Supported"}}},
	{Name: "GetMigMode", Results: []string{"int", "int"},
		JSON: "migModeJSON", Fields: []Field{{"v0", "Current"}, {"v1", "Pending"}}},
	{Name: "GetMaxMigDeviceCount", Results: []string{"int"}},
}

// ByHand are the gpu.Device methods written by hand in player.go and
// recorder.go, because a trace does not hold them as one answer under one
// key: the identity facts come from the trace header (the recorder passes
// them through; the collector puts them in the header), and GetFieldValues
// answers many keys in one call, each value with its own return. GPM's
// samples are opaque buffers: the trace keeps whether taking one succeeded,
// and the metrics NVML computed from two (gpm.go in package replay). A MIG
// device handle is kept as the facts the collector reads from it. The
// running processes are a list of structs (processes.go in package replay).
var ByHand = []string{"GetUUID", "GetName", "GetSerial", "GetMinorNumber", "GetPciInfo", "GetFieldValues",
	"GpmSampleGet", "GpmMigSampleGet", "GetMigDeviceHandleByIndex",
	"GetComputeRunningProcesses", "GetGraphicsRunningProcesses"}
