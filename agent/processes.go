package agent

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/attribution"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
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
		names = ownersOn(s.gpus[ev.GPU.Index].Processes)
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

// withJob is labels with the hpc_job value set; a new slice when it
// changes, as published snapshots share the old one.
func withJob(labels []string, job string) []string {
	n := len(gpuLabelNames)
	if len(labels) > n && labels[n] == job {
		return labels
	}
	out := make([]string, n+1)
	copy(out, labels[:n])
	out[n] = job
	return out
}

// SelectFields exports only the fields only marks (collector.gpu.counters,
// dcgm-exporter's counters file); nil exports every field.
func (s *State) SelectFields(only []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fieldMask = only
	s.publish()
}
