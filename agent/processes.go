package agent

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/attribution"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kubelet"
)

// ProcessState is one process on a GPU and whose it is.
type ProcessState struct {
	gpu.Process
	Owner attribution.Owner `json:"owner"`
}

// Attribute makes State name the Slurm job or Kubernetes pod of every GPU
// process, read under procfs. Only for the host's own GPUs: a replayed
// node's process ids mean nothing here.
func (s *State) Attribute(procfs string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attr = &attribution.Reader{Proc: procfs}
	s.owners = map[uint32]attribution.Owner{}
}

// owned looks up each process's owner, once per pid: a process keeps its
// cgroup for its life, and the cache forgets pids no GPU lists any more.
func (s *State) owned(ps []gpu.Process) []ProcessState {
	if len(ps) == 0 {
		return nil
	}
	out := make([]ProcessState, len(ps))
	for i, p := range ps {
		out[i].Process = p
		out[i].Owner = p.Owner // a replayed trace says whose, as its host saw it
		if s.attr == nil || p.Owner.Scheduler() != "" {
			continue
		}
		o, ok := s.owners[p.PID]
		if !ok {
			o, _ = s.attr.Of(int(p.PID)) // gone already, or unreadable: no owner
			s.owners[p.PID] = o
		}
		out[i].Owner = o
	}
	if s.attr != nil && len(s.owners) > 4*gpu.MaxProcesses*max(len(s.gpus), 1) {
		live := map[uint32]bool{}
		for _, g := range s.gpus {
			for _, p := range g.Processes {
				live[p.PID] = true
			}
		}
		for _, p := range ps {
			live[p.PID] = true
		}
		maps.DeleteFunc(s.owners, func(pid uint32, _ attribution.Owner) bool { return !live[pid] })
	}
	return out
}

// maxNamedOwners bounds the owners an event names.
const maxNamedOwners = 4

// withOwners names, in an event about a GPU, the jobs and pods that were
// on it (field "owners"): an Xid on GPU 3 says whose work it hit, in
// /v1/events and in a remediation hook's JSON. An OOM kill names no GPU:
// when its victim was a GPU process, it names the job or pod the victim
// belonged to, as the GPUs' latest round listed it.
func (s *State) withOwners(ev event.Event) event.Event {
	var names []string
	switch {
	case ev.GPU.Index >= 0 && ev.GPU.Index < len(s.gpus):
		g := &s.gpus[ev.GPU.Index]
		names = withKubeletPods(ownersOn(g.Processes), g)
	case ev.Kind == event.KindOOMKill:
		pid, err := strconv.ParseUint(ev.Fields[fieldPID], 10, 32)
		if err != nil {
			return ev
		}
		var victim []ProcessState
		for _, g := range s.gpus {
			for _, p := range g.Processes {
				if uint64(p.PID) == pid {
					victim = append(victim, p)
				}
			}
		}
		names = ownersOn(victim)
	}
	if len(names) == 0 {
		return ev
	}
	fields := make(map[string]string, len(ev.Fields)+1)
	maps.Copy(fields, ev.Fields)
	fields[FieldOwners] = strings.Join(names, "; ")
	ev.Fields = fields
	return ev
}

// fieldPID is the field an event names its process in (kmsg.FieldPID).
const fieldPID = "pid"

// ownersOn names the jobs and pods on a GPU as an event names them (at most
// maxNamedOwners).
func ownersOn(ps []ProcessState) []string {
	var names []string
	for _, p := range ps {
		if n := p.Owner.String(); n != "" && !slices.Contains(names, n) && len(names) < maxNamedOwners {
			names = append(names, n)
		}
	}
	return names
}

// withKubeletPods adds to names the pods the kubelet gave g to
// (collector.gpu.kubernetes) that no process on it named, so an event on a
// GPU names its pods whether or not a process of theirs was seen on it.
func withKubeletPods(names []string, g *GPUState) []string {
	named := map[string]bool{}
	for _, p := range g.Processes {
		if p.Owner.PodName != "" {
			named[p.Owner.PodNamespace+"/"+p.Owner.PodName] = true
		}
	}
	for _, r := range g.Pods {
		if n := "pod " + r.Namespace + "/" + r.Pod + " container " + r.Container; !named[r.Namespace+"/"+r.Pod] && !slices.Contains(names, n) && len(names) < maxNamedOwners {
			names = append(names, n)
		}
	}
	return names
}

// FieldOwners is the event field naming the jobs and pods on the GPU.
const FieldOwners = "owners"

// LabelJobs makes every GPU series carry dcgm-exporter's hpc_job label:
// the Slurm jobs on the GPU, comma-separated (collector.gpu.job-label).
func (s *State) LabelJobs(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobLabel = on
}

// jobsOn is the hpc_job value of a GPU: its processes' Slurm job ids,
// sorted, at most maxNamedOwners.
func jobsOn(ps []ProcessState) string {
	var jobs []string
	for _, p := range ps {
		if j := p.Owner.SlurmJob; j != "" && !slices.Contains(jobs, j) && len(jobs) < maxNamedOwners {
			jobs = append(jobs, j)
		}
	}
	slices.Sort(jobs)
	return strings.Join(jobs, ",")
}

