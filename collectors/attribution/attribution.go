// Package attribution says whose a GPU process is: the Slurm job or the
// Kubernetes pod and container it runs in, read from /proc/<pid>/cgroup
// (under --path.procfs) and, for Slurm, the job's environment.
//
// Everything read here is written by the workload or its scheduler, so it
// is treated as hostile: files are read with a size bound and without
// following a symlink at the last component, and only values that match
// the strict shapes below (digits, UUIDs, hex container ids, user names)
// are kept. Nothing here becomes a label unless it has that shape.
package attribution

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/gpuwarden/gpuwarden/internal/pattern"
)

// Owner is who a process belongs to. The zero value is "no scheduler":
// a process started outside Slurm and Kubernetes.
type Owner struct {
	// Slurm
	SlurmJob  string `json:"slurm_job,omitempty"`  // job id, digits (array tasks: the raw job id)
	SlurmStep string `json:"slurm_step,omitempty"` // step: digits, batch, extern or interactive
	SlurmUID  string `json:"slurm_uid,omitempty"`  // from the cgroup path (v1 layout)
	SlurmUser string `json:"slurm_user,omitempty"` // from the job's environment
	// Kubernetes
	PodUID      string `json:"pod_uid,omitempty"`      // the pod's UID, with dashes
	ContainerID string `json:"container_id,omitempty"` // the container runtime's id (hex)
	Runtime     string `json:"runtime,omitempty"`      // containerd, cri-o, docker, when the path says
	QOS         string `json:"qos_class,omitempty"`    // guaranteed, burstable, besteffort
	// The pod's namespace and name, from the kubelet's pod-resources API
	// where the agent could join them to PodUID without doubt (the API
	// names pods, not UIDs; see agent.State.SetPods).
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
}

// Scheduler names who scheduled the process: "slurm", "kubernetes" or "".
func (o Owner) Scheduler() string {
	switch {
	case o.SlurmJob != "":
		return "slurm"
	case o.PodUID != "":
		return "kubernetes"
	}
	return ""
}

// String is a short human name: "slurm job 1234 (alice)", "pod 6b1c... container 3f2a...",
// "pod ml/train-0 container 3f2a..." once the pod's name is known.
func (o Owner) String() string {
	switch o.Scheduler() {
	case "slurm":
		s := "slurm job " + o.SlurmJob
		if o.SlurmStep != "" {
			s += "." + o.SlurmStep
		}
		if o.SlurmUser != "" {
			s += " (" + o.SlurmUser + ")"
		} else if o.SlurmUID != "" {
			s += " (uid " + o.SlurmUID + ")"
		}
		return s
	case "kubernetes":
		s := "pod " + o.PodUID
		if o.PodName != "" {
			s = "pod " + o.PodNamespace + "/" + o.PodName
		}
		if o.ContainerID != "" {
			s += " container " + short(o.ContainerID)
		}
		return s
	}
	return ""
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Reader reads owners under a procfs mount.
type Reader struct {
	Proc string // the procfs mount, default /proc
}

// Limits on what is read from a process's files.
const (
	maxCgroupFile  = 64 << 10
	maxEnvironFile = 256 << 10
)

// Of returns the owner of pid. A process that is gone, or files that
// cannot be read, are an error; a process outside any scheduler is the
// zero Owner and no error.
func (r Reader) Of(pid int) (Owner, error) {
	if pid <= 0 {
		return Owner{}, errors.New("attribution: pid must be positive")
	}
	dir := filepath.Join(r.proc(), strconv.Itoa(pid))
	b, err := readBounded(filepath.Join(dir, "cgroup"), maxCgroupFile)
	if err != nil {
		return Owner{}, err
	}
	o := ParseCgroup(b)
	if o.SlurmJob != "" {
		// The user name is in the job's environment, not in the path.
		if env, err := readBounded(filepath.Join(dir, "environ"), maxEnvironFile); err == nil {
			o.fromEnviron(env)
		}
	}
	return o, nil
}

func (r Reader) proc() string {
	if r.Proc == "" {
		return "/proc"
	}
	return r.Proc
}

// readBounded reads at most limit bytes of a regular file, refusing a
// symlink at the last component and anything that is not a regular file
// (a FIFO would block; /proc files report size 0 and are read to EOF).
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New(path + ": not a regular file")
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

var (
	slurmJobRE  = regexp.MustCompile(`^job_([0-9]{1,12})$`)
	slurmUIDRE  = regexp.MustCompile(`^uid_([0-9]{1,10})$`)
	slurmStepRE = regexp.MustCompile(`^step_([0-9]{1,10}|batch|extern|interactive)$`)
	podUIDRE    = regexp.MustCompile(`^[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}$`)
	hexIDRE     = pattern.MustCompile(`^[0-9a-f]+$`, 12, 128)
	userRE      = pattern.MustCompile(`^[A-Za-z0-9._][A-Za-z0-9._-]*$`, 0, 64)
)

// ParseCgroup reads a /proc/<pid>/cgroup file, cgroup v1 or v2, for the
// Slurm and Kubernetes layouts:
//
//	Slurm, v1:  7:memory:/slurm/uid_1000/job_1234/step_0/task_0 (or /slurm_<node>/...)
//	Slurm, v2:  0::/system.slice/slurmstepd.scope/job_1234/step_0/user/task_0
//	k8s cgroupfs: 0::/kubepods/burstable/pod<uid>/<container id>
//	k8s systemd:  0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope
func ParseCgroup(b []byte) Owner {
	var best Owner
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		// hierarchy-ID:controllers:path; the path may itself hold colons.
		parts := bytes.SplitN(line, []byte{':'}, 3)
		if len(parts) != 3 {
			continue
		}
		o := parsePath(string(parts[2]))
		if o.Scheduler() != "" && (best.Scheduler() == "" || detail(o) > detail(best)) {
			best = o
		}
	}
	return best
}

