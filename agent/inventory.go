package agent

import (
	"bytes"
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
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
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

// CorruptInventoryError reports an inventory file that was unreadable, or
// held no GPU list, an empty one, a GPU without a UUID or the same UUID
// twice. It was moved aside (kept for inspection, never silently reset) and
// LoadInventory returned an empty inventory that the next GPU rounds
// rebuild. Until then a GPU that vanished before the restart is not known
// to be missing, which is why the agent should show this error.
type CorruptInventoryError struct {
	Path    string // the file as it was
	MovedTo string // where it is now; "" if it could not be moved
	Err     error  // what was wrong with it (and the move's failure, if any)
}

func (e *CorruptInventoryError) Error() string {
	if e.MovedTo == "" {
		return fmt.Sprintf("GPU inventory %s is corrupt (%v) and could not be moved aside; starting a new one", e.Path, e.Err)
	}
	return fmt.Sprintf("GPU inventory %s was corrupt (%v); moved to %s, starting a new one", e.Path, e.Err, e.MovedTo)
}

func (e *CorruptInventoryError) Unwrap() error { return e.Err }

// LoadInventory reads the inventory from dir. A missing file is an empty
// inventory; an empty or malformed one is moved aside and reported as a
// *CorruptInventoryError, with an empty inventory to rebuild.
func LoadInventory(dir string) (*Inventory, error) {
	path := filepath.Join(dir, InventoryFile)
	// A symlink, a FIFO or a device in its place is refused like bad JSON.
	b, err := hostfs.ReadFile(path, hostfs.LimitState)
	if errors.Is(err, fs.ErrNotExist) {
		return &Inventory{}, nil
	}
	perr := err
	var inv *Inventory
	if perr == nil {
		if inv, perr = parseInventory(b); perr == nil {
			return inv, nil
		}
	}
	cerr := &CorruptInventoryError{Path: path, Err: perr}
	aside, merr := statefile.MoveAside(path)
	if merr != nil {
		cerr.Err = fmt.Errorf("%w; moving it aside: %v", perr, merr)
	} else {
		cerr.MovedTo = aside
	}
	return &Inventory{}, cerr
}

// parseInventory decodes gpus.json strictly: the agent only ever writes a
// non-empty list of GPUs with distinct UUIDs, so anything else is damage.
func parseInventory(b []byte) (*Inventory, error) {
	var raw struct {
		GPUs    *[]InventoryGPU `json:"gpus"`
		Updated time.Time       `json:"updated"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if raw.GPUs == nil || len(*raw.GPUs) == 0 {
		return nil, errors.New("no GPUs listed")
	}
	seen := make(map[string]bool, len(*raw.GPUs))
	for i, g := range *raw.GPUs {
		if g.UUID == "" {
			return nil, fmt.Errorf("gpus[%d] has no uuid", i)
		}
		if seen[g.UUID] {
			return nil, fmt.Errorf("gpus[%d]: uuid %s is listed twice", i, g.UUID)
		}
		seen[g.UUID] = true
	}
	return &Inventory{GPUs: *raw.GPUs, Updated: raw.Updated}, nil
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
