package dkms

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
)

func TestModuleSignatureAndVersion(t *testing.T) {
	dir := t.TempDir()
	body := "\x00license=NVIDIA\x00version=550.54.15\x00srcversion=ABC\x00"
	gz := func(s string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s))
		zw.Close()
		return b.String()
	}
	tests := []struct {
		name, content string
		sig           Signature
		version       string
	}{
		{"nvidia.ko", body, SignatureUnsigned, "550.54.15"},
		{"signed/nvidia.ko", body + "SIG" + moduleSigMagic, SignatureSigned, "550.54.15"},
		{"gz/nvidia.ko.gz", gz(body + "SIG" + moduleSigMagic), SignatureSigned, "550.54.15"},
		{"gzu/nvidia.ko.gz", gz(body), SignatureUnsigned, "550.54.15"},
		{"xz/nvidia.ko.xz", "\xfd7zXZ\x00 not really", SignatureUnknown, ""},
		{"zst/nvidia.ko.zst", "\x28\xb5\x2f\xfd", SignatureUnknown, ""},
		{"tiny/nvidia.ko", "x", SignatureUnsigned, ""},
	}
	var c moduleCache
	for _, tt := range tests {
		p := filepath.Join(dir, tt.name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got := c.inspect(p)
		if got.signature != tt.sig || got.version != tt.version {
			t.Errorf("%s: %+v, want %s %q", tt.name, got, tt.sig, tt.version)
		}
		if tt.sig == SignatureUnknown && got.note == "" {
			t.Errorf("%s: unknown signature without a note saying why", tt.name)
		}
	}
}

func TestResolveKeepsAbsoluteLinksInsideTheRoot(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "usr/src/linux-headers-6.1.0-18-amd64/Makefile", "")
	os.MkdirAll(filepath.Join(root, "lib/modules/6.1.0-18-amd64"), 0o755)
	os.Symlink("/usr/src/linux-headers-6.1.0-18-amd64", filepath.Join(root, "lib/modules/6.1.0-18-amd64/build"))
	os.Symlink("/etc", filepath.Join(root, "lib/modules/6.1.0-18-amd64/escape"))
	os.Symlink("loop", filepath.Join(root, "loop"))
	p := Paths{RootFS: root}
	if !p.IsDirIn("/lib/modules/6.1.0-18-amd64/build") {
		t.Errorf("absolute link inside the root not followed")
	}
	if h, err := p.Resolve("/lib/modules/6.1.0-18-amd64/escape/passwd"); err == nil {
		t.Errorf("/etc/passwd of this machine reached through the fixture: %s", h)
	}
	if _, err := p.Resolve("/loop/x"); err == nil {
		t.Errorf("a link loop resolved")
	}
	if h, err := p.Resolve("/lib/modules/6.1.0-18-amd64/build/../../../../usr/src"); err != nil || h != filepath.Join(root, "usr/src") {
		t.Errorf("dot-dot through a link: %q, %v", h, err)
	}
}
