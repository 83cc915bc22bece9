// Package replay records what NVML and the kernel said into a trace, and says
// it again: a trace-backed gpu.Library for the collector (the same collector
// code as live) and a feed of raw kernel-log records.
//
// # Trace format, version 1
//
// JSON Lines, optionally gzip-compressed (detected by its magic bytes). Line 1
// is the header:
//
//	{"format":"gpuwarden-trace","version":1,"hostname":"...","driver_version":"...",
//	 "duration_s":300,"gpus":[{"index":0,"uuid":"GPU-...","name":"...","pci_bus_id":"00000000:18:00.0",...}]}
//
// Every further line is one record at t seconds from the start:
//
//	{"t":5,"gpu":0,"nvml":{"GetTemperature(0)":{"v":41},"FieldValue(82/0)":{"r":"NOT_SUPPORTED"}}}
//	{"t":240,"kmsg":"3,1234,240000000,-;NVRM: Xid (PCI:0000:18:00): 79, ..."}
//	{"t":130,"hang_s":10}          every NVML call blocks for 10 s of trace time
//	{"t":130,"gpu":2,"hang_s":-1}  GPU 2's calls block forever
//	{"t":200,"ebpf":{"layout":1,"raw":"AQAAAH...","memcg":"/slurm/uid_1000/job_4242/step_0"}}
//	{"t":0,"host":{"version":1,"kernel":"5.15.0-105-generic",...}}  the host's kernel, driver and DKMS facts (host.go)
//
// An "nvml" record holds answers that changed since the GPU's previous record
// (the first holds them all): {"v": value} for a success, {"r": "NAME"} for an
// error return (NOT_SUPPORTED, GPU_IS_LOST, TIMEOUT, UNKNOWN, ...). A call the
// trace never answered replays as NOT_SUPPORTED.
//
// An "ebpf" record is one record of the eBPF source's ring buffer (an OOM
// kill, a PCIe AER, an NVIDIA module load or unload), kept as the kernel
// wrote it: raw is the record's ebpf.RecordSize bytes, little-endian, in
// base64; layout numbers the record's layout (ebpf.Layout), and a record of
// another layout, size or an unknown kind is refused on read. memcg is the
// OOM victim's memory cgroup path as the recording host found it. On
// replay, the eBPF source (when switched on) decodes raw with the same
// decoder as its ring buffer's records. Traces without eBPF records are
// read as before: the header's version stays 1.
//
// # Adding an NVML method
//
// The player's and recorder's device methods that a trace answers under one
// key are generated from one table, internal/nvmlcalls/methods.go, into
// player_gen.go and recorder_gen.go. A new NVML method is:
//
//  1. the method, with go-nvml's exact signature, in gpu.Device;
//  2. one row in nvmlcalls.Methods: its arguments (they form the key, the
//     call as written), its results and the JSON shape the trace stores them
//     in (a JSON type in keys.go when there is more than one number);
//  3. go generate ./collectors/replay/ (make generate).
//
// The simulator answers it once its go-nvml mock device has a function for
// it (simulator/simulator.go's wire). Tests fail when the generated files
// are stale, or when a gpu.Device method is neither a table row nor in
// nvmlcalls.ByHand, the methods written by hand in player.go and recorder.go.
package replay

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// Format and Version identify a trace's header.
const (
	Format  = "gpuwarden-trace"
	Version = 1
)

// Limits that keep a hostile or broken trace from taking the agent's memory.
const (
	MaxLineBytes  = 1 << 20
	MaxTraceBytes = 128 << 20 // decompressed
	MaxRecords    = 500_000
	MaxGPUs       = 1024
	MaxMemcgBytes = 4096 // an eBPF record's memcg path (PATH_MAX)
)

// Header is a trace's first line.
type Header struct {
	Format        string     `json:"format"`
	Version       int        `json:"version"`
	Source        string     `json:"source,omitempty"`
	Hostname      string     `json:"hostname,omitempty"`
	BootID        string     `json:"boot_id,omitempty"`
	DriverVersion string     `json:"driver_version,omitempty"`
	DurationS     float64    `json:"duration_s"`
	GPUs          []gpu.Info `json:"gpus"`
}

// Answer is one recorded NVML answer.
type Answer struct {
	V json.RawMessage `json:"v,omitempty"`
	R string          `json:"r,omitempty"`
}

