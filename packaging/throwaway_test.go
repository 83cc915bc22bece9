package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests that install the packages for real (dpkg, the Ansible role) do
// it in a throwaway root: a private mount namespace in which the host's
// system directories are overlays whose writes land in a temporary
// directory, and /run is an empty tmpfs. dpkg, its maintainer scripts,
// apt's hooks and ansible-playbook run unchanged; the host keeps its dpkg
// database, /etc, /usr, /var/tmp and /run as they were.

// overlaid are the directories whose writes go to the throwaway root. /root
// takes ansible's ~/.ansible.
var overlaid = []string{"/etc", "/usr", "/var", "/root", "/opt", "/srv"}

const (
	throwawayEnv  = "GPUWARDEN_TEST_THROWAWAY_ROOT"
	packagesEnv   = "GPUWARDEN_TEST_PACKAGES" // the parent's deb and rpm, so the child builds nothing
	throwawayMark = "/run/gpuwarden-test-throwaway-root"
)

// mountScript sets the throwaway root up in the new namespace and runs the
// test binary there. $1 is the directory for the overlays' upper layers.
const mountScript = `set -eu
T=$1; shift
# No mount made here may reach the host's namespace.
mount --make-rprivate /
for d in ` + "%s" + `; do
	[ -d "$d" ] || continue
	n=$(echo "$d" | tr / _)
	mkdir -p "$T/upper/$n" "$T/work/$n"
	mount -t overlay overlay -o "lowerdir=$d,upperdir=$T/upper/$n,workdir=$T/work/$n" "$d"
done
mount -t tmpfs -o mode=0755 gpuwarden-test-run /run
mkdir -p /run/lock
echo "$T" > ` + throwawayMark + `
set +e
"$@"
rc=$?
# What the run left in /run, for the parent to see (the tmpfs goes with us).
ls -A /run > "$T/run-contents" 2>/dev/null || true
ls -A /run/gpuwarden > "$T/run-gpuwarden" 2>/dev/null || true
exit $rc
`

// inThrowawayRoot runs the calling test in a throwaway root. In the test
// binary the user started it runs a copy of the test there, reports its
// result and returns false: the caller returns at once. In that copy it
// returns true, after checking that the root really is a throwaway one.
// check, in the parent, runs after the copy with the directory that holds
// the throwaway root's upper layers, to look at what the run wrote there.
func inThrowawayRoot(t *testing.T, check func(t *testing.T, upper string)) bool {
	t.Helper()
	if dir := os.Getenv(throwawayEnv); dir != "" {
		mark, err := os.ReadFile(throwawayMark)
		if err != nil || strings.TrimSpace(string(mark)) != dir {
			t.Fatalf("%s is set but this is not the throwaway root it names (%s: %q, %v); refusing to install anything", throwawayEnv, throwawayMark, mark, err)
		}
		return true
	}
	needRoot(t)
	needTool(t, "unshare", "mount")
	deb, rpm := packages(t)

	tmp := t.TempDir()
	for _, d := range append(overlaid, "/run") {
		if tmp == d || strings.HasPrefix(tmp, d+"/") {
			t.Fatalf("the temporary directory %s is under %s, which the throwaway root replaces; set TMPDIR elsewhere", tmp, d)
		}
	}
	before := hostPackageState(t, deb)

	args := []string{"--mount", "--propagation", "private", "--", "sh", "-c",
		fmt.Sprintf(mountScript, strings.Join(overlaid, " ")), "sh", tmp,
		os.Args[0], "-test.run", "^" + t.Name() + "$", "-test.count", "1", "-test.v"}
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		// The copy times out on its own first, so it is not left running
		// when the parent gives up on it.
		args = append(args, "-test.timeout", time.Until(d.Add(-15*time.Second)).Round(time.Second).String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-5*time.Second))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), throwawayEnv+"="+tmp, packagesEnv+"="+deb+"\n"+rpm)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil || !strings.Contains(out.String(), "--- PASS: "+t.Name()+" ") {
		t.Errorf("%s in the throwaway root: %v\n%s", t.Name(), err, out.String())
	} else {
		t.Logf("ran in a throwaway root (upper layers under %s):\n%s", tmp, lastLines(out.String(), 8))
	}

	// What the host keeps is as it was. Only this test's own package is
	// looked for in /var/tmp: a copy of another build was left by something
	// else (an older test that installed on the host) and is not ours to
	// remove or to fail on.
	after := hostPackageState(t, deb)
	if after.dpkg != before.dpkg || after.ourCopy != before.ourCopy {
		t.Errorf("the host changed under the test:\nbefore: %+v\nafter:  %+v", before, after)
	}
	if !before.installed && after.installed {
		t.Errorf("the host's dpkg database has gpuwarden after the test: %s", after.dpkg)
	}
	if !before.ourCopy && after.ourCopy {
		t.Errorf("the host's /var/tmp has %s after the test", filepath.Base(deb))
	}
	if len(after.otherCopies) > 0 {
		t.Logf("the host's /var/tmp holds %v, left by something else before this test", after.otherCopies)
	}
	// /run: the test's own was a tmpfs, not the host's. The marker the
	// script wrote there is not on the host, and was there in the run.
	// (The host's /run/gpuwarden proves nothing either way: every agent run
	// as root on it, other packages' tests in parallel too, makes it for
	// its control socket and the DKMS hooks' trigger.)
	if _, err := os.Lstat(throwawayMark); err == nil {
		t.Errorf("%s is on the host: the throwaway root's /run was the host's", throwawayMark)
	}
	if run, err := os.ReadFile(filepath.Join(tmp, "run-contents")); err != nil || !strings.Contains(string(run), filepath.Base(throwawayMark)) {
		t.Errorf("the throwaway root's /run was not the tmpfs the test made (%v):\n%s", err, run)
	} else if gw, err := os.ReadFile(filepath.Join(tmp, "run-gpuwarden")); err == nil {
		t.Logf("the run made /run/gpuwarden in the throwaway root (holding %q), not on the host", gw)
	}
	if check != nil {
		check(t, filepath.Join(tmp, "upper"))
	}
	return false
}

// hostState is what installing gpuwarden could leave on the host.
type hostState struct {
	dpkg        string // dpkg's status line for gpuwarden, "" if it has none
	installed   bool
	ourCopy     bool     // /var/tmp holds a copy of the package under test
	otherCopies []string // and these other gpuwarden packages
}

func hostPackageState(t *testing.T, deb string) hostState {
	t.Helper()
	var h hostState
	status, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "gpuwarden").Output()
	if err == nil {
		h.dpkg = strings.TrimSpace(string(status))
	}
	h.installed = h.dpkg != "" && !strings.Contains(h.dpkg, "not-installed")
	copies, _ := filepath.Glob("/var/tmp/gpuwarden_*.deb")
	rpms, _ := filepath.Glob("/var/tmp/gpuwarden-*.rpm")
	for _, c := range append(copies, rpms...) {
		if filepath.Base(c) == filepath.Base(deb) {
			h.ourCopy = true
		} else {
			h.otherCopies = append(h.otherCopies, c)
		}
	}
	return h
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// upperHas reports whether the throwaway root's upper layer for dir holds
// a file matching pattern (relative to dir).
func upperHas(upper, dir, pattern string) []string {
	n := strings.ReplaceAll(dir, "/", "_")
	m, _ := filepath.Glob(filepath.Join(upper, n, pattern))
	return m
}
