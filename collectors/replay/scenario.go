package replay

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
)

// Scenario describes a simulated node (collectors/replay/simulator) for
// `gpuwarden record --backend mock`:
// go-nvml's DGX H100 mock with telemetry that follows these curves and
// incidents. Times are seconds from the start.
type Scenario struct {
	Hostname string    `yaml:"hostname"`
	Duration float64   `yaml:"duration"`
	Interval float64   `yaml:"interval"`
	Seed     int64     `yaml:"seed"`
	BusIDs   []string  `yaml:"bus_ids"`
	Load     LoadCurve `yaml:"load"`
	Thermal  []Window  `yaml:"thermal"`
	ECC      []ECCHit  `yaml:"ecc"`
	Lost     []AtGPU   `yaml:"lost"`
	// Memory is a GPU's framebuffer in use, in percent over time, from the
	// curve's first point on; before it (and for the other GPUs) the used
	// memory follows the load.
	Memory map[int][][2]float64 `yaml:"memory"`
	// NotSupported lists fields a GPU does not have, by dcgm-exporter name.
	NotSupported []FieldsOff `yaml:"not_supported"`
	Kmsg         []KmsgLine  `yaml:"kmsg"`
	Hangs        []Hang      `yaml:"hangs"`
	// MIG partitions GPUs into GPU instances, each profiled on its own.
	MIG []MIGGPU `yaml:"mig"`
	// EBPF are records of the eBPF source's programs: OOM kills, PCIe
	// AER, NVIDIA module loads and unloads.
	EBPF []EBPFEvent `yaml:"ebpf"`
	// Host is the node's kernel, driver and DKMS state (scenario_host.go).
	Host *ScenarioHost `yaml:"host"`
}

// EBPFEvent is one record of the eBPF source's programs, as its kernel
// program would write it, at At seconds. Kind is one of
//
//	oom          pid (the victim: 31337 and 31338 are the demo job's GPU
//	             processes), comm, uid, memcg (its memory cgroup's path)
//	aer          gpu (the device: that GPU's bus id), severity (corrected,
//	             uncorrected or fatal), status (the error status register)
//	module_load  module (its name: nvidia, nvidia_uvm, ...)
//	module_free  module
type EBPFEvent struct {
	At       float64 `yaml:"at"`
	Kind     string  `yaml:"kind"`
	PID      uint32  `yaml:"pid"`
	Comm     string  `yaml:"comm"`
	UID      uint32  `yaml:"uid"`
	Memcg    string  `yaml:"memcg"`
	GPU      int     `yaml:"gpu"`
	Severity string  `yaml:"severity"`
	Status   uint32  `yaml:"status"`
	Module   string  `yaml:"module"`
}

// validate checks what the kernel's record could hold: a comm of at most
// 15 bytes, a module name of at most 55 (MODULE_NAME_LEN less one).
func (e EBPFEvent) validate() error {
	switch e.Kind {
	case "oom":
		if e.PID == 0 || e.Comm == "" || len(e.Comm) > 15 || !strings.HasPrefix(e.Memcg, "/") || len(e.Memcg) > MaxMemcgBytes {
			return errors.New("oom: want pid > 0, a comm of 1 to 15 bytes and a memcg path starting with /")
		}
	case "aer":
		if e.GPU < 0 || e.GPU > 7 {
			return fmt.Errorf("aer: gpu %d is not 0..7", e.GPU)
		}
		if _, ok := ebpf.AERSeverityCode(e.Severity); !ok {
			return fmt.Errorf("aer: severity %q: want corrected, uncorrected or fatal", e.Severity)
		}
	case "module_load", "module_free":
		if e.Module == "" || len(e.Module) > 55 {
			return fmt.Errorf("%s: want a module name of 1 to 55 bytes", e.Kind)
		}
	default:
		return fmt.Errorf("kind %q: want oom, aer, module_load or module_free", e.Kind)
	}
	return nil
}

