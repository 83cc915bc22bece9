package gpu

import (
	"strconv"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/attribution"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Status says why a field has no value. The zero value means it has one.
type Status uint8

const (
	StatusOK           Status = iota
	StatusNotSupported        // this GPU or driver does not have the field: never exported, not zero
	StatusLost                // NVML said GPU_IS_LOST
	StatusTimeout             // NVML timed out, or the GPU's sample did not finish in time
	StatusError               // any other NVML error
	StatusNoSource            // no backend here can read it (profiling without GPM: pre-Hopper GPU or old driver)
	StatusWarmingUp           // GPM has its first sample; the value comes with the next round
	StatusBusy                // GPM's counters are taken by another profiler; retried on a backoff
	StatusPerInstance         // the GPU is in MIG mode: the field comes per GPU instance
	StatusPaused              // profiling is paused (Options.ProfilingPaused)
)

var statusNames = [...]string{"ok", "not_supported", "gpu_lost", "timeout", "error", "no_source",
	"warming_up", "profiler_busy", "per_mig_instance", "paused"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "error"
}

// StatusOf maps an NVML return code to a field status.
func StatusOf(ret nvml.Return) Status {
	switch ret {
	case nvml.SUCCESS:
		return StatusOK
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND, nvml.ERROR_NO_DATA:
		return StatusNotSupported
	case nvml.ERROR_GPU_IS_LOST:
		return StatusLost
	case nvml.ERROR_TIMEOUT:
		return StatusTimeout
	}
	return StatusError
}

// Info is what does not change while a GPU stays on the bus.
type Info struct {
	Index         int    `json:"index"`
	UUID          string `json:"uuid"`
	Name          string `json:"name"`
	PCIBusID      string `json:"pci_bus_id"` // dcgm-exporter's spelling: 00000000:18:00.0
	Serial        string `json:"serial,omitempty"`
	Minor         int    `json:"minor"` // /dev/nvidiaN
	MemoryTotalMB uint64 `json:"memory_total_mib,omitempty"`
}

// Device is the dcgm-exporter "device" label: nvidia<minor>.
func (i Info) DeviceName() string { return "nvidia" + strconv.Itoa(i.Minor) }

// Sample is one reading of one GPU. Values and Status are indexed like the
// collector's Fields; a value counts only where its Status is StatusOK.
// A Sample is never changed once published.
type Sample struct {
	GPU    Info
	Time   time.Time
	Values []float64
	Status []Status
	// Lost is set when NVML said GPU_IS_LOST for the GPU as a whole.
	Lost bool
	// Err is the first error other than "not supported", for /v1/gpus.
	Err string
	// Instances are the GPU's MIG GPU instances that have profiling values
	// (the PerInstance fields), by GPU-instance id; none outside MIG mode.
	Instances []Instance
	// Processes are the processes using the GPU (NVML's compute and
	// graphics lists, merged by pid), most memory first, at most
	// MaxProcesses.
	Processes []Process

	newlyUnsupported []string // fields first found unsupported in this sample
}

// Value returns field i's value and whether it has one.
func (s *Sample) Value(i int) (float64, bool) {
	if i < 0 || i >= len(s.Values) || s.Status[i] != StatusOK {
		return 0, false
	}
	return s.Values[i], true
}

// Instance is one MIG GPU instance's profiling reading, labelled as
// dcgm-exporter labels it: GPU_I_ID (NVML's GPU-instance id) and
// GPU_I_PROFILE (the profile name, "1g.10gb"). Values and Status are indexed
// like Fields; only PerInstance fields have a value.
type Instance struct {
	ID      int       `json:"gpu_instance_id"`
	Profile string    `json:"profile"`
	Values  []float64 `json:"-"`
	Status  []Status  `json:"-"`
}

// Value returns field i's value for the instance and whether it has one.
func (in *Instance) Value(i int) (float64, bool) {
	if i < 0 || i >= len(in.Values) || in.Status[i] != StatusOK {
		return 0, false
	}
	return in.Values[i], true
}

// Process is one process using a GPU.
type Process struct {
	PID        uint32 `json:"pid"`
	UsedMemory uint64 `json:"used_memory_bytes"`
	Compute    bool   `json:"compute,omitempty"`
	Graphics   bool   `json:"graphics,omitempty"`
	// Owner is the job or pod the device itself reported (a replayed
	// trace carries the owners of the host it was recorded on); empty on
	// a live host, where the agent reads it from /proc.
	Owner attribution.Owner `json:"owner"`
}

// OwnerReader is implemented by devices that know whose their processes
// are: the replay player (from the trace) and the recorder.
type OwnerReader interface {
	ProcessOwners(pids []uint32) (map[uint32]attribution.Owner, nvml.Return)
}

// MaxProcesses bounds the processes kept per GPU (and their series): the
// ones with the most memory.
const MaxProcesses = 16
