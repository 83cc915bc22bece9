package dcgm

import (
	"context"
	"time"
)

// Library is the part of DCGM the source uses. FromGoDCGM adapts go-dcgm to
// it; tests pass a fake. Nothing else in gpuwarden calls DCGM, and the
// source calls nothing here but Init until an Init has succeeded (see guard).
type Library interface {
	// Init starts an embedded hostengine (address "") or connects to the
	// one at address: host:port, or a unix socket path.
	Init(address string) error
	Shutdown() error
	// Devices are the GPUs DCGM supports.
	Devices() ([]Device, error)
	// ProfilingFields are the profiling field ids DCGM's profiling module
	// serves for the GPU; an error when the module is not loaded or the
	// GPU cannot profile.
	ProfilingFields(gpu uint) ([]uint16, error)
	// WatchProfiling watches fields on gpus every interval until the
	// watch is closed.
	WatchProfiling(gpus []uint, fields []uint16, every time.Duration) (Watch, error)
	// WatchHealth turns DCGM's health watches on for gpus.
	WatchHealth(gpus []uint) (HealthWatch, error)
	// Policies delivers DCGM's policy violations until ctx ends.
	Policies(ctx context.Context, gpus []uint) (<-chan Violation, error)
}

// Device is one GPU as DCGM numbers it.
type Device struct {
	ID       uint
	UUID     string
	PCIBusID string
}

// Watch is a running watch of profiling fields.
type Watch interface {
	// Latest are the fields' newest values on gpu.
	Latest(gpu uint) ([]Value, error)
	// Close stops watching and releases the profiling counters.
	Close() error
}

// Value is one field's newest value; Blank when DCGM has none (not yet
// sampled, paused, not supported).
type Value struct {
	Field uint16
	Blank bool
	Value float64
}

// HealthWatch is a running set of DCGM health watches.
type HealthWatch interface {
	Check() ([]Incident, error)
	Close() error
}

// Incident is one health-check result that is not a pass.
type Incident struct {
	GPU     uint   // DCGM's GPU id
	System  string // PCIE, NVLINK, MEM, THERMAL, POWER, INFOROM, DRIVER, ...
	Fail    bool   // DCGM_HEALTH_RESULT_FAIL; a warning otherwise
	Code    uint   // the DCGM_FR_* code
	Message string
}

// Violation is one policy violation DCGM reported.
type Violation struct {
	Condition string // go-dcgm's name: "XID Error", "Double-bit ECC error", ...
	GPU       uint
	HasGPU    bool
	Time      time.Time
	Xid       int               // for an XID violation
	Fields    map[string]string // the violation's data, as text
}
