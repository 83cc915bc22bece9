package ebpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

func init() {
	source.Register(source.Registration{
		Name:    "ebpf",
		Help:    "Watch kernel tracepoints (OOM kills, PCIe AER, NVIDIA module load and unload) with eBPF.",
		Default: true,
		Host:    true,
		New: func(env source.Env) (source.Source, error) {
			s := &Source{Paths: env.Paths, Log: env.Log}
			if env.Replay {
				s.PlayTrace()
			}
			return s, nil
		},
	})
}

// Source runs the tracepoint programs as a source of the agent. Programs
// whose tracepoint this kernel lacks are down, each said once with its
// cause, and the rest run; with none running the source itself is down.
type Source struct {
	Paths hostfs.Paths
	Log   *slog.Logger

	gpuPIDs atomic.Pointer[map[int]struct{}]

	// replayed queues a trace's records (Push); nil unless PlayTrace.
	replayed chan item

	// Outlive a Run ended by an error and started again.
	mu         sync.Mutex
	records    [kindMax]uint64 // read from the ring buffer, by kind
	queueDrops uint64          // read but dropped: the source's queue was full
	malformed  uint64
	dropBase   [kindMax]uint64 // ring-buffer drops of earlier loads (the map starts at zero each load)
	dedup      aerDedup
	logged     bool
	loggedHost bool
}

// item is one decoded record on its way to become an event. A replayed one
// is from a trace: another host's, so its memory cgroup is the trace's
// word (memcg), never looked up in this host's hierarchy.
type item struct {
	r        Record
	replayed bool
	memcg    string
}

// queueLen bounds the records read but not yet turned into events; the
// reader drops (and counts) beyond it rather than wait, so a stalled agent
// never stalls the ring buffer's reader. The ring buffer itself holds about
// 2,000 records (256 KiB).
const queueLen = 512

// maxBatch is the most records one step of the agent's state takes.
const maxBatch = 64

// statsInterval is how often the kernel's drop counts are read when no
// record arrives.
const statsInterval = 15 * time.Second

// SetGPUProcesses replaces the set of process ids that have a GPU open (the
// GPU collector's running processes), which marks an OOM victim as a GPU
// process. Until it is first called an OOM kill's gpu_process is "unknown":
// the victim is dead by the time its record is read, so its open files
// cannot be looked at then.
func (s *Source) SetGPUProcesses(pids []int) {
	set := make(map[int]struct{}, len(pids))
	for _, p := range pids {
		set[p] = struct{}{}
	}
	s.gpuPIDs.Store(&set)
}

func (s *Source) gpuProcess(pid int) (open, known bool) {
	set := s.gpuPIDs.Load()
	if set == nil {
		return false, false
	}
	_, open = (*set)[pid]
	return open, true
}

// PlayTrace makes the source play a replayed trace's records (Push) beside
// what this host's programs see, and run on those alone when the host's
// programs cannot load: the agent calls it in replay mode.
func (s *Source) PlayTrace() {
	if s.replayed == nil {
		s.replayed = make(chan item, queueLen)
	}
}

// Push gives the source one record from a trace, as the trace keeps it
// (DecodeTrace's layout), with the memory cgroup path the recording host
// found for it (or ""). It is decoded, counted and queued as a record read
// from the ring buffer is, and never blocks: a full queue drops and counts.
// Without PlayTrace it does nothing.
func (s *Source) Push(raw []byte, memcg string) {
	if s.replayed == nil {
		return
	}
	r, err := DecodeTrace(raw)
	s.accept(item{r: r, replayed: true, memcg: memcg}, err, s.replayed)
}

