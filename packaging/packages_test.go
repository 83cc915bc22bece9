package packaging

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/remediation"
)

// What both packages must install, beside the generated docs.
var packagedFiles = []string{
	"/usr/bin/gpuwarden",
	"/usr/lib/systemd/system/gpuwarden.service",
	"/etc/gpuwarden/gpuwarden.yaml",
	"/var/lib/gpuwarden",
	"/usr/lib/gpuwarden/check-now",
	"/etc/kernel/postinst.d/zzz-gpuwarden",
	"/etc/kernel/postrm.d/zzz-gpuwarden",
	"/usr/lib/kernel/install.d/99-gpuwarden.install",
	"/usr/share/man/man1/gpuwarden.1.gz",
	"/usr/share/bash-completion/completions/gpuwarden",
	"/usr/share/fish/vendor_completions.d/gpuwarden.fish",
}

// remediationHooks lists the executable files in remediation/hooks/: every
// one must be packaged, so a hook added there and not to nfpm.yaml fails here.
func remediationHooks(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "remediation", "hooks")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var hooks []string
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			hooks = append(hooks, "/usr/lib/gpuwarden/hooks/"+e.Name())
		}
	}
	if len(hooks) == 0 {
		t.Fatalf("no executable hooks in %s", dir)
	}
	return hooks
}

// modeLine matches a listing line that ends in path and starts with perms,
// as dpkg-deb -c ("-rwxr-xr-x root/root 1234 date ./usr/...") and the rpm
// query below ("-rwxr-xr-x /usr/...") print them.
func modeLine(listing, perms, path string) bool {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(perms) + `\s(.*\s)?\.?` + regexp.QuoteMeta(path) + `$`)
	return re.MatchString(listing)
}

func TestPackagesShipTheRemediationHooksExecutable(t *testing.T) {
	needTool(t, "dpkg-deb", "rpm")
	deb, rpm := packages(t)
	debList := run(t, "dpkg-deb", "-c", deb)
	rpmList := run(t, "rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", rpm)
	for _, h := range remediationHooks(t) {
		if !modeLine(debList, "-rwxr-xr-x", h) {
			t.Errorf("deb lacks %s with mode 0755:\n%s", h, debList)
		}
		if !modeLine(rpmList, "-rwxr-xr-x", h) {
			t.Errorf("rpm lacks %s with mode 0755:\n%s", h, rpmList)
		}
	}
}

// glibcVersion parses "2.34" into a comparable pair.
func glibcVersion(t *testing.T, s string) [2]int {
	t.Helper()
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("glibc version %q", s)
	}
	maj, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		t.Fatalf("glibc version %q", s)
	}
	return [2]int{maj, minor}
}

func less(a, b [2]int) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