// record is the event as the program's ring-buffer record, stamped with
// the scenario's time as the boot clock, and the memcg path the trace keeps
// beside it. busID is the scenario's GPU's bus id, for an aer.
func (e EBPFEvent) record(busID string) (ebpf.Record, string) {
	r := ebpf.Record{Boottime: time.Duration(e.At * float64(time.Second))}
	switch e.Kind {
	case "oom":
		r.Kind, r.PID, r.TID, r.UID, r.Comm = ebpf.RecordOOM, e.PID, e.PID, e.UID, e.Comm
		// The program reads the cgroup's kernfs id (its directory's inode)
		// and leaf name; the id here is made up, and stable.
		h := fnv.New64a()
		h.Write([]byte(e.Memcg))
		r.CgroupID, r.Name = h.Sum64()|1, path.Base(e.Memcg)
		return r, e.Memcg
	case "aer":
		sev, _ := ebpf.AERSeverityCode(e.Severity)
		r.Kind, r.Name, r.Severity, r.Status = ebpf.RecordAER, strings.ToLower(busID), sev, e.Status
	case "module_load":
		r.Kind, r.Name = ebpf.RecordModuleLoad, e.Module
	case "module_free":
		r.Kind, r.Name = ebpf.RecordModuleFree, e.Module
	}
	return r, ""
}

// MIGGPU is a GPU in MIG mode and its GPU instances.
type MIGGPU struct {
	GPU       int           `yaml:"gpu"`
	Instances []MIGInstance `yaml:"instances"`
}

// MIGInstance is one GPU instance: NVML's GPU-instance id, its profile name
// ("3g.40gb") and its load in percent over time (the GPU's when empty).
type MIGInstance struct {
	ID      int          `yaml:"id"`
	Profile string       `yaml:"profile"`
	Load    [][2]float64 `yaml:"load"`
}

// Size is the instance's profile read as its slices and GB ("3g.40gb": 3
// and 40); LoadScenario has checked it.
func (in MIGInstance) Size() (slices uint32, gb int) {
	slices, gb, _ = parseProfile(in.Profile)
	return slices, gb
}

// parseProfile reads "3g.40gb" as 3 slices and 40 GB.
func parseProfile(p string) (uint32, int, error) {
	var slices uint32
	var gb int
	if _, err := fmt.Sscanf(p, "%dg.%dgb", &slices, &gb); err != nil || slices == 0 || slices > 7 || gb <= 0 {
		return 0, 0, fmt.Errorf("profile %q: want <slices>g.<GB>gb, e.g. 3g.40gb", p)
	}
	return slices, gb, nil
}

// LoadCurve is GPU utilisation in percent over time, as [seconds, percent]
// points joined by straight lines, for every GPU unless overridden.
type LoadCurve struct {
	Default [][2]float64         `yaml:"default"`
	GPUs    map[int][][2]float64 `yaml:"gpus"`
}

// Window is a thermal slowdown on one GPU.
type Window struct {
	GPU  int     `yaml:"gpu"`
	From float64 `yaml:"from"`
	To   float64 `yaml:"to"`
}

// ECCHit adds ECC errors to one GPU at one time.
type ECCHit struct {
	GPU         int     `yaml:"gpu"`
	At          float64 `yaml:"at"`
	Corrected   uint64  `yaml:"corrected"`
	Uncorrected uint64  `yaml:"uncorrected"`
	// RemapFailure: the GPU had no spare row left for the failing one.
	RemapFailure bool `yaml:"remap_failure"`
}

// AtGPU names a GPU and a time.
type AtGPU struct {
	GPU int     `yaml:"gpu"`
	At  float64 `yaml:"at"`
}

// FieldsOff is a set of fields one GPU answers NOT_SUPPORTED for.
type FieldsOff struct {
	GPU    int      `yaml:"gpu"`
	Fields []string `yaml:"fields"`
}