// Run loads and attaches the programs and reads their records, and a
// trace's when PlayTrace was called, until ctx ends.
func (s *Source) Run(ctx context.Context, sink source.Sink) error {
	o, err := s.load()
	if err != nil {
		return err
	}
	records := make(chan item, queueLen)
	if o != nil {
		defer o.Close()
		rd, err := ringbuf.NewReader(o.Events)
		if err != nil {
			return fmt.Errorf("read the BPF ring buffer: %w", err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.read(rd, records)
		}()
		defer func() {
			rd.Close()
			<-done
			sink.Stats(s.metrics(o, false))
			s.mu.Lock()
			for _, p := range programs {
				s.dropBase[p.Kind] += o.dropped(p.Kind)
			}
			s.mu.Unlock()
		}()
	}
	meta := s.meta()
	sink.Stats(s.metrics(o, true))
	sink.Ran(0)
	tick := time.NewTicker(statsInterval)
	defer tick.Stop()
	var batch []event.Event
	// next is a queued record of either input, without waiting.
	next := func() (item, bool) {
		select {
		case it := <-records:
			return it, true
		case it := <-s.replayed:
			return it, true
		default:
			return item{}, false
		}
	}
	for {
		var it item
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			sink.Stats(s.metrics(o, true))
			continue
		case it = <-records:
		case it = <-s.replayed: // nil unless PlayTrace: never ready
		}
		start := time.Now()
		// Who had a GPU open, as of the GPU collector's last round: an
		// OOM victim is dead when its record is read.
		// Without GPUs seen it stays unknown.
		if v := sink.GPUs(); v != nil {
			if gpus := v.GPUs(); len(gpus) > 0 {
				var pids []int
				for _, g := range gpus {
					pids = append(pids, g.PIDs...)
				}
				s.SetGPUProcesses(pids)
			}
		}
		batch = s.events(it, meta, batch[:0])
		for len(batch) < maxBatch {
			it, ok := next()
			if !ok {
				break
			}
			batch = s.events(it, meta, batch)
		}
		if len(batch) > 0 {
			sink.Events(batch, nil)
		}
		sink.Stats(s.metrics(o, true))
		sink.Ran(time.Since(start))
	}
}

// fixLoad is what an operator does about programs that cannot load at all.
const fixLoad = "run on a kernel with BTF (5.8 or later) with CAP_BPF and CAP_PERFMON, or turn the source off with --no-collector.ebpf"

// load loads and attaches the programs. With none running the source is
// down, unless it plays a trace: then it runs on the trace's records alone
// (nil Objects), having said once why this host's programs are not there.
func (s *Source) load() (*Objects, error) {
	o, err := Load()
	if err == nil {
		s.logStates(o.States)
		if len(o.Progs) > 0 {
			return o, nil
		}
		var errs []error
		for _, st := range o.States {
			errs = append(errs, st.Err)
		}
		o.Close()
		err = fmt.Errorf("no eBPF program could attach: %w", errors.Join(errs...))
	} else {
		err = source.WithFix(err, fixLoad)
	}
	if s.replayed == nil {
		return nil, err
	}
	s.mu.Lock()
	first := !s.loggedHost
	s.loggedHost = true
	s.mu.Unlock()
	if first {
		s.log().Info("ebpf: this host's programs are not attached; the trace's eBPF records play", "err", err)
	}
	return nil, nil
}

func (s *Source) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// read is the one reader of the ring buffer. It never blocks on the
// consumer: a record that finds the queue full is counted and dropped.
func (s *Source) read(rd *ringbuf.Reader, out chan<- item) {
	eachRecord(rd, func(sample []byte) {
		r, err := Decode(sample)
		s.accept(item{r: r}, err, out)
	})
}

// eachRecord hands fn every record of the ring buffer until the reader is
// closed. The sample is reused by the next read: fn must not keep it.
func eachRecord(rd *ringbuf.Reader, fn func(sample []byte)) {
	var raw ringbuf.Record
	for {
		if err := rd.ReadInto(&raw); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			// Not expected (no deadline is set); do not spin on it.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		fn(raw.RawSample)
	}
}

// accept counts a decoded record (or its failure) and queues it without
// blocking: the one path of the ring buffer's records and a trace's.
func (s *Source) accept(it item, err error, out chan<- item) {
	s.mu.Lock()
	if err != nil {
		s.malformed++
		s.mu.Unlock()
		return
	}
	s.records[it.r.Kind]++
	s.mu.Unlock()
	select {
	case out <- it:
	default:
		s.mu.Lock()
		s.queueDrops++
		s.mu.Unlock()
	}
}

