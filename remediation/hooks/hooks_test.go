// Package hooks holds the remediation hooks gpuwarden ships (shell scripts,
// not Go). These tests run them the way the engine does, with the fixed
// environment of README.md: the Slurm hooks against a real one-node Slurm,
// the others against stand-ins that record the argv they were given.
package hooks

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hooks are the scripts this directory ships.
var hooks = []string{"slurm-drain", "slurm-resume", "k8s-drain", "gpu-reset", "dkms-autoinstall", "reboot"}

const enginePath = "/usr/sbin:/usr/bin:/sbin:/bin"

// hookDir is the directory of this file, where the hooks are.
func hookDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Dir(file)
}

func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (make deps installs it)", n)
		}
	}
}

// contractEnv is the environment the engine gives a hook, for an Xid 79 on
// GPU 3, with vars ("NAME=value", or "NAME" to unset) applied on top.
// pathDir, if not empty, goes first on PATH: where the stand-ins are.
func contractEnv(pathDir string, vars ...string) []string {
	path := enginePath
	if pathDir != "" {
		path = pathDir + ":" + path
	}
	env := map[string]string{
		"PATH":                       path,
		"LANG":                       "C",
		"GPUWARDEN_RULE":             "xid-79",
		"GPUWARDEN_HOOK":             "test",
		"GPUWARDEN_NODE":             "gpu-node-07",
		"GPUWARDEN_GPU_INDEX":        "3",
		"GPUWARDEN_GPU_UUID":         "GPU-3f1c2a9e-5b7d-4c1e-9a2b-0c4d6e8f1a2b",
		"GPUWARDEN_GPU_PCI_BUS_ID":   "00000000:3B:00.0",
		"GPUWARDEN_EVENT_KIND":       "xid",
		"GPUWARDEN_EVENT_CODE":       "79",
		"GPUWARDEN_ACTION":           "drain and reset",
		"GPUWARDEN_NEXT_BOOT_KERNEL": "6.1.0-28-amd64",
		"GPUWARDEN_REASON":           "gpuwarden: xid 79 on GPU 3 (00000000:3B:00.0)",
	}
	for _, v := range vars {
		if k, val, ok := strings.Cut(v, "="); ok {
			env[k] = val
		} else {
			delete(env, v)
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// runHook runs a hook as the engine does (working directory /, env as
// given, stdin an event whose text is hostile) and returns its combined
// output and exit code.
func runHook(t *testing.T, env []string, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(hookDir(t), name), args...)
	cmd.Dir = "/"
	cmd.Env = env
	cmd.Stdin = strings.NewReader(`{"event":{"raw":"NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=$(touch /tmp/pwned);reboot"}}`)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return string(out), 0
}

// standIns writes, into a new directory, a stand-in for each named command
// that appends its name and argv to a log (the name as "@name", then one
// argument a line) and then runs extra[name], if any. It returns the
// directory and a function that reads the calls logged so far.
func standIns(t *testing.T, extra map[string]string, names ...string) (string, func() [][]string) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls.log")
	for _, n := range names {
		script := fmt.Sprintf("#!/bin/sh\n{ echo '@%s'; for a; do printf '%%s\\n' \"$a\"; done; } >>'%s'\n%s\n", n, log, extra[n])
		if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, func() [][]string {
		data, err := os.ReadFile(log)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		} else if err != nil {
			t.Fatal(err)
		}
		var calls [][]string
		for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			if name, ok := strings.CutPrefix(l, "@"); ok {
				calls = append(calls, []string{name})
			} else if len(calls) > 0 {
				calls[len(calls)-1] = append(calls[len(calls)-1], l)
			}
		}
		return calls
	}
}

func wantCalls(t *testing.T, got, want [][]string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n got  %q\n want %q", got, want)
	}
}

