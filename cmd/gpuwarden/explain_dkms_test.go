package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
)

// The registered classifier answers through explain's own --lines writer.
func TestExplainLinesUnderstandsDKMSAndDriverLines(t *testing.T) {
	in := strings.Join([]string{
		"nvidia/535.104.05, 6.5.0-1-amd64, x86_64: installed (WARNING! Diff between built and installed module!)",
		"nvidia, 535.104.05: added",
		"Error! Bad return status for module build on kernel: 6.5.0-1-amd64 (x86_64)",
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023",
	}, "\n")
	var out bytes.Buffer
	if err := explain.Lines(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	dec := json.NewDecoder(&out)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	want := []map[string]any{
		{"kind": "dkms_status", "module": "nvidia", "module_version": "535.104.05", "kernel": "6.5.0-1-amd64", "arch": "x86_64", "state": "installed", "warning": "(WARNING! Diff between built and installed module!)"},
		{"kind": "dkms_status", "module": "nvidia", "module_version": "535.104.05", "kernel": "", "arch": "", "state": "added"},
		{"kind": "dkms_error", "module": "", "state": ""},
		{"kind": "driver_version", "driver_version": "535.104.05", "flavor": "proprietary", "arch": "x86_64"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d objects, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v (%v)", i+1, k, got[i][k], v, got[i])
			}
		}
	}
}

// The report, which is what people read, is never "ok" for the most common
// broken node: nvidia-smi's or the container toolkit's version mismatch,
// or dkms saying a module failed or is not installed for a kernel.
func TestExplainReportNamesUserSpaceDriverTrouble(t *testing.T) {
	for _, tc := range []struct{ in, level, says string }{
		{"Failed to initialize NVML: Driver/library version mismatch\n", "critical", "api_mismatch"},
		{"Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 570.124\n", "critical", "api_mismatch"},
		{"nvidia-container-cli: initialization error: nvml error: driver/library version mismatch\n", "critical", "api_mismatch"},
		{"Error! Bad return status for module build on kernel: 6.1.0-20-amd64 (x86_64)\n", "critical", "DKMS_ERROR"},
		{"nvidia/535.104.05, 6.1.0-20-amd64, x86_64: built\n", "warning", "DKMS_STATUS"},
	} {
		out, err := runExplain(t, tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "Overall: "+tc.level) || !strings.Contains(out, tc.says) {
			t.Errorf("explain of %q:\n%s", tc.in, out)
		}
	}
	out, _ := runExplain(t, "nvidia/535.104.05, 6.1.0-20-amd64, x86_64: installed\n")
	if !strings.Contains(out, "Overall: ok") {
		t.Errorf("an installed module is not a problem:\n%s", out)
	}
}
