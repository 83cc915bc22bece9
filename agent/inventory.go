package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/gpuwarden/gpuwarden/agent/statefile"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// InventoryFile is the name, in the state directory, of the GPUs this host
// has had. It is how the agent knows a GPU is missing after a restart or a
// reboot: counting only what NVML enumerates now, a GPU that fell off the
// bus before the agent started would simply not exist.
const InventoryFile = "gpus.json"

// Inventory is the set of GPUs ever seen on this host, by UUID.
type Inventory struct {
	GPUs    []InventoryGPU `json:"gpus"`
	Updated time.Time      `json:"updated"`
}

// InventoryGPU is one GPU the host has had.
type InventoryGPU struct {
	UUID     string `json:"uuid"`
	PCIBusID string `json:"pci_bus_id"`
	Name     string `json:"name"`
}

// LoadInventory reads the inventory from dir. A missing file is an empty
// inventory; a corrupt one is moved aside (never silently reset) and the
// error says where it went.
func LoadInventory(dir string) (*Inventory, error) {
	path := filepath.Join(dir, InventoryFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Inventory{}, nil
	}
	if err != nil {
		return &Inventory{}, fmt.Errorf("GPU inventory: %w", err)
	}
	var inv Inventory
	if err := json.Unmarshal(b, &inv); err != nil {
		aside, merr := statefile.MoveAside(path)
		if merr != nil {
			return &Inventory{}, fmt.Errorf("GPU inventory %s is corrupt (%v) and could not be moved aside: %w", path, err, merr)
		}
		return &Inventory{}, fmt.Errorf("GPU inventory %s was corrupt (%v); moved to %s, starting a new one", path, err, aside)
	}
	return &inv, nil
}

// Add records the GPUs of a round and reports whether the inventory grew.
func (inv *Inventory) Add(gpus []gpu.Info, now time.Time) bool {
	known := make(map[string]bool, len(inv.GPUs))
	for _, g := range inv.GPUs {
		known[g.UUID] = true
	}
	grew := false
	for _, g := range gpus {
		if g.UUID != "" && !known[g.UUID] {
			inv.GPUs = append(inv.GPUs, InventoryGPU{UUID: g.UUID, PCIBusID: g.PCIBusID, Name: g.Name})
			known[g.UUID] = true
			grew = true
		}
	}
	if grew {
		sort.Slice(inv.GPUs, func(i, j int) bool { return inv.GPUs[i].PCIBusID < inv.GPUs[j].PCIBusID })
		inv.Updated = now
	}
	return grew
}

// Missing returns the inventory's GPUs that are not among gpus.
func (inv *Inventory) Missing(gpus []gpu.Info) []InventoryGPU {
	present := make(map[string]bool, len(gpus))
	for _, g := range gpus {
		present[g.UUID] = true
	}
	var out []InventoryGPU
	for _, g := range inv.GPUs {
		if !present[g.UUID] {
			out = append(out, g)
		}
	}
	return out
}

// Save writes the inventory atomically.
func (inv *Inventory) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	b, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	return statefile.Write(dir, InventoryFile, append(b, '\n'))
}
