package attribution

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// procTree writes a fixture /proc with one process per case.
func procTree(t *testing.T, files map[int]map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, fs := range files {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, body := range fs {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestOwnersOfSlurmAndKubernetesProcesses(t *testing.T) {
	env := func(kv ...string) string { return strings.Join(kv, "\x00") + "\x00" }
	proc := procTree(t, map[int]map[string]string{
		// Slurm, cgroup v1 (proctrack/cgroup, task/cgroup): one line per controller.
		101: {"cgroup": "12:pids:/slurm/uid_1000/job_4242/step_0/task_0\n7:memory:/slurm/uid_1000/job_4242/step_0/task_0\n" +
			"4:devices:/slurm/uid_1000/job_4242/step_0\n1:name=systemd:/system.slice/slurmd.service\n",
			"environ": env("PATH=/usr/bin", "SLURM_JOB_ID=4242", "SLURM_JOB_USER=alice")},
		// Slurm with several slurmd on one host: /slurm_<node>/.
		102: {"cgroup": "7:memory:/slurm_gpu-node-7/uid_2001/job_77/step_batch/task_0\n",
			"environ": env("SLURM_JOB_ID=77", "SLURM_JOB_USER=bob")},
		// Slurm, cgroup v2 (cgroup/v2 plugin): no uid in the path.
		103: {"cgroup": "0::/system.slice/slurmstepd.scope/job_9001/step_3/user/task_0\n",
			"environ": env("SLURM_JOB_ID=9001", "SLURM_JOB_USER=carol")},
		// An environment that names another job does not name this one's user.
		104: {"cgroup": "0::/system.slice/slurmstepd.scope/job_5/step_0/user/task_0\n",
			"environ": env("SLURM_JOB_ID=6", "SLURM_JOB_USER=mallory")},
		// Kubernetes, cgroupfs driver, v1 and v2.
		201: {"cgroup": "11:memory:/kubepods/burstable/pod6b1c8f1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b/3f2a9d8c7b6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a\n"},
		202: {"cgroup": "0::/kubepods/pod0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d/abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\n"},
		// Kubernetes, systemd driver, containerd and CRI-O.
		203: {"cgroup": "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n"},
		204: {"cgroup": "0::/kubepods.slice/kubepods-pod99999999_8888_7777_6666_555555555555.slice/crio-fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210.scope\n"},
		// Neither: a user session, a system service.
		301: {"cgroup": "0::/user.slice/user-1000.slice/session-3.scope\n"},
		// Hostile paths: names that only look like ours.
		401: {"cgroup": "0::/slurm/uid_1000/job_12;reboot/step_0\n"},
		402: {"cgroup": "0::/kubepods/burstable/pod$(id)/x\n"},
	})
	r := Reader{Proc: proc}
	for _, tc := range []struct {
		pid  int
		want Owner
		str  string
	}{
		{101, Owner{SlurmJob: "4242", SlurmStep: "0", SlurmUID: "1000", SlurmUser: "alice"}, "slurm job 4242.0 (alice)"},
		{102, Owner{SlurmJob: "77", SlurmStep: "batch", SlurmUID: "2001", SlurmUser: "bob"}, "slurm job 77.batch (bob)"},
		{103, Owner{SlurmJob: "9001", SlurmStep: "3", SlurmUser: "carol"}, "slurm job 9001.3 (carol)"},
		{104, Owner{SlurmJob: "5", SlurmStep: "0"}, "slurm job 5.0"},
		{201, Owner{PodUID: "6b1c8f1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b", QOS: "burstable",
			ContainerID: "3f2a9d8c7b6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a"}, "pod 6b1c8f1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b container 3f2a9d8c7b6e"},
		{202, Owner{PodUID: "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", QOS: "guaranteed",
			ContainerID: "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"}, ""},
		{203, Owner{PodUID: "11111111-2222-3333-4444-555555555555", QOS: "besteffort", Runtime: "containerd",
			ContainerID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, ""},
		{204, Owner{PodUID: "99999999-8888-7777-6666-555555555555", QOS: "guaranteed", Runtime: "cri-o",
			ContainerID: "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"}, ""},
		{301, Owner{}, ""},
		{401, Owner{}, ""},
		{402, Owner{}, ""},
	} {
		got, err := r.Of(tc.pid)
		if err != nil {
			t.Errorf("pid %d: %v", tc.pid, err)
			continue
		}
		if got != tc.want {
			t.Errorf("pid %d: %+v\nwant %+v", tc.pid, got, tc.want)
		}
		if tc.str != "" && got.String() != tc.str {
			t.Errorf("pid %d: %q, want %q", tc.pid, got.String(), tc.str)
		}
	}
	if _, err := r.Of(999); err == nil {
		t.Error("a process that is gone gave no error")
	}
}

// The files are the workload's: a symlink or a FIFO in their place is
// refused, not followed or waited on, and a huge file is read only so far.
func TestHostileProcFilesAreRefused(t *testing.T) {
	proc := procTree(t, map[int]map[string]string{1: {}, 2: {}, 3: {}})
	os.Symlink("/etc/passwd", filepath.Join(proc, "1", "cgroup"))
	if err := syscall.Mkfifo(filepath.Join(proc, "2", "cgroup"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0::/user.slice\n", 1<<20) + "0::/slurm/uid_1/job_2/step_0\n"
	os.WriteFile(filepath.Join(proc, "3", "cgroup"), []byte(big), 0o644)
	r := Reader{Proc: proc}
	if _, err := r.Of(1); err == nil {
		t.Error("a symlinked cgroup file was followed")
	}
	if _, err := r.Of(2); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a FIFO: %v", err)
	}
	if o, err := r.Of(3); err != nil || o.Scheduler() != "" {
		t.Errorf("a line past the read limit was used: %+v %v", o, err)
	}
}

// The real /proc of this process: outside any scheduler, no error.
func TestTheRealProcOfThisProcess(t *testing.T) {
	o, err := Reader{}.Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if o.Scheduler() == "slurm" {
		t.Errorf("this test runs in %+v?", o)
	}
}

// Any cgroup text gives an owner whose fields have the strict shapes.
func FuzzParseCgroup(f *testing.F) {
	f.Add([]byte("7:memory:/slurm/uid_1000/job_4242/step_0/task_0\n"))
	f.Add([]byte("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod11111111_2222_3333_4444_555555555555.slice/cri-containerd-0123456789abcdef.scope\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o := ParseCgroup(b)
		for _, v := range []string{o.SlurmJob, o.SlurmStep, o.SlurmUID, o.PodUID, o.ContainerID} {
			if strings.ContainsAny(v, " \n\"'`$;/\\") || len(v) > 128 {
				t.Fatalf("owner field %q from %q", v, b)
			}
		}
	})
}
