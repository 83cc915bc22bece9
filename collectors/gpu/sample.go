package gpu

import (
	"strconv"
	"time"

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
	StatusNoSource            // no backend here can read it (profiling fields without DCGM)
)

var statusNames = [...]string{"ok", "not_supported", "gpu_lost", "timeout", "error", "no_source"}

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

	newlyUnsupported []string // fields first found unsupported in this sample
}

// Value returns field i's value and whether it has one.
func (s *Sample) Value(i int) (float64, bool) {
	if i < 0 || i >= len(s.Values) || s.Status[i] != StatusOK {
		return 0, false
	}
	return s.Values[i], true
}