// TestPackagesDeclareTheGlibcTheBinaryNeeds: the shipped binary needs no
// glibc symbol newer than the glibc 2.17 it is linked against, and both
// packages declare exactly that floor: not higher (it would refuse RHEL 7,
// Ubuntu 18.04) and not lower (untested).
func TestPackagesDeclareTheGlibcTheBinaryNeeds(t *testing.T) {
	needTool(t, "objdump", "readelf", "dpkg-deb", "rpm")
	deb, rpm := packages(t)
	floor := sysrootGlibc(t)
	if floor != "2.17" {
		t.Errorf("the toolchain's sysroot is glibc %s, want 2.17", floor)
	}

	dump := run(t, "objdump", "-T", binary(t))
	var needed [2]int
	var neededName string
	for _, m := range regexp.MustCompile(`GLIBC_(\d+\.\d+(?:\.\d+)?)`).FindAllStringSubmatch(dump, -1) {
		if v := glibcVersion(t, m[1]); less(needed, v) {
			needed, neededName = v, m[0]
		}
	}
	if needed == [2]int{} {
		t.Fatalf("objdump -T found no GLIBC_ symbol versions; is the binary dynamically linked?\n%.2000s", dump)
	}
	t.Logf("the newest symbol version the binary needs is %s; linked against glibc %s", neededName, floor)
	if less(glibcVersion(t, floor), needed) {
		t.Errorf("the binary needs %s, above the glibc %s it is linked against", neededName, floor)
	}
	// Only the C library's own sonames: before 2.34 the pthread, dl and
	// resolver symbols live in their own libraries, all part of glibc.
	dyn := run(t, "readelf", "-d", binary(t))
	for _, m := range regexp.MustCompile(`\(NEEDED\)\s+Shared library: \[([^\]]+)\]`).FindAllStringSubmatch(dyn, -1) {
		switch m[1] {
		case "libc.so.6", "libpthread.so.0", "libdl.so.2", "libresolv.so.2":
		default:
			t.Errorf("the binary needs %s, which is not part of glibc", m[1])
		}
	}

	depends := run(t, "dpkg-deb", "-f", deb, "Depends")
	m := regexp.MustCompile(`libc6 \(>= (\d+\.\d+)\)`).FindStringSubmatch(depends)
	if m == nil {
		t.Fatalf("deb Depends %q has no libc6 (>= x.y)", depends)
	}
	if m[1] != floor {
		t.Errorf("deb declares libc6 >= %s; the binary is built and tested for glibc %s", m[1], floor)
	}

	requires := run(t, "rpm", "-qpR", rpm)
	m = regexp.MustCompile(`(?m)^glibc >= (\d+\.\d+)`).FindStringSubmatch(requires)
	if m == nil {
		t.Fatalf("rpm Requires has no glibc >= x.y:\n%s", requires)
	}
	if m[1] != floor {
		t.Errorf("rpm declares glibc >= %s; the binary is built and tested for glibc %s", m[1], floor)
	}
	// The README's supported distributions say the same floor.
	for _, name := range []string{"README.md", filepath.Join("packaging", "README.md")} {
		readme, err := os.ReadFile(filepath.Join(repoRoot(t), name))
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`glibc (\*\*)?` + regexp.QuoteMeta(floor) + `(\*\*)? or newer`).Match(readme) {
			t.Errorf("%s does not say the packages run on glibc %s or newer", name, floor)
		}
		if m := regexp.MustCompile(`glibc (\d+\.\d+) or newer`).FindAllSubmatch(readme, -1); len(m) > 0 {
			for _, v := range m {
				if string(v[1]) != floor {
					t.Errorf("%s still says glibc %s or newer", name, v[1])
				}
			}
		}
	}
	// The deb's binary is the one checked here.
	dir := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, dir)
	shipped, err := os.ReadFile(filepath.Join(dir, "usr", "bin", "gpuwarden"))
	if err != nil {
		t.Fatal(err)
	}
	built, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(shipped) != sha256.Sum256(built) {
		t.Errorf("the deb's /usr/bin/gpuwarden is not %s", binary(t))
	}
}

