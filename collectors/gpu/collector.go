// Package gpu turns NVML's answers into Samples, field by field, keeping "not
// supported" apart from zero and from "broken". It knows nothing of HTTP or
// Prometheus: the agent publishes what it returns.
//
// NVML is reached only through Library, and only after Library.Init
// succeeded: calling NVML after a failed Init kills the process (an
// unresolved symbol, not a Go error), so Collector is the one guard that owns
// "is NVML up".
package gpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Round is one pass over every GPU.
type Round struct {
	Time          time.Time
	Duration      time.Duration
	DriverVersion string
	Samples       []*Sample // by GPU index
	// Err is set when no GPU could be read at all (NVML down).
	Err error
	// Xids are the Xid events NVML reported since the previous round.
	Xids []XidEvent
}

// XidEvent is an Xid error NVML reported for a GPU.
type XidEvent struct {
	GPU Info
	Xid int
}

// eventLibrary and eventDevice are the parts of NVML's event API the Xid
// watch needs; go-nvml's library and devices have them, a trace does not
// (a trace carries Xids as kernel-log records).
type eventLibrary interface {
	EventSetCreate() (nvml.EventSet, nvml.Return)
}

type eventDevice interface {
	RegisterEvents(uint64, nvml.EventSet) nvml.Return
}

// Options tunes a Collector.
type Options struct {
	// Timeout bounds one GPU's sample. A GPU still busy after it is reported
	// timed out and skipped until its stuck call returns.
	Timeout time.Duration
	Clock   func() time.Time
	Log     *slog.Logger
	// ProfilingPaused, when set and true at the start of a round, makes the
	// collector release GPM (free its sample buffers) and leave the
	// profiling fields absent (StatusPaused) until it is false again; the
	// first round after that warms up. The hook for a profiling pause set
	// over the control socket, so another profiler can have the counters.
	ProfilingPaused func() bool
}

// Collector samples every GPU that Library enumerates.
type Collector struct {
	lib   Library
	opts  Options
	log   *slog.Logger
	clock func() time.Time

	up            bool
	driverVersion string
	gpus          []*gpuState

	nvmlFields  []nvml.FieldValue // the batched GetFieldValues request template
	nvmlFieldOf []int             // Fields index of each entry in nvmlFields

	xidSet nvml.EventSet // NVML's Xid events, drained after each round; nil if unsupported

	gpmLib, gpmMIG    bool  // libnvidia-ml has GPM, and GPM for MIG instances (checkGPMLibrary)
	profFields        []int // Fields indexes of the profiling fields
	profInstFields    []int // ... of those also read per MIG GPU instance
	gpuOnlyProfFields []int // ... of those read only per GPU
	// gpmCompute serialises GpmMetricsGet across GPUs: it only computes on
	// host buffers (it cannot hang on a GPU), and running it for several GPUs
	// at once has been reported to crash in cgo (unverified here).
	gpmCompute sync.Mutex

	// unsupported collects the fields each GPU's sample first found not
	// supported, logged at the end of a round as one line per distinct set
	// (one line for a node of identical GPUs), not one per GPU.
	unsupportedMu sync.Mutex
	unsupported   []unsupportedNote
}

type unsupportedNote struct {
	index  int
	fields []string
}

type gpuState struct {
	dev  Device
	info Info
	// busy is held while a sample of this GPU runs, so a hung GPU gets one
	// stuck goroutine, not one per interval.
	busy   sync.Mutex
	warned []bool // per field: "not supported" already logged
	gpm    gpmState
}

// ErrNVMLUnavailable wraps every failure to initialise NVML.
var ErrNVMLUnavailable = errors.New("NVML unavailable")

// New returns a Collector over lib. It does not touch NVML until Sample.
func New(lib Library, opts Options) *Collector {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	c := &Collector{lib: lib, opts: opts, log: opts.Log, clock: opts.Clock}
	for i, f := range Fields {
		if f.NVMLField != 0 {
			c.nvmlFields = append(c.nvmlFields, nvml.FieldValue{FieldId: f.NVMLField, ScopeId: f.NVMLScope})
			c.nvmlFieldOf = append(c.nvmlFieldOf, i)
		}
		if f.Profiling {
			c.profFields = append(c.profFields, i)
			if f.PerInstance {
				c.profInstFields = append(c.profInstFields, i)
			} else {
				c.gpuOnlyProfFields = append(c.gpuOnlyProfFields, i)
			}
		}
	}
	return c
}

// Up reports whether NVML is initialised.
func (c *Collector) Up() bool { return c.up }

