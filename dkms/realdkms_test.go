package dkms

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestRealDKMSTree registers a small module of ours with the dkms installed
// on this machine (dkms add does not compile), in a DKMS tree and source
// tree inside a temporary root, then checks that the facts read that tree
// as dkms itself reports it, and that the parser reads dkms's own output.
func TestRealDKMSTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: dkms refuses to run otherwise (CI runs as root)")
	}
	dkmsBin, err := exec.LookPath("dkms")
	if err != nil {
		t.Skip("dkms is not installed: make deps installs it (.ci/apt-packages.txt)")
	}
	root := t.TempDir()
	src := filepath.Join(root, "usr", "src")
	tree := filepath.Join(root, "var", "lib", "dkms")
	writeFile(t, root, "usr/src/gwtest-1.0/dkms.conf", `PACKAGE_NAME="gwtest"
PACKAGE_VERSION="1.0"
BUILT_MODULE_NAME[0]="gwtest"
DEST_MODULE_LOCATION[0]="/updates/dkms"
AUTOINSTALL="yes"
`)
	writeFile(t, root, "usr/src/gwtest-1.0/Makefile", "obj-m := gwtest.o\n")
	writeFile(t, root, "usr/src/gwtest-1.0/gwtest.c", "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	dkms := func(args ...string) string {
		t.Helper()
		args = append(args, "--sourcetree", src, "--dkmstree", tree)
		out, err := exec.Command(dkmsBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dkms %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	dkms("add", "gwtest/1.0")

	// dkms's own view, in the format this dkms version prints.
	status := ParseStatus(dkms("status"))
	if len(status) != 1 {
		t.Fatalf("dkms status parsed to %+v", status)
	}
	if s := status[0]; s.Module != "gwtest" || s.Version != "1.0" || s.State != StateAdded || s.Kernel != "" || s.Arch != "" {
		t.Errorf("dkms status = %+v, want gwtest/1.0 added", s)
	}
	dkms("remove", "gwtest/1.0", "--all")
	dkms("add", "gwtest/1.0")

	// dkms recorded the source as an absolute host path
	// (<root>/usr/src/gwtest-1.0). Read under <root>, an absolute link means
	// <root>/<that path>, so rewrite it as it reads on the host the tree
	// belongs to: /usr/src/gwtest-1.0.
	link := filepath.Join(tree, "gwtest", "1.0", "source")
	if target, err := os.Readlink(link); err != nil || target != filepath.Join(src, "gwtest-1.0") {
		t.Fatalf("dkms made source -> %q (%v), want %s", target, err, filepath.Join(src, "gwtest-1.0"))
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/src/gwtest-1.0", link); err != nil {
		t.Fatal(err)
	}
	g := NewGatherer(Paths{RootFS: root, ProcFS: "proc", SysFS: "sys"}, []string{"gwtest"}, nil)
	f := g.Gather(context.Background())
	if len(f.DKMS) != 1 {
		t.Fatalf("dkms entries = %+v, want one", f.DKMS)
	}
	if e := f.DKMS[0]; e.Module != "gwtest" || e.Version != "1.0" || e.State != StateAdded || e.Kernel != "" {
		t.Errorf("entry = %+v, want gwtest 1.0 added", e)
	}

	// Remove the source: dkms calls that broken, and so must we.
	if err := os.RemoveAll(filepath.Join(src, "gwtest-1.0")); err != nil {
		t.Fatal(err)
	}
	f = g.Gather(context.Background())
	if len(f.DKMS) != 1 || f.DKMS[0].State != StateBroken {
		t.Errorf("after removing the source: %+v, want broken", f.DKMS)
	}
}
