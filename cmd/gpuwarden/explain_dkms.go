package main

import (
	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
	"github.com/gpuwarden/gpuwarden/dkms"
)

// `gpuwarden explain --lines` also understands `dkms status` output, dkms
// errors, the /proc/driver/nvidia/version banner and NVML's mismatch
// message; the parsers live in dkms.
func init() { explain.Register("dkms", classifyDKMSLine) }

func classifyDKMSLine(line string) (map[string]any, bool) {
	fields, ok := dkms.ClassifyLine(line)
	if !ok {
		return nil, false
	}
	out := make(map[string]any, len(fields))
	for k, v := range fields {
		out[k] = v
	}
	return out, true
}
