// Package ebpf is the agent's kernel tracepoint source: small tp_btf
// programs (CO-RE, against the kernel's BTF; no tracefs, no kprobes, no
// kernel headers) that write fixed records to one BPF ring buffer, read by
// one goroutine into a bounded queue and applied to the agent as events.
//
// Programs, one per tracepoint, each loaded and attached on its own:
//
//	oom/mark_victim     oom_kill: pid, tid, uid, comm, memory cgroup id and path
//	ras/aer_event       aer: device, status, severity (the kernel log's Fields)
//	module/module_load  driver_loaded: an NVIDIA module (name "nvidia*") loaded
//	module/module_free  driver_unloaded: an NVIDIA module removed
//
// A tracepoint the kernel lacks (no btf_trace_<event> in its BTF: a kernel
// without the PCIe port bus driver has no ras/aer_event, one without
// loadable modules no module/*) leaves its program down, said once with
// that cause, and gpuwarden_ebpf_program_up{program} 0; the rest run. No BTF,
// or no permission to create the ring buffer, is the source down, with the
// fix, retried on the agent's backoff.
//
// Decisions worth knowing:
//
//   - The OOM victim's memory cgroup is read in the kernel (task->cgroups->
//     subsys[memory_cgrp_id]->cgroup->kn: its id and leaf name), since the
//     victim is usually dead, and its /proc/<pid>/cgroup gone, when the
//     record is read. The id is the inode of the cgroup's directory; the
//     path is found from it by a bounded walk of the memory hierarchy, and
//     the leaf name stands in when the cgroup is gone too.
//   - Whether the victim had a GPU open is not looked at in the kernel: the
//     source is given the GPU processes' pids (SetGPUProcesses, from what
//     NVML reports) and marks gpu_process true or false, or "unknown" until
//     it has been given a list.
//   - The victim's comm is any user's choice: it is data in Fields and
//     quoted in Raw, never a label, and never read as a kernel line.
//   - An AER's event has the kmsg classifier's kind, bus id and
//     aer_severity, so the catalog rates both copies alike. Repeats of one
//     device, status and severity within a second are one event (a storm
//     is counted in gpuwarden_ebpf_aer_suppressed_total). Joining this copy
//     with the kernel log's is the agent's: see aerDedup.
//   - A module load or unload should make the DKMS checks run at once
//     (dkms's CheckNow); the event is emitted, and the agent is where a
//     subscriber would call it.
//
// Records stamp CLOCK_BOOTTIME; an event's time is the wall time of boot
// plus that stamp.
//
// Traces keep records too, so that what a production kernel's tracepoints
// report (this machine's kernel has no ras/aer_event and no module/*) is
// tested on replays: `gpuwarden record` keeps what Capture reads from the
// programs, a scenario's ebpf entries are written as the programs would
// write them, both in EncodeTrace's layout (Layout, little-endian, with
// the OOM victim's memory cgroup path as the recording host found it). In
// a replay, with the source switched on, the agent gives the trace's
// records to Push: DecodeTrace is the ring buffer's decoder with the
// trace's byte order, and the records take the ring buffer's path from
// there (counters, queue, AER de-duplication, events). A replayed record
// happens now, on the replayed node: no boot stamp, no boot id, and its
// memory cgroup is the trace's path, never looked up on this host.
package ebpf