// GPUs returns the static facts of the GPUs found at the last enumeration.
func (c *Collector) GPUs() []Info {
	out := make([]Info, len(c.gpus))
	for i, g := range c.gpus {
		out[i] = g.info
	}
	return out
}

// open initialises NVML and enumerates the GPUs. On failure nothing else is
// called and the error says what is missing and how to fix it.
func (c *Collector) open() error {
	if ret := c.lib.Init(); ret != nvml.SUCCESS {
		return fmt.Errorf("%w: %s", ErrNVMLUnavailable, explainInit(ret))
	}
	c.up = true
	c.checkGPMLibrary()
	v, ret := c.lib.SystemGetDriverVersion()
	if ret == nvml.SUCCESS {
		c.driverVersion = v
	}
	return c.enumerate()
}

func explainInit(ret nvml.Return) string {
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return "libnvidia-ml.so.1 not found (install the NVIDIA driver's userspace libraries, e.g. the nvidia-utils or libnvidia-compute package matching the kernel module)"
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return "the NVIDIA kernel module is not loaded (modprobe nvidia; run `gpuwarden check` to see whether a module exists for this kernel)"
	case nvml.ERROR_NO_PERMISSION:
		return "no permission to open /dev/nvidiactl (run as root or in the video group)"
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return "driver/library version mismatch: the loaded kernel module differs from libnvidia-ml (reboot, or reload the module when no GPU process runs)"
	}
	return "nvmlInit: " + nvml.ErrorString(ret)
}

func (c *Collector) enumerate() error {
	n, ret := c.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("nvmlDeviceGetCount: %s", nvml.ErrorString(ret))
	}
	c.releaseGPM() // the old handles' sample buffers
	gpus := make([]*gpuState, 0, n)
	for i := 0; i < n; i++ {
		d, ret := c.lib.DeviceGetHandleByIndex(i)
		g := &gpuState{dev: d, info: Info{Index: i, Minor: i}, warned: make([]bool, len(Fields))}
		if ret == nvml.SUCCESS {
			g.info = readInfo(i, d)
		} else {
			c.log.Warn("cannot get GPU handle", "gpu", i, "err", nvml.ErrorString(ret))
		}
		gpus = append(gpus, g)
	}
	c.gpus = gpus
	c.watchXids()
	return nil
}

// watchXids registers every GPU for NVML's Xid events. They are drained with
// a zero timeout after each round, in the sampling goroutine, so the event
// set never outlives NVML and needs no lock. The kernel log is the fast path
// for Xids; this one works where /dev/kmsg cannot be read (a container).
func (c *Collector) watchXids() {
	if c.xidSet != nil {
		c.xidSet.Free()
		c.xidSet = nil
	}
	el, ok := c.lib.(eventLibrary)
	if !ok {
		return
	}
	set, ret := el.EventSetCreate()
	if ret != nvml.SUCCESS {
		return
	}
	registered := 0
	for _, g := range c.gpus {
		if d, ok := g.dev.(eventDevice); ok && d.RegisterEvents(nvml.EventTypeXidCriticalError, set) == nvml.SUCCESS {
			registered++
		}
	}
	if registered == 0 {
		set.Free()
		return
	}
	c.xidSet = set
}

// drainXids returns the Xid events waiting in the event set.
func (c *Collector) drainXids() []XidEvent {
	if c.xidSet == nil {
		return nil
	}
	var out []XidEvent
	for range 1024 { // bounded: a storm of Xids must not stall sampling
		data, ret := c.xidSet.Wait(0)
		if ret != nvml.SUCCESS {
			break
		}
		if data.EventType&nvml.EventTypeXidCriticalError == 0 {
			continue
		}
		ev := XidEvent{Xid: int(data.EventData), GPU: Info{Index: -1}}
		if data.Device != nil {
			if uuid, ret := data.Device.GetUUID(); ret == nvml.SUCCESS {
				for _, g := range c.gpus {
					if g.info.UUID == uuid {
						ev.GPU = g.info
					}
				}
			}
		}
		out = append(out, ev)
	}
	return out
}

func readInfo(i int, d Device) Info {
	info := Info{Index: i, Minor: i}
	if s, ret := d.GetUUID(); ret == nvml.SUCCESS {
		info.UUID = s
	}
	if s, ret := d.GetName(); ret == nvml.SUCCESS {
		info.Name = s
	}
	if s, ret := d.GetSerial(); ret == nvml.SUCCESS {
		info.Serial = s
	}
	if m, ret := d.GetMinorNumber(); ret == nvml.SUCCESS {
		info.Minor = m
	}
	if p, ret := d.GetPciInfo(); ret == nvml.SUCCESS {
		info.PCIBusID = BusID(p)
	}
	if m, ret := d.GetMemoryInfo_v2(); ret == nvml.SUCCESS {
		info.MemoryTotalMB = m.Total >> 20
	}
	return info
}

