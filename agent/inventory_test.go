package agent

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

func roundOf(infos ...gpu.Info) gpu.Round {
	r := gpu.Round{Time: time.Now(), DriverVersion: "550.54.15"}
	for _, in := range infos {
		r.Samples = append(r.Samples, &gpu.Sample{GPU: in, Time: r.Time,
			Values: make([]float64, len(gpu.Fields)), Status: make([]gpu.Status, len(gpu.Fields))})
	}
	return r
}

// A GPU that was on the host and is gone after a restart is missing by
// name, though NVML no longer enumerates it and the first count seen is 7.
func TestAGPUGoneAcrossARestartIsMissingByName(t *testing.T) {
	dir := t.TempDir()
	var infos []gpu.Info
	for i := range 8 {
		infos = append(infos, gpu.Info{Index: i, UUID: "GPU-" + string(rune('a'+i)), Name: "NVIDIA H100 80GB HBM3",
			PCIBusID: "00000000:1" + string(rune('0'+i)) + ":00.0"})
	}
	first := NewState("h", 0, time.Hour, time.Now)
	inv, err := LoadInventory(dir)
	if err != nil {
		t.Fatal(err)
	}
	first.KeepInventory(inv, dir, quiet)
	first.ApplyRound(roundOf(infos...))
	if first.Snapshot().Health.Level != event.OK {
		t.Fatalf("8 of 8: %+v", first.Snapshot().Health)
	}

	// Restart: GPU 3 fell off the bus meanwhile; NVML enumerates 7.
	second := NewState("h", 0, time.Hour, time.Now)
	inv, err = LoadInventory(dir)
	if err != nil || len(inv.GPUs) != 8 {
		t.Fatalf("inventory after restart: %v, %+v", err, inv)
	}
	second.KeepInventory(inv, dir, quiet)
	rest := append(append([]gpu.Info{}, infos[:3]...), infos[4:]...)
	second.ApplyRound(roundOf(rest...))
	h := second.Snapshot().Health
	if h.Level != event.Critical || second.Snapshot().GPUsExpected != 8 {
		t.Fatalf("health %+v, expected %d", h, second.Snapshot().GPUsExpected)
	}
	if !strings.Contains(strings.Join(h.Reasons, "\n"), "GPU-d (00000000:13:00.0) was on this host and is not visible now") {
		t.Errorf("reasons do not name the missing GPU: %q", h.Reasons)
	}
}

func TestACorruptInventoryIsMovedAsideNotLost(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, InventoryFile), []byte("{not json"), 0o644)
	inv, err := LoadInventory(dir)
	if err == nil || !strings.Contains(err.Error(), "moved to") || len(inv.GPUs) != 0 {
		t.Fatalf("err %v, inv %+v", err, inv)
	}
	moved, _ := filepath.Glob(filepath.Join(dir, InventoryFile+".corrupt-*"))
	if len(moved) != 1 {
		t.Fatalf("corrupt file not kept aside: %v", moved)
	}
	if b, _ := os.ReadFile(moved[0]); string(b) != "{not json" {
		t.Errorf("moved file content %q", b)
	}
}

func TestAnEmptyOrMalformedInventoryIsCorrupt(t *testing.T) {
	good := `{"gpus":[{"uuid":"GPU-a","pci_bus_id":"00000000:18:00.0","name":"H100"}],"updated":"2026-01-01T00:00:00Z"}`
	cases := map[string]string{
		"null":           "null",
		"empty object":   "{}",
		"empty list":     `{"gpus": []}`,
		"missing uuid":   `{"gpus":[{"pci_bus_id":"00000000:18:00.0"}]}`,
		"duplicate uuid": `{"gpus":[{"uuid":"GPU-a"},{"uuid":"GPU-a"}]}`,
		"trailing data":  good + "\n{}",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, InventoryFile), []byte(content), 0o644)
			inv, err := LoadInventory(dir)
			var corrupt *CorruptInventoryError
			if !errors.As(err, &corrupt) || inv == nil || len(inv.GPUs) != 0 {
				t.Fatalf("err %v inv %+v, want *CorruptInventoryError and an empty inventory", err, inv)
			}
			if b, rerr := os.ReadFile(corrupt.MovedTo); rerr != nil || string(b) != content {
				t.Errorf("moved file %s: %v %q", corrupt.MovedTo, rerr, b)
			}
			if _, serr := os.Stat(filepath.Join(dir, InventoryFile)); !errors.Is(serr, fs.ErrNotExist) {
				t.Errorf("the corrupt file is still in place: %v", serr)
			}
		})
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, InventoryFile), []byte(good), 0o644)
	inv, err := LoadInventory(dir)
	if err != nil || len(inv.GPUs) != 1 || inv.GPUs[0].UUID != "GPU-a" {
		t.Fatalf("valid file: %v %+v", err, inv)
	}
}