// withExtra is labels with its optional name and value pairs replaced by
// extra; the same slice when nothing changes, a new one otherwise, as
// published snapshots share the old one.
func withExtra(labels, extra []string) []string {
	n := len(gpuLabelNames)
	if slices.Equal(labels[n:], extra) {
		return labels
	}
	out := make([]string, n+len(extra))
	copy(out, labels[:n])
	copy(out[n:], extra)
	return out
}

// relabel sets a GPU's optional labels from its processes (hpc_job) and
// the kubelet's assignments (container, namespace, pod). Callers hold mu.
func (s *State) relabel(g *GPUState) {
	if g.labels == nil {
		return
	}
	var extra []string
	if s.jobLabel {
		extra = append(extra, "hpc_job", jobsOn(g.Processes))
	}
	g.Pods = nil
	if s.podLabel {
		g.Pods = s.freshPods()[g.Info.UUID]
		c, ns, pod := podsOn(g.Pods)
		extra = append(extra, "container", c, "namespace", ns, "pod", pod)
	}
	g.labels = withExtra(g.labels, extra)
}

// LabelPods makes every GPU series carry dcgm-exporter's container,
// namespace and pod labels (collector.gpu.kubernetes), from SetPods.
func (s *State) LabelPods(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.podLabel = on
}

// SetPods takes the kubelet's answer, had at at: which containers hold
// which GPUs, by GPU UUID. It is believed for kubelet.Stale; after that
// the labels are empty again rather than name pods that may be gone.
func (s *State) SetPods(a kubelet.Assignments, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods, s.podsAt = a, at
	for i := range s.gpus {
		s.relabel(&s.gpus[i])
	}
	s.publish()
}

// freshPods is the kubelet's last answer while it is believed, else nil.
func (s *State) freshPods() kubelet.Assignments {
	if s.pods == nil || s.clock().Sub(s.podsAt) > kubelet.Stale {
		return nil
	}
	return s.pods
}

// podsOn is the container, namespace and pod label values of a GPU. One
// series per GPU whoever holds it: a GPU that several containers share
// (time-slicing, MPS) lists up to maxNamedOwners of them, sorted by
// namespace, pod and container, comma-separated, position by position in
// the three labels. dcgm-exporter writes one series per pod instead, which
// makes sum() over a shared GPU count it once per pod.
func podsOn(refs []kubelet.Ref) (container, namespace, pod string) {
	refs = refs[:min(len(refs), maxNamedOwners)]
	cs, nss, ps := make([]string, len(refs)), make([]string, len(refs)), make([]string, len(refs))
	for i, r := range refs {
		cs[i], nss[i], ps[i] = r.Container, r.Namespace, r.Pod
	}
	return strings.Join(cs, ","), strings.Join(nss, ","), strings.Join(ps, ",")
}

// namePods gives processes their pod's name and namespace. The kubelet
// names pods but not their UIDs, and a process's cgroup gives the UID but
// not the name, so they are joined through the GPU: a GPU the kubelet gave
// to one pod, whose processes are all of one pod UID, ties that UID to
// that pod. A UID tied to two pods, or a pod to two UIDs, is left unnamed.
// It trusts the device plugin: a pod using a GPU it was not given (all
// GPUs visible through NVIDIA_VISIBLE_DEVICES) on a GPU given to another
// pod with no processes of its own would be misnamed. Callers hold mu, and
// the GPUs' Processes are this round's own slices.
func (s *State) namePods() {
	pods := s.freshPods()
	if pods == nil {
		return
	}
	type name struct{ ns, pod string }
	byUID := map[string]name{}
	uidOf := map[name]string{}
	doubt := map[string]bool{}
	for i := range s.gpus {
		g := &s.gpus[i]
		var n name
		held := 0
		for _, r := range pods[g.Info.UUID] {
			if q := (name{r.Namespace, r.Pod}); held == 0 || q != n {
				n, held = q, held+1
			}
		}
		uid := ""
		for _, p := range g.Processes {
			if u := p.Owner.PodUID; u != "" && u != uid {
				if uid != "" {
					uid = "-" // more than one pod on the GPU
					break
				}
				uid = u
			}
		}
		if held != 1 || uid == "" || uid == "-" {
			continue
		}
		if prev, ok := byUID[uid]; ok && prev != n {
			doubt[uid] = true
		}
		if prev, ok := uidOf[n]; ok && prev != uid {
			doubt[uid], doubt[prev] = true, true
		}
		byUID[uid], uidOf[n] = n, uid
	}
	for i := range s.gpus {
		for j := range s.gpus[i].Processes {
			o := &s.gpus[i].Processes[j].Owner
			if n, ok := byUID[o.PodUID]; ok && !doubt[o.PodUID] && o.PodName == "" {
				o.PodNamespace, o.PodName = n.ns, n.pod
			}
		}
	}
}

// SelectFields exports only the fields only marks (collector.gpu.counters,
// dcgm-exporter's counters file); nil exports every field.
func (s *State) SelectFields(only []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fieldMask = only
	s.publish()
}