// Close shuts NVML down if it was initialised.
func (c *Collector) Close() {
	if c.xidSet != nil {
		c.xidSet.Free()
		c.xidSet = nil
	}
	if c.up {
		c.releaseGPM()
		c.lib.Shutdown()
		c.up = false
	}
}

// Sample reads every GPU once. Until NVML initialises it returns a Round
// whose Err says why; it retries Init on each call, so the caller's backoff
// decides how often.
func (c *Collector) Sample(ctx context.Context) Round {
	start := c.clock()
	if !c.up {
		if err := c.open(); err != nil {
			return Round{Time: start, Err: err}
		}
		c.log.Info("NVML initialised", "driver_version", c.driverVersion, "gpus", len(c.gpus))
	}
	// A changed count (a GPU that came back, or hot-plug) means new handles.
	if n, ret := c.lib.DeviceGetCount(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_UNINITIALIZED || ret == nvml.ERROR_DRIVER_NOT_LOADED {
			c.Close()
		}
		return Round{Time: start, Err: fmt.Errorf("nvmlDeviceGetCount: %s", nvml.ErrorString(ret))}
	} else if n != len(c.gpus) {
		c.log.Warn("GPU count changed", "was", len(c.gpus), "now", n)
		if err := c.enumerate(); err != nil {
			return Round{Time: start, Err: err}
		}
	}

	paused := c.opts.ProfilingPaused != nil && c.opts.ProfilingPaused()
	r := Round{Time: start, DriverVersion: c.driverVersion, Samples: make([]*Sample, len(c.gpus))}
	type result struct {
		i int
		s *Sample
	}
	done := make(chan result, len(c.gpus)) // buffered: a sample that comes too late never blocks
	started := 0
	for i, g := range c.gpus {
		if !g.busy.TryLock() {
			r.Samples[i] = c.timedOut(g, start, "previous sample still running")
			continue
		}
		started++
		go func() {
			s := c.sampleGPU(g, start, paused)
			// Unlocked before the round hears of it: the next round, which
			// may start at once, must find this GPU free.
			g.busy.Unlock()
			if len(s.newlyUnsupported) > 0 {
				// A sample that comes too late for its round is logged
				// with the next one.
				c.unsupportedMu.Lock()
				c.unsupported = append(c.unsupported, unsupportedNote{g.info.Index, s.newlyUnsupported})
				c.unsupportedMu.Unlock()
			}
			done <- result{i, s}
		}()
	}
	timer := time.NewTimer(c.opts.Timeout)
	defer timer.Stop()
	for got := 0; got < started; got++ {
		select {
		case res := <-done:
			r.Samples[res.i] = res.s
		case <-timer.C:
			got = started
		case <-ctx.Done():
			got = started
		}
	}
	for i, g := range c.gpus {
		if r.Samples[i] == nil {
			r.Samples[i] = c.timedOut(g, start, fmt.Sprintf("no answer from NVML within %s", c.opts.Timeout))
		}
	}
	r.Xids = c.drainXids()
	c.logUnsupported()
	r.Duration = c.clock().Sub(start)
	return r
}

// logUnsupported logs the fields found not supported since the last round,
// once per GPU and field, in one line: each field named once, with the GPUs
// it concerns when not all of them ("DCGM_FI_DEV_MEMORY_TEMP (GPU 4)").
func (c *Collector) logUnsupported() {
	c.unsupportedMu.Lock()
	notes := c.unsupported
	c.unsupported = nil
	c.unsupportedMu.Unlock()
	if len(notes) == 0 {
		return
	}
	sort.Slice(notes, func(i, j int) bool { return notes[i].index < notes[j].index })
	var order []string
	gpusOf := map[string][]int{}
	var gpus []int
	for _, n := range notes {
		gpus = append(gpus, n.index)
		for _, f := range n.fields {
			if _, ok := gpusOf[f]; !ok {
				order = append(order, f)
			}
			gpusOf[f] = append(gpusOf[f], n.index)
		}
	}
	fields := make([]string, 0, len(order))
	for _, f := range order {
		if on := gpusOf[f]; len(on) < len(notes) {
			f += " (GPU " + strings.Trim(fmt.Sprint(on), "[]") + ")"
		}
		fields = append(fields, f)
	}
	c.log.Info("fields not supported; they are absent from /metrics", "gpus", gpus, "fields", fields)
}