// events appends the record's event, unless it repeats an AER within its
// window. A replayed record happens now, on the replayed node: its boot
// stamp and boot id are another host's, and its memory cgroup is the
// trace's path (or the record's leaf name).
func (s *Source) events(it item, m Meta, out []event.Event) []event.Event {
	r := it.r
	if it.replayed {
		m = Meta{GPUProcess: m.GPUProcess, Memcg: func(uint64) string { return it.memcg }}
	}
	ev := r.Event(m)
	if it.replayed {
		ev.Time = time.Now()
	}
	if r.Kind == kindAER {
		s.mu.Lock()
		fresh := s.dedup.fresh(aerKey{dev: ev.GPU.PCIBusID, status: r.Status, sev: r.Severity}, ev.Time)
		s.mu.Unlock()
		if !fresh {
			return out
		}
	}
	return append(out, ev)
}

// meta is what every record's event needs: the wall time of the
// CLOCK_BOOTTIME zero the programs stamp records with, and the boot id.
func (s *Source) meta() Meta {
	m := Meta{Boot: bootWall(), GPUProcess: s.gpuProcess,
		Memcg: func(id uint64) string { return memcgPath(s.Paths, id) }}
	if id, err := s.Paths.BootID(); err == nil {
		m.BootID = id
	}
	return m
}

func bootWall() time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return now
	}
	return now.Add(-time.Duration(ts.Nano()))
}

// logStates says once per process which programs run and why the others
// do not: a missing tracepoint is this kernel's build, not a fault.
func (s *Source) logStates(states []ProgramState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logged {
		return
	}
	s.logged = true
	log := s.log()
	for _, st := range states {
		switch {
		case st.Up():
			log.Info("ebpf program attached", "program", st.Name)
		case errors.Is(st.Err, ErrTracepointMissing):
			log.Info("ebpf program down", "program", st.Name, "err", st.Err)
		default:
			log.Warn("ebpf program down", "program", st.Name, "err", st.Err)
		}
	}
}

// metrics are the source's series: each program's state and records, the
// OOM kills, and what was lost on the way.
func (s *Source) metrics(o *Objects, running bool) []source.Metric {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []source.Metric
	for _, p := range programs {
		up := 0.0
		var dropped uint64
		if o != nil {
			if _, ok := o.Progs[p.Name]; ok && running {
				up = 1
			}
			dropped = o.dropped(p.Kind)
		}
		out = append(out,
			source.Metric{Name: "gpuwarden_ebpf_program_up", Help: "Whether the eBPF program on this tracepoint is attached (1) or not (0).",
				Labels: []string{"program", p.Name}, Value: up},
			source.Metric{Name: "gpuwarden_ebpf_events_total", Help: "Records the eBPF program on this tracepoint sent to gpuwarden.", Counter: true,
				Labels: []string{"program", p.Name}, Value: float64(s.records[p.Kind])},
			source.Metric{Name: "gpuwarden_ebpf_ringbuf_dropped_total", Help: "Records the eBPF program on this tracepoint lost because the ring buffer was full.", Counter: true,
				Labels: []string{"program", p.Name}, Value: float64(s.dropBase[p.Kind] + dropped)},
		)
	}
	return append(out,
		source.Metric{Name: "gpuwarden_oom_kills_total", Help: "Processes the kernel's OOM killer killed, seen by the eBPF source (oom/mark_victim).", Counter: true,
			Value: float64(s.records[kindOOM])},
		source.Metric{Name: "gpuwarden_ebpf_queue_dropped_total", Help: "eBPF records read from the ring buffer but dropped because the source's queue was full.", Counter: true,
			Value: float64(s.queueDrops)},
		source.Metric{Name: "gpuwarden_ebpf_malformed_records_total", Help: "eBPF records that did not decode.", Counter: true,
			Value: float64(s.malformed)},
		source.Metric{Name: "gpuwarden_ebpf_aer_suppressed_total", Help: "PCIe AER reports from the eBPF source dropped as repeats of one error within a second.", Counter: true,
			Value: float64(s.dedup.suppressed)},
	)
}