// detail ranks owners by how much they say, so the most specific
// hierarchy wins (v1 lists one line per controller).
func detail(o Owner) int {
	n := 0
	for _, s := range []string{o.SlurmJob, o.SlurmStep, o.SlurmUID, o.PodUID, o.ContainerID, o.QOS} {
		if s != "" {
			n++
		}
	}
	return n
}

func parsePath(p string) Owner {
	var o Owner
	segs := strings.Split(p, "/")
	for i, s := range segs {
		switch {
		case s == "slurm" || strings.HasPrefix(s, "slurm_") || s == "slurmstepd.scope" || strings.HasSuffix(s, "slurmstepd.scope"):
			o.slurm(segs[i+1:])
			if o.SlurmJob != "" {
				return o
			}
		case s == "kubepods" || s == "kubepods.slice":
			o.kubernetes(segs[i+1:])
			if o.PodUID != "" {
				return o
			}
		}
	}
	return Owner{}
}

func (o *Owner) slurm(segs []string) {
	for _, s := range segs {
		if m := slurmUIDRE.FindStringSubmatch(s); m != nil {
			o.SlurmUID = m[1]
		} else if m := slurmJobRE.FindStringSubmatch(s); m != nil {
			o.SlurmJob = m[1]
		} else if m := slurmStepRE.FindStringSubmatch(s); m != nil && o.SlurmJob != "" {
			o.SlurmStep = m[1]
		}
	}
}

func (o *Owner) kubernetes(segs []string) {
	for _, s := range segs {
		name := strings.TrimSuffix(s, ".slice")
		name = strings.TrimSuffix(name, ".scope")
		switch {
		case name == "burstable" || name == "besteffort" || name == "kubepods-burstable" || name == "kubepods-besteffort":
			o.QOS = strings.TrimPrefix(name, "kubepods-")
		case strings.Contains(name, "pod") && o.PodUID == "":
			uid := name[strings.LastIndex(name, "pod")+3:]
			if podUIDRE.MatchString(uid) {
				o.PodUID = strings.ReplaceAll(uid, "_", "-")
				if o.QOS == "" {
					o.QOS = "guaranteed"
				}
			}
		case o.PodUID != "":
			runtime, id := containerID(name)
			if hexIDRE.MatchString(id) {
				o.Runtime, o.ContainerID = runtime, id
			}
		}
	}
}

// containerID splits a systemd scope name ("cri-containerd-<id>",
// "crio-<id>", "docker-<id>") or takes a cgroupfs directory as the id.
func containerID(name string) (runtime, id string) {
	for _, p := range []struct{ prefix, runtime string }{{"cri-containerd-", "containerd"}, {"crio-", "cri-o"}, {"docker-", "docker"}, {"containerd-", "containerd"}} {
		if rest, ok := strings.CutPrefix(name, p.prefix); ok {
			return p.runtime, rest
		}
	}
	return "", name
}

// fromEnviron fills the Slurm user from the job's environment
// (SLURM_JOB_USER), checking the job id matches the cgroup's.
func (o *Owner) fromEnviron(env []byte) {
	var job, user string
	for _, kv := range bytes.Split(env, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok {
			continue
		}
		switch string(k) {
		case "SLURM_JOB_ID":
			job = string(v)
		case "SLURM_JOB_USER":
			user = string(v)
		}
	}
	if job == o.SlurmJob && userRE.MatchString(user) {
		o.SlurmUser = user
	}
}
