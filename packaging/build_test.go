package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// aptPackages reads .ci/apt-packages.txt, the list `make deps` installs.
func aptPackages(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), ".ci", "apt-packages.txt"))
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			pkgs[line] = true
		}
	}
	return pkgs
}

// TestREADMESaysWhatTheBuildNeeds holds the README's build requirements to
// go.mod and to what `make deps` installs, and the error it quotes for a
// machine without a C compiler to what Go prints there.
func TestREADMESaysWhatTheBuildNeeds(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+(?:\.\d+)?)$`).FindSubmatch(gomod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	for _, want := range []string{
		"Go " + string(goLine[1]) + " or newer", "C compiler", "`undefined: Return`", "`make deps` installs what the build needs",
	} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README.md does not say %q", want)
		}
	}
	pkgs := aptPackages(t)
	for _, p := range []string{"gcc", "libc6-dev", "make", "git", "gzip", "xz-utils"} {
		if !pkgs[p] {
			t.Errorf(".ci/apt-packages.txt lacks %s, which the build needs", p)
		}
	}

	// Without a C compiler on PATH Go turns cgo off; go-nvml then fails
	// as the README says.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	dir := t.TempDir()
	if err := os.Symlink(goBin, filepath.Join(dir, "go")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "go"), "build", "-o", os.DevNull, "github.com/NVIDIA/go-nvml/pkg/nvml")
	cmd.Dir = root
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "CC=") && !strings.HasPrefix(kv, "CGO_ENABLED=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PATH="+dir)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "undefined: Return") {
		t.Errorf("go-nvml built without a C compiler: err %v, want the error the README quotes\n%s", err, out)
	}
}