// KmsgLine is a kernel-log line; {pci} in Text becomes the GPU's bus id as
// the driver prints it in Xid lines (0000:18:00).
type KmsgLine struct {
	At       float64 `yaml:"at"`
	GPU      int     `yaml:"gpu"`
	Priority int     `yaml:"priority"`
	Text     string  `yaml:"text"`
}

// Hang blocks NVML for Seconds (-1: forever) from At; GPU -1 means every call.
type Hang struct {
	At      float64 `yaml:"at"`
	GPU     int     `yaml:"gpu"`
	Seconds float64 `yaml:"seconds"`
}

// LoadScenario reads a scenario file strictly: an unknown key is an error
// with its line.
func LoadScenario(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

func (s *Scenario) validate() error {
	if s.Duration <= 0 {
		return errors.New("duration: must be > 0 seconds")
	}
	if s.Interval <= 0 || s.Interval > s.Duration {
		return errors.New("interval: must be > 0 and at most the duration")
	}
	if len(s.Load.Default) == 0 {
		return errors.New("load.default: needs at least one [seconds, percent] point")
	}
	gpuOK := func(g int) bool { return g >= 0 && g < 8 }
	for i, w := range s.Thermal {
		if !gpuOK(w.GPU) || w.To <= w.From {
			return fmt.Errorf("thermal[%d]: want gpu 0..7 and to > from", i)
		}
	}
	for i, e := range s.ECC {
		if !gpuOK(e.GPU) {
			return fmt.Errorf("ecc[%d]: gpu %d is not 0..7", i, e.GPU)
		}
	}
	for g, c := range s.Memory {
		if !gpuOK(g) || len(c) == 0 {
			return fmt.Errorf("memory[%d]: want gpu 0..7 and at least one [seconds, percent] point", g)
		}
		for _, pt := range c {
			if pt[1] < 0 || pt[1] > 100 {
				return fmt.Errorf("memory[%d]: %v%% is not a percentage", g, pt[1])
			}
		}
	}
	for i, l := range s.Lost {
		if !gpuOK(l.GPU) {
			return fmt.Errorf("lost[%d]: gpu %d is not 0..7", i, l.GPU)
		}
	}
	for i, k := range s.Kmsg {
		if !gpuOK(k.GPU) || k.Text == "" {
			return fmt.Errorf("kmsg[%d]: want gpu 0..7 and text", i)
		}
	}
	for i, h := range s.Hangs {
		if h.GPU < -1 || h.GPU > 7 || (h.Seconds <= 0 && h.Seconds != -1) {
			return fmt.Errorf("hangs[%d]: want gpu -1..7 and seconds > 0 or -1", i)
		}
	}
	for i, m := range s.MIG {
		if !gpuOK(m.GPU) || len(m.Instances) == 0 || len(m.Instances) > 7 {
			return fmt.Errorf("mig[%d]: want gpu 0..7 and 1 to 7 instances", i)
		}
		ids := map[int]bool{}
		for j, in := range m.Instances {
			if _, _, err := parseProfile(in.Profile); err != nil {
				return fmt.Errorf("mig[%d].instances[%d]: %w", i, j, err)
			}
			if in.ID < 0 || ids[in.ID] {
				return fmt.Errorf("mig[%d].instances[%d]: id %d is negative or repeated", i, j, in.ID)
			}
			ids[in.ID] = true
		}
	}
	for i, e := range s.EBPF {
		if err := e.validate(); err != nil {
			return fmt.Errorf("ebpf[%d]: %w", i, err)
		}
	}
	if s.Host != nil {
		if err := s.Host.validate(); err != nil {
			return err
		}
	}
	if len(s.BusIDs) != 0 && len(s.BusIDs) != 8 {
		return fmt.Errorf("bus_ids: want 8, got %d", len(s.BusIDs))
	}
	return nil
}