// Record is one timed line after the header.
type Record struct {
	T     float64           `json:"t"`
	GPU   *int              `json:"gpu,omitempty"`
	NVML  map[string]Answer `json:"nvml,omitempty"`
	Kmsg  string            `json:"kmsg,omitempty"`
	HangS float64           `json:"hang_s,omitempty"`
	EBPF  *EBPFRecord       `json:"ebpf,omitempty"`
	// Host is a host record (host.go): the recording host's kernel,
	// driver and DKMS facts.
	Host *Host `json:"host,omitempty"`
	line int
}

// EBPFRecord is one eBPF ring-buffer record in a trace.
type EBPFRecord struct {
	Layout int    `json:"layout"`
	Raw    []byte `json:"raw"` // base64 in the trace
	Memcg  string `json:"memcg,omitempty"`
}

// validate refuses a record this gpuwarden would misread.
func (e *EBPFRecord) validate() error {
	if e.Layout != ebpf.Layout {
		return fmt.Errorf("ebpf record of layout %d (this gpuwarden reads layout %d)", e.Layout, ebpf.Layout)
	}
	if len(e.Raw) != ebpf.RecordSize {
		return fmt.Errorf("ebpf record of %d bytes, want %d", len(e.Raw), ebpf.RecordSize)
	}
	if _, err := ebpf.DecodeTrace(e.Raw); err != nil {
		return err
	}
	if len(e.Memcg) > MaxMemcgBytes {
		return fmt.Errorf("ebpf record's memcg of %d bytes, more than %d", len(e.Memcg), MaxMemcgBytes)
	}
	return nil
}

// Trace is a whole trace in memory, each record as the format writes it:
// for making, recording and writing traces. A player keeps a trace as a
// Timeline (timeline.go), a small fraction of this.
type Trace struct {
	Header  Header
	Records []Record
}

// LineError names the line of a trace that could not be read.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Open reads a trace file.
func Open(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()
	return Read(f, path)
}