func TestK8sDrainCordonsAnnotatesAndDrains(t *testing.T) {
	dir, calls := standIns(t, nil, "kubectl")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := runHook(t, contractEnv(dir), "k8s-drain", "--kubeconfig="+kubeconfig, "--timeout=5m")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	k := "--kubeconfig=" + kubeconfig
	wantCalls(t, calls(), [][]string{
		{"kubectl", k, "cordon", "gpu-node-07"},
		{"kubectl", k, "annotate", "--overwrite", "node", "gpu-node-07",
			"gpuwarden/drain-reason=gpuwarden: xid 79 on GPU 3 (00000000:3B:00.0)"},
		{"kubectl", k, "drain", "gpu-node-07", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=5m"},
	})
}

func TestK8sDrainWithoutAReasonSkipsTheAnnotationAndDefaultsItsTimeout(t *testing.T) {
	dir, calls := standIns(t, nil, "kubectl")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := runHook(t, contractEnv(dir, "GPUWARDEN_REASON"), "k8s-drain", "--kubeconfig="+kubeconfig)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	k := "--kubeconfig=" + kubeconfig
	wantCalls(t, calls(), [][]string{
		{"kubectl", k, "cordon", "gpu-node-07"},
		{"kubectl", k, "drain", "gpu-node-07", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=300s"},
	})
}

func TestK8sDrainStopsWhenCordonFails(t *testing.T) {
	dir, calls := standIns(t, map[string]string{"kubectl": "exit 1"}, "kubectl")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := runHook(t, contractEnv(dir), "k8s-drain", "--kubeconfig="+kubeconfig); code != 1 {
		t.Errorf("exit %d, want kubectl's 1:\n%s", code, out)
	}
	if c := calls(); len(c) != 1 {
		t.Errorf("ran on after a failed cordon: %q", c)
	}
}

// The stand-in nvidia-smi answers the compute-apps query with the file
// "apps" beside it, if there is one.
const nvidiaSmiApps = `case "$1" in --query-compute-apps=*) cat "$(dirname "$0")/apps" 2>/dev/null || :;; esac`

func TestGPUResetResetsAnIdleGPUByBusID(t *testing.T) {
	dir, calls := standIns(t, map[string]string{"nvidia-smi": nvidiaSmiApps}, "nvidia-smi")
	out, code := runHook(t, contractEnv(dir), "gpu-reset")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	wantCalls(t, calls(), [][]string{
		{"nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader", "-i", "00000000:3B:00.0"},
		{"nvidia-smi", "--gpu-reset", "-i", "00000000:3B:00.0"},
	})
}

func TestGPUResetRefusesAGPUWithAComputeProcess(t *testing.T) {
	dir, calls := standIns(t, map[string]string{"nvidia-smi": nvidiaSmiApps}, "nvidia-smi")
	if err := os.WriteFile(filepath.Join(dir, "apps"), []byte("48213\n48377\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runHook(t, contractEnv(dir), "gpu-reset")
	if code != 3 {
		t.Fatalf("exit %d, want 3:\n%s", code, out)
	}
	if !strings.Contains(out, "48213 48377") {
		t.Errorf("output does not name the processes:\n%s", out)
	}
	wantCalls(t, calls(), [][]string{
		{"nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader", "-i", "00000000:3B:00.0"},
	})
}

func TestGPUResetStopsWhenTheQueryFails(t *testing.T) {
	// nvidia-smi exits 6 ("No devices were found") for a bus id it does not know.
	dir, calls := standIns(t, map[string]string{"nvidia-smi": "exit 6"}, "nvidia-smi")
	if out, code := runHook(t, contractEnv(dir), "gpu-reset"); code != 6 {
		t.Errorf("exit %d, want nvidia-smi's 6:\n%s", code, out)
	}
	if c := calls(); len(c) != 1 {
		t.Errorf("reset after a failed query: %q", c)
	}
}

func TestDkmsAutoinstallBuildsForTheNextBootKernel(t *testing.T) {
	dir, calls := standIns(t, nil, "dkms")
	out, code := runHook(t, contractEnv(dir, "GPUWARDEN_NEXT_BOOT_KERNEL=6.8.0-51-generic"), "dkms-autoinstall")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	wantCalls(t, calls(), [][]string{
		{"dkms", "autoinstall", "-k", "6.8.0-51-generic"},
		{"dkms", "status", "-k", "6.8.0-51-generic"},
	})
}

// dkms 3.0 exits 0 from autoinstall and status on a module whose source is
// gone (github.com/dkms-project/dkms issue 352); the message is its own.
func TestDkmsAutoinstallFailsWhenDkmsStatusReportsAnError(t *testing.T) {
	dir, _ := standIns(t, map[string]string{"dkms": `[ "$1" = status ] && { echo 'Error! Could not locate dkms.conf file.' >&2; echo 'File: /var/lib/dkms/nvidia/535.104.05/source/dkms.conf does not exist.' >&2; }; exit 0`}, "dkms")
	out, code := runHook(t, contractEnv(dir), "dkms-autoinstall")
	if code != 1 || !strings.Contains(out, "dkms.conf does not exist") {
		t.Errorf("exit %d, want 1 with dkms's message:\n%s", code, out)
	}
}

// TestDkmsAutoinstallWithTheRealDkms: Debian's dkms takes the argv; with no
// module registered there is nothing to build and the hook succeeds. Only
// where no module is registered: otherwise it would build them.
func TestDkmsAutoinstallWithTheRealDkms(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: dkms reads /var/lib/dkms as root")
	}
	needTool(t, "dkms")
	if out, err := exec.Command("dkms", "status").CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Skipf("DKMS modules are registered on this machine; not building them for a test kernel (%v):\n%s", err, out)
	}
	out, code := runHook(t, contractEnv("", "GPUWARDEN_NEXT_BOOT_KERNEL=6.1.0-0-gpuwarden-test"), "dkms-autoinstall")
	if code != 0 {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestRebootLogsTheReasonThenReboots(t *testing.T) {
	dir, calls := standIns(t, nil, "systemctl", "logger")
	out, code := runHook(t, contractEnv(dir), "reboot")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	wantCalls(t, calls(), [][]string{
		{"logger", "-t", "gpuwarden", "-p", "daemon.notice", "--", "rebooting: gpuwarden: xid 79 on GPU 3 (00000000:3B:00.0)"},
		{"systemctl", "reboot"},
	})
}

func TestRebootGoesAheadWhenTheLogLineCannotBeWritten(t *testing.T) {
	dir, calls := standIns(t, map[string]string{"logger": "exit 1"}, "systemctl", "logger")
	if out, code := runHook(t, contractEnv(dir), "reboot"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if c := calls(); len(c) != 2 || c[1][0] != "systemctl" {
		t.Errorf("calls %q, want logger then systemctl", c)
	}
}

// TestHooksRunNothingWithoutTheirVariables: a hook whose input is missing
// or malformed exits 2 and runs no command at all.
func TestHooksRunNothingWithoutTheirVariables(t *testing.T) {
	for _, tc := range []struct {
		hook string
		vars []string
		args []string
	}{
		{"slurm-drain", []string{"GPUWARDEN_NODE"}, nil},
		{"slurm-drain", []string{"GPUWARDEN_NODE=--all"}, nil},
		{"slurm-drain", []string{"GPUWARDEN_REASON"}, nil},
		{"slurm-drain", []string{"GPUWARDEN_REASON=maintenance by ops"}, nil},
		{"slurm-drain", []string{"GPUWARDEN_DRY_RUN=1"}, nil},
		{"slurm-resume", []string{"GPUWARDEN_NODE"}, nil},
		{"slurm-resume", []string{"GPUWARDEN_NODE=-x"}, nil},
		{"slurm-resume", []string{"GPUWARDEN_DRY_RUN=1"}, nil},
		{"k8s-drain", []string{"GPUWARDEN_NODE"}, []string{"--kubeconfig=KUBECONFIG"}},
		{"k8s-drain", []string{"GPUWARDEN_NODE=--force"}, []string{"--kubeconfig=KUBECONFIG"}},
		{"k8s-drain", []string{"GPUWARDEN_DRY_RUN=1"}, []string{"--kubeconfig=KUBECONFIG"}},
		{"k8s-drain", nil, []string{"--kubeconfig=/nonexistent/kubeconfig"}},
		{"k8s-drain", nil, []string{"--kubeconfig=KUBECONFIG", "--timeout=300"}},
		{"k8s-drain", nil, []string{"--kubeconfig=KUBECONFIG", "--timeout=-1s"}},
		{"k8s-drain", nil, []string{"--kubeconfig=KUBECONFIG", "--force"}},
		{"gpu-reset", []string{"GPUWARDEN_GPU_PCI_BUS_ID"}, nil},
		{"gpu-reset", []string{"GPUWARDEN_GPU_PCI_BUS_ID="}, nil},
		{"gpu-reset", []string{"GPUWARDEN_GPU_PCI_BUS_ID=-r"}, nil},
		{"gpu-reset", []string{"GPUWARDEN_DRY_RUN=1"}, nil},
		{"dkms-autoinstall", []string{"GPUWARDEN_NEXT_BOOT_KERNEL"}, nil},
		{"dkms-autoinstall", []string{"GPUWARDEN_NEXT_BOOT_KERNEL="}, nil},
		{"dkms-autoinstall", []string{"GPUWARDEN_NEXT_BOOT_KERNEL=--all"}, nil},
		{"dkms-autoinstall", []string{"GPUWARDEN_DRY_RUN=1"}, nil},
		{"reboot", []string{"GPUWARDEN_REASON"}, nil},
		{"reboot", []string{"GPUWARDEN_REASON=because"}, nil},
		{"reboot", []string{"GPUWARDEN_DRY_RUN=1"}, nil},
	} {
		t.Run(tc.hook+" "+strings.Join(append(tc.vars, tc.args...), " "), func(t *testing.T) {
			dir, calls := standIns(t, nil, "scontrol", "kubectl", "nvidia-smi", "dkms", "systemctl", "logger")
			kubeconfig := filepath.Join(dir, "kubeconfig")
			if err := os.WriteFile(kubeconfig, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			var args []string
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "KUBECONFIG", kubeconfig))
			}
			out, code := runHook(t, contractEnv(dir, tc.vars...), tc.hook, args...)
			if code != 2 {
				t.Errorf("exit %d, want 2:\n%s", code, out)
			}
			if c := calls(); len(c) != 0 {
				t.Errorf("ran %q", c)
			}
			if !strings.Contains(out, tc.hook+": ") {
				t.Errorf("refused without saying why (%q)", out)
			}
		})
	}
}

func TestHooksAreShellcheckClean(t *testing.T) {
	needTool(t, "shellcheck")
	args := []string{"--shell=sh", "--severity=style"}
	for _, h := range hooks {
		args = append(args, filepath.Join(hookDir(t), h))
	}
	if out, err := exec.Command("shellcheck", args...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// stdinUse matches a command that would read stdin or run text as code.
var stdinUse = regexp.MustCompile(`(^|[;&|(]|then|do|else)\s*(read|eval|source|\.|jq|cat)(\s+-)?(\s|$)|/dev/stdin|/proc/self/fd/0`)

func TestHooksAreExecutableAndNeverReadStdin(t *testing.T) {
	for _, h := range hooks {
		path := filepath.Join(hookDir(t), h)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", h, fi.Mode().Perm())
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Event text is attacker-controlled: nothing may read, eval or
		// source it. A shipped hook has no business with stdin at all.
		for i, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			if m := stdinUse.FindString(l); m != "" {
				t.Errorf("%s:%d uses %q: %s", h, i+1, strings.TrimSpace(m), l)
			}
		}
	}
}

// slurm is a one-node Slurm cluster started from Debian's packages in a
// temporary directory: munged, slurmctld and slurmd, stopped by t.Cleanup.
type slurm struct {
	dir  string
	node string
	conf string
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startSlurm(t *testing.T) *slurm {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts munged, slurmctld and slurmd")
	}
	needTool(t, "munged", "mungekey", "slurmctld", "slurmd", "scontrol")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	s := &slurm{dir: t.TempDir(), node: strings.SplitN(host, ".", 2)[0]}
	s.conf = filepath.Join(s.dir, "slurm.conf")
	for _, d := range []string{"state", "spool"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(s.dir, "munge.key")
	if out, err := exec.Command("mungekey", "--create", "--keyfile="+key).CombinedOutput(); err != nil {
		t.Fatalf("mungekey: %v\n%s", err, out)
	}
	socket := filepath.Join(s.dir, "munge.socket.2")
	conf := fmt.Sprintf(`ClusterName=gpuwardentest
SlurmctldHost=%[1]s(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=%[3]d
SlurmdPort=%[4]d
AuthType=auth/munge
AuthInfo=socket=%[5]s
StateSaveLocation=%[2]s/state
SlurmdSpoolDir=%[2]s/spool
SlurmctldPidFile=%[2]s/slurmctld.pid
SlurmdPidFile=%[2]s/slurmd.pid
SlurmctldLogFile=%[2]s/slurmctld.log
SlurmdLogFile=%[2]s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
MpiDefault=none
ReturnToService=2
NodeName=%[1]s NodeAddr=127.0.0.1 CPUs=%[6]d State=UNKNOWN
PartitionName=debug Nodes=%[1]s Default=YES MaxTime=INFINITE State=UP
`, s.node, s.dir, freePort(t), freePort(t), socket, runtime.NumCPU())
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	// --force: munged refuses a socket directory under /tmp otherwise.
	s.daemon(t, "munged", "--foreground", "--force", "--key-file="+key, "--socket="+socket,
		"--pid-file="+filepath.Join(s.dir, "munged.pid"), "--log-file="+filepath.Join(s.dir, "munged.log"),
		"--seed-file="+filepath.Join(s.dir, "munged.seed"))
	if !waitFor(5*time.Second, func() bool { _, err := os.Stat(socket); return err == nil }) {
		t.Fatalf("munged made no socket:\n%s", s.logs())
	}
	s.daemon(t, "slurmctld", "-D")
	s.daemon(t, "slurmd", "-D")
	if !waitFor(30*time.Second, func() bool { state, _ := s.nodeState(t); return state == "IDLE" }) {
		state, reason := s.nodeState(t)
		t.Fatalf("node %s is %q (%q), not IDLE, after 30 s:\n%s", s.node, state, reason, s.logs())
	}
	return s
}

// daemon starts a daemon in the foreground and stops it at cleanup.
func (s *slurm) daemon(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := os.Create(filepath.Join(s.dir, name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "SLURM_CONF="+s.conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
	})
}

// logs returns the tail of every daemon's log, for a failure message.
func (s *slurm) logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.log"))
	outs, _ := filepath.Glob(filepath.Join(s.dir, "*.out"))
	for _, f := range append(files, outs...) {
		data, _ := os.ReadFile(f)
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(f), data)
	}
	return b.String()
}

// command is a Slurm client command for this cluster.
func (s *slurm) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "SLURM_CONF="+s.conf)
	return cmd
}

// run runs a Slurm client command and fails the test unless it exits 0.
func (s *slurm) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := s.command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (s *slurm) scontrol(t *testing.T, args ...string) string {
	t.Helper()
	return s.run(t, "scontrol", args...)
}

var (
	stateField  = regexp.MustCompile(`(?m)^\s*State=(\S+)`)
	reasonField = regexp.MustCompile(`(?m)^\s*Reason=(.*)$`)
)

// nodeState reads the node's State and Reason from `scontrol show node`.
func (s *slurm) nodeState(t *testing.T) (state, reason string) {
	t.Helper()
	out, err := s.command("scontrol", "show", "node", s.node).CombinedOutput()
	if err != nil {
		return "", ""
	}
	if m := stateField.FindStringSubmatch(string(out)); m != nil {
		state = m[1]
	}
	if m := reasonField.FindStringSubmatch(string(out)); m != nil {
		reason = m[1]
	}
	return state, reason
}

// env is the engine's environment for this node, plus SLURM_CONF: on a
// real node scontrol finds /etc/slurm/slurm.conf by itself.
func (s *slurm) env(vars ...string) []string {
	return append(contractEnv("", append([]string{"GPUWARDEN_NODE=" + s.node}, vars...)...), "SLURM_CONF="+s.conf)
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return cond()
}

func TestSlurmHooksResumeOnlyADrainOfTheirOwn(t *testing.T) {
	s := startSlurm(t)
	const reason = "gpuwarden: xid 79 on GPU 3 (00000000:3B:00.0)"

	// Our drain: DRAIN with our reason (slurmctld appends "[user@time]").
	if out, code := runHook(t, s.env("GPUWARDEN_REASON="+reason), "slurm-drain"); code != 0 {
		t.Fatalf("slurm-drain: exit %d:\n%s", code, out)
	}
	state, got := s.nodeState(t)
	if !strings.Contains(state, "DRAIN") || !strings.HasPrefix(got, reason) {
		t.Fatalf("after slurm-drain: State=%s Reason=%s", state, got)
	}

	// Our drain is resumed. The node is IDLE+NOT_RESPONDING until
	// slurmctld's ping after the resume comes back.
	if out, code := runHook(t, s.env(), "slurm-resume"); code != 0 {
		t.Fatalf("slurm-resume: exit %d:\n%s", code, out)
	}
	if !waitFor(15*time.Second, func() bool { state, _ = s.nodeState(t); return state == "IDLE" }) {
		t.Fatalf("after slurm-resume: State=%s, want IDLE", state)
	}

	// A node that is not drained is not "resumed".
	if out, code := runHook(t, s.env(), "slurm-resume"); code != 3 || !strings.Contains(out, "not drained") {
		t.Errorf("slurm-resume of an idle node: exit %d, want 3 saying so:\n%s", code, out)
	}

	// A person's drain: slurm-resume leaves it, slurm-drain keeps its reason.
	s.scontrol(t, "update", "NodeName="+s.node, "State=DRAIN", "Reason=maintenance by ops")
	out, code := runHook(t, s.env(), "slurm-resume")
	if code != 3 || !strings.Contains(out, "maintenance by ops") {
		t.Errorf("slurm-resume of a person's drain: exit %d, want 3 naming the reason:\n%s", code, out)
	}
	if out, code := runHook(t, s.env("GPUWARDEN_REASON="+reason), "slurm-drain"); code != 0 {
		t.Errorf("slurm-drain over a person's drain: exit %d:\n%s", code, out)
	}
	state, got = s.nodeState(t)
	if !strings.Contains(state, "DRAIN") || !strings.HasPrefix(got, "maintenance by ops") {
		t.Errorf("a person's drain after both hooks: State=%s Reason=%s", state, got)
	}

	s.scontrol(t, "update", "NodeName="+s.node, "State=RESUME")
	if !waitFor(15*time.Second, func() bool { state, _ = s.nodeState(t); return state == "IDLE" }) {
		t.Fatalf("after resuming a person's drain by hand: State=%s, want IDLE", state)
	}

	// A node with a running job: the drain lets the job run (ALLOCATED+DRAIN
	// or MIXED+DRAIN), and the resume undoes it as well.
	if _, err := exec.LookPath("sbatch"); err == nil {
		busy := func() bool {
			state, _ = s.nodeState(t)
			return strings.HasPrefix(state, "ALLOCATED") || strings.HasPrefix(state, "MIXED")
		}
		s.run(t, "sbatch", "--output=/dev/null", "--wrap=sleep 120")
		// Cancel the job while slurmd still runs (cleanups run last first):
		// its slurmstepd outlives a killed slurmd.
		t.Cleanup(func() {
			_, _ = s.command("scancel", "--user=root").CombinedOutput()
			// Ended: the node plain IDLE (not IDLE+COMPLETING), and
			// slurmstepd gone, which removes its job directory last.
			ended := func() bool {
				state, _ = s.nodeState(t)
				jobs, _ := filepath.Glob(filepath.Join(s.dir, "spool", "job*"))
				return state == "IDLE" && len(jobs) == 0
			}
			if !waitFor(20*time.Second, ended) {
				t.Errorf("the test job did not end after scancel: State=%s", state)
			}
		})
		if !waitFor(15*time.Second, busy) {
			t.Fatalf("the job did not start: State=%s\n%s", state, s.run(t, "squeue"))
		}
		if out, code := runHook(t, s.env("GPUWARDEN_REASON="+reason), "slurm-drain"); code != 0 {
			t.Fatalf("slurm-drain with a job running: exit %d:\n%s", code, out)
		}
		if state, got = s.nodeState(t); !strings.Contains(state, "DRAIN") || !busy() {
			t.Errorf("drained with a job running: State=%s Reason=%s, want the job running and DRAIN", state, got)
		}
		if out, code := runHook(t, s.env(), "slurm-resume"); code != 0 {
			t.Fatalf("slurm-resume with a job running: exit %d:\n%s", code, out)
		}
		if !waitFor(15*time.Second, func() bool { return busy() && !strings.Contains(state, "DRAIN") }) {
			t.Errorf("after slurm-resume with a job running: State=%s", state)
		}
	} else {
		t.Log("sbatch not installed (slurm-client): the drain of a node running a job is not checked")
	}

	// A node slurmctld does not know: scontrol's failure, not a refusal.
	for _, h := range []string{"slurm-drain", "slurm-resume"} {
		out, code := runHook(t, s.env("GPUWARDEN_NODE=no-such-node"), h)
		if code == 0 || code == 2 || code == 3 {
			t.Errorf("%s on an unknown node: exit %d, want scontrol's failure:\n%s", h, code, out)
		}
	}
}
