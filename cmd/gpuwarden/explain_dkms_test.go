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
		if want := map[string]int{"warning": 1, "critical": 2}[tc.level]; exitCodeOf(err) != want {
			t.Errorf("explain of %q: exit %d (%v), want %d", tc.in, exitCodeOf(err), err, want)
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

// A version mismatch says which side is older and how to fix it without a
// reboot; a DKMS entry says which kernel it concerns and what that means for
// the next boot.
func TestExplainSaysWhichSideIsOlderAndWhichKernel(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"the kernel's two-line API mismatch",
			"NVRM: API mismatch: the client has the version 550.54.15, but\nNVRM: this kernel module has the version 535.154.05.  Please\n",
			"kernel module 535.154.05, user-space library 550.54.15: the module is older"},
		{"nvidia-smi beside the version banner",
			"NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.124.06  Wed Feb 26 19:41:04 UTC 2025\nFailed to initialize NVML: Driver/library version mismatch\nNVML library version: 550.54\n",
			"kernel module 570.124.06, user-space library 550.54: the library is older"},
		{"nvidia-smi alone", "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 570.124\n",
			"user-space library 570.124; the loaded module's version is not in the input"},
		{"a failed build", "Error! Bad return status for module build on kernel: 6.1.0-20-amd64 (x86_64)\n",
			"dkms autoinstall -k 6.1.0-20-amd64"},
		{"built, not installed", "nvidia/535.104.05, 6.1.0-20-amd64, x86_64: built\n",
			"if the next boot starts 6.1.0-20-amd64 it comes up without the module and without GPUs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := runExplain(t, tc.in)
			if !strings.Contains(out, tc.want) {
				t.Errorf("the report does not say %q:\n%s", tc.want, out)
			}
			if strings.Contains(tc.name, "mismatch") && !strings.Contains(out, "modprobe -r nvidia_uvm") {
				t.Errorf("no reload without a reboot:\n%s", out)
			}
		})
	}
	// Two entries of one module are two findings, not one counted twice.
	out, _ := runExplain(t, "nvidia/550.54.15, 6.1.0-28-amd64, x86_64: built\nnvidia/550.54.15, 6.1.0-29-amd64, x86_64: built\n")
	if strings.Count(out, "DKMS_STATUS [warning], once") != 2 {
		t.Errorf("two DKMS entries:\n%s", out)
	}
}
