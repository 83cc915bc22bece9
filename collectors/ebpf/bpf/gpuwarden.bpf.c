// SPDX-License-Identifier: GPL-2.0
//
// gpuwarden's kernel tracepoint programs. Each program is loaded and attached
// on its own, so a kernel that lacks one tracepoint (no PCIe port bus driver,
// no loadable modules) still runs the others. Every program writes one fixed
// record to the one ring buffer; a record that does not fit is counted in
// drops, never waited for.
//
// vmlinux.h is generated from this kernel's BTF (make generate); the field
// reads are CO-RE relocations, so the object runs on other kernels too.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

// Keep in step with kind* and record in collectors/ebpf/decode.go.
enum record_kind {
	KIND_OOM = 1,
	KIND_AER = 2,
	KIND_MODULE_LOAD = 3,
	KIND_MODULE_FREE = 4,
	KIND_MAX = 5,
};

#define NAME_LEN 64

struct gw_record {
	__u32 kind;
	__u32 pid;	// oom: the victim's thread-group id (its pid in /proc)
	__u32 tid;	// oom: the victim task's own id
	__u32 status;	// aer: the error status register
	__u64 time_ns;	// CLOCK_BOOTTIME
	__u64 cgroup_id; // oom: the victim's memory cgroup (kernfs id = inode)
	__u32 uid;	// oom: the victim's uid, as the tracepoint gives it
	__u8 severity;	// aer: 0 non-fatal, 1 fatal, 2 correctable (AER_*)
	__u8 tlp_valid;	// aer: the TLP header log is valid
	__u8 pad[2];
	char comm[16];	// oom: the victim's comm (any user chooses it)
	char name[NAME_LEN]; // oom: memcg leaf name; aer: device; module: name
};

// Named in the object's BTF so the Go binding is generated from it.
const struct gw_record *unused_record __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

// Records lost because the ring buffer was full, by record kind.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KIND_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline struct gw_record *reserve(__u32 kind)
{
	struct gw_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		__u64 *n = bpf_map_lookup_elem(&drops, &kind);
		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->time_ns = bpf_ktime_get_boot_ns();
	return r;
}

// oom/mark_victim: the OOM killer chose task. Its memory cgroup is the one
// of the memory controller's hierarchy (v1 or v2): task->cgroups->subsys[
// memory_cgrp_id]->cgroup. Its id is the kernfs id, which is the inode of
// the cgroup's directory; userspace turns that into a path while the cgroup
// still exists (the victim's pid is gone by then, /proc/<pid>/cgroup too).
SEC("tp_btf/mark_victim")
int BPF_PROG(mark_victim, struct task_struct *task, uid_t uid)
{
	struct gw_record *r = reserve(KIND_OOM);
	if (!r)
		return 0;
	r->pid = BPF_CORE_READ(task, tgid);
	r->tid = BPF_CORE_READ(task, pid);
	r->uid = uid;
	BPF_CORE_READ_STR_INTO(&r->comm, task, comm);
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct cgroup_subsys_state *css = BPF_CORE_READ(task, cgroups, subsys[id]);
	if (css) {
		struct kernfs_node *kn = BPF_CORE_READ(css, cgroup, kn);
		if (kn) {
			r->cgroup_id = BPF_CORE_READ(kn, id);
			bpf_probe_read_kernel_str(&r->name, sizeof(r->name), BPF_CORE_READ(kn, name));
		}
	}
	bpf_ringbuf_submit(r, 0);
	return 0;
}

// ras/aer_event: the AER driver decoded an error of a PCIe device.
// TP_PROTO(const char *dev_name, const u32 status, const u8 severity,
//          const u8 tlp_header_valid, struct pcie_tlp_log *tlp)
SEC("tp_btf/aer_event")
int BPF_PROG(aer_event, const char *dev_name, __u32 status, __u8 severity, __u8 tlp_header_valid)
{
	struct gw_record *r = reserve(KIND_AER);
	if (!r)
		return 0;
	r->status = status;
	r->severity = severity;
	r->tlp_valid = tlp_header_valid;
	bpf_probe_read_kernel_str(&r->name, sizeof(r->name), dev_name);
	bpf_ringbuf_submit(r, 0);
	return 0;
}

// struct module's name, as CO-RE sees it: this kernel may have no module
// support at all (and so no struct module in its BTF); the kernels that fire
// these tracepoints have it, and the relocation finds the field there.
struct module___gw {
	char name[56];
} __attribute__((preserve_access_index));

// is_nvidia: the module's name starts with "nvidia" (nvidia, nvidia_uvm,
// nvidia_drm, nvidia_modeset, nvidia_peermem...). Other modules never
// reach the ring buffer.
static __always_inline int module_record(struct module___gw *mod, __u32 kind)
{
	char name[8] = {};
	bpf_probe_read_kernel(&name, 6, &mod->name);
	if (name[0] != 'n' || name[1] != 'v' || name[2] != 'i' || name[3] != 'd' || name[4] != 'i' || name[5] != 'a')
		return 0;
	struct gw_record *r = reserve(kind);
	if (!r)
		return 0;
	bpf_probe_read_kernel_str(&r->name, sizeof(r->name), &mod->name);
	bpf_ringbuf_submit(r, 0);
	return 0;
}

// module/module_load: TP_PROTO(struct module *mod)
SEC("tp_btf/module_load")
int BPF_PROG(module_load, struct module___gw *mod)
{
	return module_record(mod, KIND_MODULE_LOAD);
}

// module/module_free: TP_PROTO(struct module *mod)
SEC("tp_btf/module_free")
int BPF_PROG(module_free, struct module___gw *mod)
{
	return module_record(mod, KIND_MODULE_FREE);
}