// TestPackagedBinaryRunsOnGlibc217 runs the shipped binary under glibc
// 2.17's own loader and C library (the toolchain's sysroot), as on RHEL 7:
// it starts, serves /metrics, and reports NVML absent.
func TestPackagedBinaryRunsOnGlibc217(t *testing.T) {
	bin := binary(t)
	if out, err := underSysroot(t, bin, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "gpuwarden ") {
		t.Fatalf("gpuwarden version under glibc 2.17: %v\n%s", err, out)
	}

	addr := freePort(t)
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := underSysroot(t, bin, "run", "--web.listen-address", addr, "--state.dir", filepath.Join(dir, "state"),
		"--control.socket", filepath.Join(dir, "control.sock"), "--collector.kmsg=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	agentLog := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }

	// The loader that runs it is the sysroot's: its maps name no host libc.
	if !waitFor(10*time.Second, func() bool {
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid))
		return err == nil && strings.Contains(string(maps), filepath.Join(sysroot(t), "lib", "libc-2.17.so"))
	}) {
		t.Fatalf("the agent's process did not map the sysroot's libc-2.17.so\n%s", agentLog())
	}

	var metrics string
	if !waitFor(20*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		metrics = string(b)
		return resp.StatusCode == http.StatusOK && strings.Contains(metrics, `gpuwarden_collector_up{collector="gpu"}`)
	}) {
		t.Fatalf("the agent under glibc 2.17 never served /metrics on %s\n%s", addr, agentLog())
	}
	for _, want := range []string{`gpuwarden_build_info{`, `gpuwarden_collector_up{collector="gpu"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics under glibc 2.17 lacks %q", want)
		}
	}
	if !waitFor(5*time.Second, func() bool { return strings.Contains(agentLog(), "NVML unavailable: libnvidia-ml.so.1 not found") }) {
		t.Errorf("the agent under glibc 2.17 did not report NVML absent:\n%s", agentLog())
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the agent is no longer running: %v\n%s", err, agentLog())
	}
}

func TestRpmListsFilesScriptsAndInstallsIntoARoot(t *testing.T) {
	needTool(t, "rpm")
	_, rpm := packages(t)

	list := run(t, "rpm", "-qpl", rpm)
	for _, f := range append(packagedFiles, "/usr/share/zsh/site-functions/_gpuwarden",
		"/etc/dnf/plugins/post-transaction-actions.d/gpuwarden.action") {
		if !strings.Contains(list, f+"\n") {
			t.Errorf("rpm -qpl lacks %s", f)
		}
	}
	info := run(t, "rpm", "-qpi", rpm)
	for _, want := range []string{"Name        : gpuwarden", "License     : Apache-2.0"} {
		if !strings.Contains(info, want) {
			t.Errorf("rpm -qpi lacks %q:\n%s", want, info)
		}
	}
	if cfg := run(t, "rpm", "-qpc", rpm); !strings.Contains(cfg, "/etc/gpuwarden/gpuwarden.yaml") {
		t.Errorf("rpm -qpc does not mark the config file: %q", cfg)
	}
	scripts := run(t, "rpm", "-qp", "--scripts", rpm)
	for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "/run/systemd/system"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm -qp --scripts lacks %q", want)
		}
	}

	needRoot(t)
	// A chroot with a shell and the few tools the scripts use, but no
	// systemd: as in an image build. The scriptlets must run and succeed.
	root := t.TempDir()
	chrootTools(t, root, "sh", "mkdir", "chmod")
	out := run(t, "rpm", "-i", "--root", root, "--nodeps", rpm)
	if strings.Contains(out, "scriptlet failed") {
		t.Errorf("a scriptlet failed in a root without systemd:\n%s", out)
	}
	for _, f := range packagedFiles {
		if _, err := os.Lstat(filepath.Join(root, f)); err != nil {
			t.Errorf("after rpm -i --root: %v", err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "var/lib/gpuwarden")); err == nil && fi.Mode().Perm() != 0o750 {
		t.Errorf("/var/lib/gpuwarden mode %v, want 0750", fi.Mode().Perm())
	}
}

// chrootTools copies the named programs and the shared libraries they need
// into root, so a scriptlet can run there with /bin/sh.
func chrootTools(t *testing.T, root string, names ...string) {
	t.Helper()
	needTool(t, "ldd")
	for _, n := range names {
		path, err := exec.LookPath(n)
		if err != nil {
			t.Skipf("%s not found", n)
		}
		files := []string{path}
		files = append(files, regexp.MustCompile(`(/\S+\.so[.\d]*)`).FindAllString(run(t, "ldd", path), -1)...)
		for i, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			dsts := []string{f}
			if i == 0 {
				// The program also under /bin, where scriptlets look first.
				dsts = append(dsts, "/bin/"+filepath.Base(f))
			}
			for _, dst := range dsts {
				target := filepath.Join(root, dst)
				if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(target, data, 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// freshRoot purges gpuwarden from the throwaway root where the host it
// copies had it installed, so the test starts from a machine without it, and
// purges it again at the end.
func freshRoot(t *testing.T) {
	t.Helper()
	if s := debStatus(t); s != "" && !strings.Contains(s, "not-installed") {
		t.Logf("the host has gpuwarden (%s); purging it in the throwaway root only", s)
		run(t, "dpkg", "--purge", "gpuwarden")
	}
	t.Cleanup(func() { runErr(t, "dpkg", "--purge", "gpuwarden") })
}

// debStatus reports dpkg's status line for gpuwarden ("" if unknown).
func debStatus(t *testing.T) string {
	out, err := runErr(t, "dpkg-query", "-W", "-f=${Status}", "gpuwarden")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

func TestDebInstallKeepsConfigAndRemovesCleanly(t *testing.T) {
	needRoot(t)
	needTool(t, "dpkg", "dpkg-query", "dpkg-deb")
	if !inThrowawayRoot(t, func(t *testing.T, upper string) {
		// dpkg wrote its database in the throwaway root: the test ran there.
		if len(upperHas(upper, "/var", "lib/dpkg/status")) != 1 {
			t.Error("the throwaway root has no dpkg status of its own: dpkg did not run there")
		}
	}) {
		return
	}
	deb, _ := packages(t)
	freshRoot(t)

	// Install. Systemd is not PID 1 here and policy-rc.d may forbid starts:
	// either way dpkg must succeed.
	run(t, "dpkg", "-i", deb)
	if s := debStatus(t); s != "install ok installed" {
		t.Fatalf("after dpkg -i: status %q", s)
	}
	for _, f := range append(packagedFiles, "/usr/share/zsh/vendor-completions/_gpuwarden", "/etc/apt/apt.conf.d/99gpuwarden") {
		if _, err := os.Lstat(f); err != nil {
			t.Errorf("after dpkg -i: %v", err)
		}
	}
	if out, err := exec.Command("/usr/bin/gpuwarden", "--help").CombinedOutput(); err != nil {
		t.Errorf("installed binary: %v\n%s", err, out)
	}
	if conf := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "gpuwarden"); !strings.Contains(conf, "/etc/gpuwarden/gpuwarden.yaml") {
		t.Errorf("config is not a conffile: %q", conf)
	}
	wants := "/etc/systemd/system/multi-user.target.wants/gpuwarden.service"
	if _, err := exec.LookPath("systemctl"); err == nil {
		if _, err := os.Lstat(wants); err != nil {
			t.Errorf("service not enabled on install: %v", err)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		run(t, "systemd-analyze", "verify", "--man=no", "/usr/lib/systemd/system/gpuwarden.service")
	}

	// An administrator's change survives a reinstall.
	const cfg = "/etc/gpuwarden/gpuwarden.yaml"
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	changed := append(append([]byte{}, orig...), []byte("# changed by the administrator\n")...)
	if err := os.WriteFile(cfg, changed, 0o640); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "-i", deb)
	if got, _ := os.ReadFile(cfg); string(got) != string(changed) {
		t.Errorf("reinstall replaced the changed config:\n%s", got)
	}

	// Remove: program gone, config kept, service disabled.
	run(t, "dpkg", "-r", "gpuwarden")
	if s := debStatus(t); s != "deinstall ok config-files" {
		t.Errorf("after dpkg -r: status %q, want config-files", s)
	}
	for _, f := range []string{"/usr/bin/gpuwarden", "/usr/lib/systemd/system/gpuwarden.service", wants} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("after dpkg -r: %s still there", f)
		}
	}
	if _, err := os.Stat(cfg); err != nil {
		t.Errorf("dpkg -r removed the config: %v", err)
	}

	// Purge: nothing left.
	run(t, "dpkg", "--purge", "gpuwarden")
	for _, f := range []string{cfg, "/etc/gpuwarden", "/var/lib/gpuwarden"} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("after purge: %s still there", f)
		}
	}
	if s := debStatus(t); s != "" && !strings.Contains(s, "not-installed") {
		t.Errorf("after purge: status %q", s)
	}
}

func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok {
			flatten(key, sub, out)
			continue
		}
		out[key] = v
	}
}

func TestExampleConfigUsesOnlyKnownKeys(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "gpuwarden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("packaging/gpuwarden.yaml: %v", err)
	}
	flat := map[string]any{}
	flatten("", m, flat)
	var keys []string
	for k := range flat {
		if !strings.HasPrefix(k, "remediation.") {
			keys = append(keys, k)
		}
	}
	// The agent decodes strictly: what its own loader refuses would stop it
	// starting.
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	agent.RegisterFlags(fs)
	if _, err := agent.Load(fs, filepath.Join(repoRoot(t), "packaging", "gpuwarden.yaml")); err != nil {
		t.Errorf("the agent does not accept packaging/gpuwarden.yaml: %v", err)
	}
	sort.Strings(keys)
	if fmt.Sprint(keys) != "[log.level web.listen-address]" {
		t.Errorf("example sets %v; keep it to the minimal safe keys or update this test", keys)
	}
	// Its remediation section is the example rules, in dry run: a fresh
	// install reports what it would do and does nothing.
	rc, err := remediation.LoadConfig(filepath.Join(repoRoot(t), "packaging", "gpuwarden.yaml"))
	if err != nil || rc == nil {
		t.Fatalf("the remediation section does not load: %v", err)
	}
	if !rc.Dry() || len(rc.Rules) == 0 {
		t.Errorf("the shipped remediation is dry run %v with %d rules, want dry run with the example rules", rc.Dry(), len(rc.Rules))
	}
	for name, h := range rc.Hooks {
		if !strings.HasPrefix(h.Argv[0], "/usr/lib/gpuwarden/hooks/") {
			t.Errorf("hook %s runs %s, not a shipped hook", name, h.Argv[0])
		}
	}
}

// TestPackagesCarryTheLicense checks what the packages say about the
// licence: the deb's machine-readable copyright file, which lintian reads,
// and the rpm's %license file, both the repository's LICENSE.
func TestPackagesCarryTheLicense(t *testing.T) {
	needTool(t, "dpkg-deb", "rpm")
	deb, rpm := packages(t)
	license, err := os.ReadFile(filepath.Join(repoRoot(t), "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(license), "Apache License\n                           Version 2.0, January 2004") {
		t.Fatalf("LICENSE is not the Apache License 2.0:\n%.300s", license)
	}

	const copyright = "/usr/share/doc/gpuwarden/copyright"
	if list := run(t, "dpkg-deb", "-c", deb); !modeLine(list, "-rw-r--r--", copyright) {
		t.Errorf("deb lacks %s with mode 0644:\n%s", copyright, list)
	}
	dir := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, dir)
	text, err := os.ReadFile(filepath.Join(dir, copyright))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n",
		"\nFiles: *\n", "\nLicense: Apache-2.0\n", "/usr/share/common-licenses/Apache-2.0",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("%s lacks %q:\n%s", copyright, want, text)
		}
	}

	if info := run(t, "rpm", "-qpi", rpm); !regexp.MustCompile(`(?m)^License\s*: Apache-2.0$`).MatchString(info) {
		t.Errorf("rpm -qpi declares no Apache-2.0 licence:\n%s", info)
	}
	const rpmLicense = "/usr/share/licenses/gpuwarden/LICENSE"
	if got := strings.TrimSpace(run(t, "rpm", "-qpL", rpm)); got != rpmLicense {
		t.Errorf("rpm -qpL (its %%license files) = %q, want %s", got, rpmLicense)
	}
	// The file is the repository's LICENSE: rpm records each file's SHA-256
	// (digest algorithm 8).
	sum := sha256.Sum256(license)
	digests := run(t, "rpm", "-qp", "--qf", "%{FILEDIGESTALGO}\n[%{FILENAMES} %{FILEDIGESTS}\n]", rpm)
	if want := "8\n"; !strings.HasPrefix(digests, want) {
		t.Fatalf("rpm file digests are not SHA-256:\n%.200s", digests)
	}
	if want := rpmLicense + " " + hex.EncodeToString(sum[:]) + "\n"; !strings.Contains(digests, want) {
		t.Errorf("the rpm's %s is not the repository's LICENSE: want %q in\n%s", rpmLicense, want, digests)
	}

	// Lintian, where installed, has no complaint about the copyright file
	// (without one it says no-copyright-file).
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Skip("lintian not installed (make deps installs it)")
	}
	out, _ := runErr(t, "lintian", "--info", "--tag-display-limit", "0", deb)
	if !strings.Contains(out, "gpuwarden: ") {
		t.Fatalf("lintian printed no tag at all; did it run?\n%s", out)
	}
	if bad := regexp.MustCompile(`(?m)^[EWIPX]: gpuwarden: \S*(copyright|dep5|licen[cs]e)\S*.*$`).FindAllString(out, -1); len(bad) > 0 {
		t.Errorf("lintian complains about the licence:\n%s", strings.Join(bad, "\n"))
	}
}
