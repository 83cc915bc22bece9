package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// playbook runs the example playbook against this machine.
func playbook(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := repoRoot(t)
	base := []string{"-i", "localhost,", "-c", "local", filepath.Join(root, "packaging", "ansible", "site.yml"),
		// Already root: no sudo round trip (and none needed where sudo is absent).
		"-e", "ansible_become=false"}
	cmd := exec.Command("ansible-playbook", append(base, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0", "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var recap = regexp.MustCompile(`localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)`)

func TestAnsibleRoleInstallsConfiguresAndGates(t *testing.T) {
	needRoot(t)
	needTool(t, "ansible-playbook", "dpkg-query")
	if !inThrowawayRoot(t, func(t *testing.T, upper string) {
		// The role's copy of the package landed in the throwaway /var/tmp:
		// the play ran there, not on the host.
		if copies := upperHas(upper, "/var", "tmp/gpuwarden_*.deb"); len(copies) != 1 {
			t.Errorf("the throwaway root's /var/tmp holds %v, want the play's copy of the package", copies)
		}
	}) {
		return
	}
	deb, _ := packages(t)
	freshRoot(t)
	pkg := "gpuwarden_package_file=" + deb

	out, err := playbook(t, "--check", "-e", pkg)
	if err != nil {
		t.Fatalf("check mode: %v\n%s", err, out)
	}
	if s := debStatus(t); s == "install ok installed" {
		t.Fatal("check mode installed the package")
	}

	out, err = playbook(t, "-e", pkg, "-e", "gpuwarden_log_level=debug", "-e", "gpuwarden_gpus_expected=8", "-e", "gpuwarden_gate=false")
	if err != nil {
		t.Fatalf("real run: %v\n%s", err, out)
	}
	if s := debStatus(t); s != "install ok installed" {
		t.Fatalf("after the play: package status %q", s)
	}
	cfg, err := os.ReadFile("/etc/gpuwarden/gpuwarden.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`level: "debug"`, "expected: 8", `listen-address: ":9400"`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("templated config lacks %q:\n%s", want, cfg)
		}
	}
	if !strings.Contains(out, "not systemd") {
		t.Errorf("the play did not say it skipped service management without systemd:\n%s", out)
	}

	// A second run changes nothing.
	out, err = playbook(t, "-e", pkg, "-e", "gpuwarden_log_level=debug", "-e", "gpuwarden_gpus_expected=8", "-e", "gpuwarden_gate=false")
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	if m := recap.FindStringSubmatch(out); m == nil || m[1] != "0" {
		t.Errorf("second run is not idempotent:\n%s", out)
	}

	t.Run("gate", func(t *testing.T) { testGate(t) })
}

// testGate runs only the gate against fixture roots: it must fail the play on
// a critical finding and pass on a healthy root.
func testGate(t *testing.T) {
	help, _ := exec.Command("/usr/bin/gpuwarden", "check", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--output") {
		t.Skip("gpuwarden check has no --output flag yet: the check command has not landed")
	}
	fixtures := filepath.Join(repoRoot(t), "testdata", "rootfs")
	cases := []struct {
		scenario string
		fail     bool
	}{
		{"healthy", false},
		{"new-kernel-no-module", true},
	}
	for _, c := range cases {
		root := filepath.Join(fixtures, c.scenario)
		if _, err := os.Stat(root); err != nil {
			t.Errorf("fixture root %s missing: %v", root, err)
			continue
		}
		// procfs and sysfs too: whether the driver is loaded is read there.
		// As JSON: a key=value extra var would end at the first space.
		args := fmt.Sprintf(`{"gpuwarden_check_args": ["--path.rootfs", %q, "--path.procfs", %q, "--path.sysfs", %q]}`,
			root, root+"/proc", root+"/sys")
		out, err := playbook(t, "--tags", "gate", "-e", args)
		m := recap.FindStringSubmatch(out)
		failed := err != nil && m != nil && m[2] != "0"
		if failed != c.fail {
			t.Errorf("gate on %s: failed=%v, want %v (err %v)\n%s", c.scenario, failed, c.fail, err, out)
		}
		if c.fail && (!strings.Contains(out, "critical problems") || !strings.Contains(out, "CRITICAL next_boot_module: ")) {
			t.Errorf("gate on %s failed without a readable summary of the findings:\n%s", c.scenario, out)
		}
	}
	// A node with no driver at all: check says 3, could not tell. The gate
	// fails on it unless the play says otherwise.
	empty := t.TempDir()
	for _, d := range []string{"proc", "sys", "lib/modules", "boot", "etc"} {
		os.MkdirAll(filepath.Join(empty, d), 0o755)
	}
	args := fmt.Sprintf(`{"gpuwarden_check_args": ["--path.rootfs", %q, "--path.procfs", "proc", "--path.sysfs", "sys"]}`, empty)
	out, err := playbook(t, "--tags", "gate", "-e", args)
	if err == nil || !strings.Contains(out, "could not tell") || !strings.Contains(out, "UNKNOWN ") {
		t.Errorf("gate on a node with no driver: err %v, want a failure saying it could not tell\n%s", err, out)
	}
	out, err = playbook(t, "--tags", "gate", "-e", args, "-e", "gpuwarden_gate_fail_on_unknown=false")
	if err != nil {
		t.Errorf("gate with gpuwarden_gate_fail_on_unknown=false: %v\n%s", err, out)
	}
}
