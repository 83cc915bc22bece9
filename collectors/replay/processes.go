package replay

import (
	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuwarden/gpuwarden/collectors/attribution"
)

// procJSON is one running process as a trace keeps it.
type procJSON struct {
	PID    uint32 `json:"pid"`
	Memory uint64 `json:"used_memory"`
	GI     uint32 `json:"gpu_instance_id,omitempty"`
	CI     uint32 `json:"compute_instance_id,omitempty"`
}

const (
	keyComputeProcs  = "GetComputeRunningProcesses()"
	keyGraphicsProcs = "GetGraphicsRunningProcesses()"
)

func toJSON(ps []nvml.ProcessInfo) []procJSON {
	out := make([]procJSON, len(ps))
	for i, p := range ps {
		out[i] = procJSON{PID: p.Pid, Memory: p.UsedGpuMemory, GI: p.GpuInstanceId, CI: p.ComputeInstanceId}
	}
	return out
}

func fromJSON(ps []procJSON) []nvml.ProcessInfo {
	out := make([]nvml.ProcessInfo, len(ps))
	for i, p := range ps {
		out[i] = nvml.ProcessInfo{Pid: p.PID, UsedGpuMemory: p.Memory, GpuInstanceId: p.GI, ComputeInstanceId: p.CI}
	}
	return out
}

func (d *playerDevice) GetComputeRunningProcesses() ([]nvml.ProcessInfo, nvml.Return) {
	var ps []procJSON
	ret := d.p.answer(d.i, keyComputeProcs, &ps)
	return fromJSON(ps), ret
}

func (d *playerDevice) GetGraphicsRunningProcesses() ([]nvml.ProcessInfo, nvml.Return) {
	var ps []procJSON
	ret := d.p.answer(d.i, keyGraphicsProcs, &ps)
	return fromJSON(ps), ret
}

func (d *recDevice) GetComputeRunningProcesses() ([]nvml.ProcessInfo, nvml.Return) {
	ps, ret := d.d.GetComputeRunningProcesses()
	d.r.note(d.i, keyComputeProcs, toJSON(ps), ret)
	return ps, ret
}

func (d *recDevice) GetGraphicsRunningProcesses() ([]nvml.ProcessInfo, nvml.Return) {
	ps, ret := d.d.GetGraphicsRunningProcesses()
	d.r.note(d.i, keyGraphicsProcs, toJSON(ps), ret)
	return ps, ret
}

// keyOwners keeps whose each process is (the job or pod), as the recording
// host's /proc said, so a replayed node names them too.
const keyOwners = "ProcessOwners()"

// ProcessOwners answers from the trace.
func (d *playerDevice) ProcessOwners([]uint32) (map[uint32]attribution.Owner, nvml.Return) {
	var owners map[uint32]attribution.Owner
	ret := d.p.answer(d.i, keyOwners, &owners)
	return owners, ret
}

// ProcessOwners asks the recorder's Owners (the recording host's /proc, or
// a scenario's jobs) and notes the answer; without one, nothing is known.
func (d *recDevice) ProcessOwners(pids []uint32) (map[uint32]attribution.Owner, nvml.Return) {
	if d.r.Owners == nil {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	owners := map[uint32]attribution.Owner{}
	for _, pid := range pids {
		if o := d.r.Owners(pid); o.Scheduler() != "" {
			owners[pid] = o
		}
	}
	d.r.note(d.i, keyOwners, owners, nvml.SUCCESS)
	return owners, nvml.SUCCESS
}