// Read reads a trace; name is used in errors.
func Read(r io.Reader, name string) (*Trace, error) {
	t := &Trace{}
	err := scan(r, name, &t.Header, func(rec Record) error {
		t.Records = append(t.Records, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Records must be in time order; a stable sort keeps a hand-edited trace
	// working rather than refusing it.
	sort.SliceStable(t.Records, func(i, j int) bool { return t.Records[i].T < t.Records[j].T })
	if n := len(t.Records); n > 0 && t.Header.DurationS < t.Records[n-1].T {
		t.Header.DurationS = t.Records[n-1].T
	}
	return t, nil
}

// scan reads a trace's header into h and hands each record after it,
// validated, to each in the order of the file: Read and ReadTimeline take
// the same traces and refuse the same ones with the same errors.
func scan(r io.Reader, name string, h *Header, each func(Record) error) error {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return &LineError{name, 0, fmt.Errorf("gzip: %w", err)}
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
	}
	sc := bufio.NewScanner(io.LimitReader(br, MaxTraceBytes+1))
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes)
	line := 0
	total := 0
	records := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		total += len(b) + 1
		if total > MaxTraceBytes {
			return &LineError{name, line, fmt.Errorf("trace larger than %d bytes", MaxTraceBytes)}
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		if line == 1 {
			if err := parseHeader(b, h); err != nil {
				return &LineError{name, line, err}
			}
			continue
		}
		if records >= MaxRecords {
			return &LineError{name, line, fmt.Errorf("more than %d records", MaxRecords)}
		}
		rec, err := parseRecord(b, len(h.GPUs))
		if err != nil {
			return &LineError{name, line, err}
		}
		rec.line = line
		records++
		if err := each(rec); err != nil {
			return &LineError{name, line, err}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line longer than %d bytes", MaxLineBytes)
		}
		return &LineError{name, line + 1, err}
	}
	if line == 0 {
		return &LineError{name, 1, errors.New("empty trace: no header")}
	}
	return nil
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func parseHeader(b []byte, h *Header) error {
	if err := strictUnmarshal(b, h); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if h.Format != Format {
		return fmt.Errorf("header: format %q is not %q", h.Format, Format)
	}
	if h.Version != Version {
		return fmt.Errorf("header: unsupported trace version %d (this gpuwarden reads version %d)", h.Version, Version)
	}
	if len(h.GPUs) > MaxGPUs {
		return fmt.Errorf("header: %d GPUs is more than %d", len(h.GPUs), MaxGPUs)
	}
	for i, g := range h.GPUs {
		if g.Index != i {
			return fmt.Errorf("header: gpus[%d] has index %d; GPUs must be listed in index order", i, g.Index)
		}
	}
	if math.IsNaN(h.DurationS) || h.DurationS < 0 {
		return fmt.Errorf("header: duration_s %v is not a duration", h.DurationS)
	}
	return nil
}

func parseRecord(b []byte, ngpu int) (Record, error) {
	var r Record
	if err := strictUnmarshal(b, &r); err != nil {
		return r, err
	}
	if math.IsNaN(r.T) || math.IsInf(r.T, 0) || r.T < 0 {
		return r, fmt.Errorf("field t: %v is not a time offset", r.T)
	}
	if r.GPU != nil && (*r.GPU < 0 || *r.GPU >= ngpu) {
		return r, fmt.Errorf("field gpu: %d is not a GPU of this trace (it has %d)", *r.GPU, ngpu)
	}
	kinds := 0
	if r.NVML != nil {
		kinds++
		if r.GPU == nil {
			return r, errors.New("field nvml needs a gpu")
		}
		for k, a := range r.NVML {
			if (a.R == "") == (len(a.V) == 0) {
				return r, fmt.Errorf("nvml answer %q: want exactly one of v or r", k)
			}
			if a.R != "" {
				if _, ok := returnByName[a.R]; !ok {
					return r, fmt.Errorf("nvml answer %q: unknown return %q", k, a.R)
				}
			}
		}
	}
	if r.Kmsg != "" {
		kinds++
	}
	if r.HangS != 0 {
		kinds++
		if math.IsNaN(r.HangS) || math.IsInf(r.HangS, 0) || (r.HangS < 0 && r.HangS != -1) {
			return r, fmt.Errorf("field hang_s: %v (want seconds > 0, or -1 for forever)", r.HangS)
		}
	}
	if r.EBPF != nil {
		kinds++
		if r.GPU != nil {
			return r, errors.New("field ebpf takes no gpu")
		}
		if err := r.EBPF.validate(); err != nil {
			return r, err
		}
	}
	if r.Host != nil {
		kinds++
		if r.GPU != nil {
			return r, errHostWithGPU
		}
		if err := r.Host.validate(); err != nil {
			return r, err
		}
	}
	if kinds != 1 {
		return r, errors.New("a record holds exactly one of nvml, kmsg, hang_s, ebpf or host")
	}
	return r, nil
}

// returnByName maps the names a trace uses to NVML return codes.
var returnByName = map[string]nvml.Return{
	"NOT_SUPPORTED":      nvml.ERROR_NOT_SUPPORTED,
	"GPU_IS_LOST":        nvml.ERROR_GPU_IS_LOST,
	"TIMEOUT":            nvml.ERROR_TIMEOUT,
	"UNKNOWN":            nvml.ERROR_UNKNOWN,
	"NO_PERMISSION":      nvml.ERROR_NO_PERMISSION,
	"NO_DATA":            nvml.ERROR_NO_DATA,
	"INVALID_ARGUMENT":   nvml.ERROR_INVALID_ARGUMENT,
	"UNINITIALIZED":      nvml.ERROR_UNINITIALIZED,
	"DRIVER_NOT_LOADED":  nvml.ERROR_DRIVER_NOT_LOADED,
	"FUNCTION_NOT_FOUND": nvml.ERROR_FUNCTION_NOT_FOUND,
	"RESET_REQUIRED":     nvml.ERROR_RESET_REQUIRED,
	"GPU_NOT_FOUND":      nvml.ERROR_NOT_FOUND,
}

func returnName(ret nvml.Return) string {
	for n, r := range returnByName {
		if r == ret {
			return n
		}
	}
	return "UNKNOWN"
}

// Write writes t in the trace format (uncompressed).
func (t *Trace) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	h := t.Header
	h.Format, h.Version = Format, Version
	if err := enc.Encode(h); err != nil {
		return err
	}
	for i := range t.Records {
		if err := enc.Encode(&t.Records[i]); err != nil {
			return err
		}
	}
	return nil
}