func (c *Collector) timedOut(g *gpuState, t time.Time, why string) *Sample {
	s := &Sample{GPU: g.info, Time: t, Values: make([]float64, len(Fields)), Status: make([]Status, len(Fields)), Err: why}
	for i := range s.Status {
		s.Status[i] = StatusTimeout
	}
	return s
}

func (c *Collector) sampleGPU(g *gpuState, t time.Time, paused bool) *Sample {
	s := &Sample{GPU: g.info, Time: t, Values: make([]float64, len(Fields)), Status: make([]Status, len(Fields))}
	if g.dev == nil {
		for i := range s.Status {
			s.Status[i] = StatusError
		}
		s.Err = "no NVML handle for this GPU"
		return s
	}
	var memo calls
	for i := range Fields {
		f := &Fields[i]
		if f.Read == nil {
			continue
		}
		v, ret := f.Read(g.dev, &memo)
		c.set(g, s, i, v, ret)
	}
	if len(c.nvmlFields) > 0 {
		req := make([]nvml.FieldValue, len(c.nvmlFields))
		copy(req, c.nvmlFields)
		ret := g.dev.GetFieldValues(req)
		for j, fi := range c.nvmlFieldOf {
			fr := ret
			if ret == nvml.SUCCESS {
				fr = nvml.Return(req[j].NvmlReturn)
			}
			c.set(g, s, fi, FieldValueFloat(req[j]), fr)
		}
	}
	c.sampleGPM(g, s, t, paused)
	s.Processes = processes(g.dev)
	if or, ok := g.dev.(OwnerReader); ok && len(s.Processes) > 0 {
		pids := make([]uint32, len(s.Processes))
		for i, p := range s.Processes {
			pids[i] = p.PID
		}
		if owners, ret := or.ProcessOwners(pids); ret == nvml.SUCCESS {
			for i := range s.Processes {
				s.Processes[i].Owner = owners[s.Processes[i].PID]
			}
		}
	}
	return s
}

// processes lists who uses the GPU, from NVML's compute and graphics lists.
// A GPU or driver that cannot list them gives none.
func processes(d Device) []Process {
	byPID := map[uint32]*Process{}
	var out []Process
	add := func(ps []nvml.ProcessInfo, ret nvml.Return, compute bool) {
		if ret != nvml.SUCCESS {
			return
		}
		for _, p := range ps {
			q := byPID[p.Pid]
			if q == nil {
				out = append(out, Process{PID: p.Pid})
				q = &out[len(out)-1]
				byPID[p.Pid] = q
			}
			// NVML reports an unknown size as the maximum value.
			if p.UsedGpuMemory != math.MaxUint64 {
				q.UsedMemory = max(q.UsedMemory, p.UsedGpuMemory)
			}
			q.Compute = q.Compute || compute
			q.Graphics = q.Graphics || !compute
		}
	}
	ps, ret := d.GetComputeRunningProcesses()
	add(ps, ret, true)
	// out may have grown: byPID's pointers are into the old array.
	byPID = map[uint32]*Process{}
	for i := range out {
		byPID[out[i].PID] = &out[i]
	}
	ps, ret = d.GetGraphicsRunningProcesses()
	add(ps, ret, false)
	sort.Slice(out, func(i, j int) bool {
		if out[i].UsedMemory != out[j].UsedMemory {
			return out[i].UsedMemory > out[j].UsedMemory
		}
		return out[i].PID < out[j].PID
	})
	if len(out) > MaxProcesses {
		out = out[:MaxProcesses]
	}
	return out
}

func (c *Collector) set(g *gpuState, s *Sample, i int, v float64, ret nvml.Return) {
	st := StatusOf(ret)
	s.Status[i] = st
	switch st {
	case StatusOK:
		s.Values[i] = v
	case StatusNotSupported:
		if !g.warned[i] {
			g.warned[i] = true
			s.newlyUnsupported = append(s.newlyUnsupported, Fields[i].Name)
		}
	case StatusLost:
		s.Lost = true
		if s.Err == "" {
			s.Err = "GPU is lost (NVML_ERROR_GPU_IS_LOST): it fell off the bus or stopped answering"
		}
	default:
		if s.Err == "" {
			s.Err = fmt.Sprintf("%s: %s", Fields[i].Name, nvml.ErrorString(ret))
		}
	}
}

// DriverVersion is what NVML reported at Init.
func (c *Collector) DriverVersion() string { return c.driverVersion }
