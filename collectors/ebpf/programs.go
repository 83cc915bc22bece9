package ebpf

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// program is one tracepoint program of the object in bpf/.
type program struct {
	Name   string // the tracepoint, "oom/mark_victim": the series' label
	Symbol string // its function in bpf/gpuwarden.bpf.c
	Kind   uint32 // the records it writes
}

// programs is every program, in the order they are loaded and listed.
var programs = []program{
	{Name: "oom/mark_victim", Symbol: "mark_victim", Kind: kindOOM},
	{Name: "ras/aer_event", Symbol: "aer_event", Kind: kindAER},
	{Name: "module/module_load", Symbol: "module_load", Kind: kindModuleLoad},
	{Name: "module/module_free", Symbol: "module_free", Kind: kindModuleFree},
}

// ProgramState is whether one program runs, and if not, why.
type ProgramState struct {
	Name string
	Err  error // nil when attached
}

// Up reports whether the program is attached.
func (p ProgramState) Up() bool { return p.Err == nil }

// Objects are the loaded maps and the programs that attached.
type Objects struct {
	Events *ebpf.Map // the ring buffer
	Drops  *ebpf.Map // per-CPU counts of records the ring buffer had no room for, by kind
	Progs  map[string]*ebpf.Program
	States []ProgramState

	links []link.Link
}

// Load loads the maps and then each program on its own, so that a kernel
// without one tracepoint runs the rest. The error is for what stops every
// program (no BTF, no permission to create maps); a program that cannot
// attach is in States with its cause.
func Load() (*Objects, error) {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("the kernel has no BTF (/sys/kernel/btf/vmlinux), which tp_btf programs need (CONFIG_DEBUG_INFO_BTF): %w", err)
	}
	// Before Linux 5.11 BPF memory counts against RLIMIT_MEMLOCK; later
	// kernels charge the memory cgroup and this does nothing. Its failure
	// matters only if the maps then cannot be made, and is said then.
	memlock := rlimit.RemoveMemlock()
	spec, err := loadGpuwarden()
	if err != nil {
		return nil, fmt.Errorf("read the embedded BPF object: %w", err)
	}
	maps := spec.Copy()
	maps.Programs = nil
	coll, err := ebpf.NewCollection(maps)
	if err != nil {
		if memlock != nil && !errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (and RLIMIT_MEMLOCK could not be raised: %v; set LimitMEMLOCK=infinity)", err, memlock)
		}
		return nil, permission(fmt.Errorf("create the BPF ring buffer: %w", err))
	}
	o := &Objects{Events: coll.Maps["events"], Drops: coll.Maps["drops"], Progs: map[string]*ebpf.Program{}}
	for _, p := range programs {
		err := tracepointMissing(kernel, p)
		if err == nil {
			err = o.attach(spec, p)
		}
		o.States = append(o.States, ProgramState{Name: p.Name, Err: err})
	}
	return o, nil
}

// tracepointMissing says so when the kernel's BTF has no btf_trace_<event>
// typedef: the kernel was built without the tracepoint (no PCIe port bus
// driver for ras/aer_event, no loadable modules for module/*), and a tp_btf
// program has nothing to attach to.
func tracepointMissing(kernel *btf.Spec, p program) error {
	event := p.Name[strings.IndexByte(p.Name, '/')+1:]
	var td *btf.Typedef
	err := kernel.TypeByName("btf_trace_"+event, &td)
	if errors.Is(err, btf.ErrNotFound) {
		return fmt.Errorf("tracepoint %s is not in this kernel (no btf_trace_%s in its BTF; the kernel was built without what defines it): %w", p.Name, event, ErrTracepointMissing)
	}
	return nil // any other answer: let the load say what is wrong
}

// ErrTracepointMissing is the cause of a program whose tracepoint this
// kernel does not have.
var ErrTracepointMissing = errors.New("missing tracepoint")

// attach loads one program against the shared maps and attaches it.
func (o *Objects) attach(spec *ebpf.CollectionSpec, p program) error {
	one := spec.Copy()
	ps, ok := one.Programs[p.Symbol]
	if !ok {
		return fmt.Errorf("program %s: no function %s in the BPF object", p.Name, p.Symbol)
	}
	one.Programs = map[string]*ebpf.ProgramSpec{p.Symbol: ps}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{"events": o.Events, "drops": o.Drops},
	})
	if err != nil {
		return loadError(p, err)
	}
	prog := coll.DetachProgram(p.Symbol)
	coll.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		prog.Close()
		return loadError(p, fmt.Errorf("attach: %w", err))
	}
	o.Progs[p.Name] = prog
	o.links = append(o.links, l)
	return nil
}

// loadError names the cause of a program that cannot run: a tracepoint
// this kernel lacks, missing privilege, or the verifier's answer.
func loadError(p program, err error) error {
	event := p.Name[strings.IndexByte(p.Name, '/')+1:]
	switch {
	case errors.Is(err, btf.ErrNotFound), errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("tracepoint %s cannot be attached on this kernel (btf_trace_%s or tp_btf support is missing: %v): %w", p.Name, event, err, ErrTracepointMissing)
	case errors.Is(err, unix.EPERM), errors.Is(err, os.ErrPermission):
		return permission(fmt.Errorf("program %s: %w", p.Name, err))
	}
	return fmt.Errorf("program %s: %w", p.Name, err)
}

// permission says what an EPERM from the bpf() syscall wants.
func permission(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (permission denied: loading tracing programs needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN before Linux 5.8, and the bpf syscall allowed)", err)
	}
	return err
}

// Close detaches every program and frees the maps.
func (o *Objects) Close() {
	for _, l := range o.links {
		l.Close()
	}
	for _, p := range o.Progs {
		p.Close()
	}
	o.Events.Close()
	o.Drops.Close()
}

// dropped is the number of records of kind the ring buffer had no room for,
// summed over CPUs.
func (o *Objects) dropped(kind uint32) uint64 {
	var per []uint64
	if err := o.Drops.Lookup(kind, &per); err != nil {
		return 0
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}
