package dcgm

import (
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// Field is one profiling field the source watches.
type Field struct {
	Name string // dcgm-exporter's metric name
	ID   uint16 // DCGM field id
	Help string
}

// extraFields are the profiling fields DCGM serves beyond the GPU table's
// rows. Ratios are 0..1 and byte rates bytes per second as DCGM gives them,
// which is dcgm-exporter's unit: no conversion. Help is dcgm-exporter's
// (default-counters.csv) or, where it has none, DCGM's (dcgm_fields.h).
var extraFields = []Field{
	{Name: "DCGM_FI_PROF_PIPE_FP64_ACTIVE", ID: 1006, Help: "Ratio of cycles the fp64 pipes are active."},
	{Name: "DCGM_FI_PROF_PIPE_FP32_ACTIVE", ID: 1007, Help: "Ratio of cycles the fp32 pipes are active."},
	{Name: "DCGM_FI_PROF_PIPE_FP16_ACTIVE", ID: 1008, Help: "Ratio of cycles the fp16 pipes are active."},
	{Name: "DCGM_FI_PROF_NVLINK_TX_BYTES", ID: 1011, Help: "The rate of data transmitted over NVLink, header and payload, in bytes per second."},
	{Name: "DCGM_FI_PROF_NVLINK_RX_BYTES", ID: 1012, Help: "The rate of data received over NVLink, header and payload, in bytes per second."},
}

// Fields are the profiling fields: the GPU table's profiling rows (the same
// names and help the GPM source and replays fill), then extraFields that
// the table lacks.
func Fields() []Field {
	var out []Field
	seen := map[uint16]bool{}
	for _, f := range gpu.Fields {
		if f.Profiling {
			out = append(out, Field{Name: f.Name, ID: uint16(f.DCGMID), Help: f.Help})
			seen[uint16(f.DCGMID)] = true
		}
	}
	for _, f := range extraFields {
		if !seen[f.ID] {
			out = append(out, f)
		}
	}
	return out
}
