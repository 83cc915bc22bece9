package dkms

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

// nextBoot decides which kernel the next boot starts, most specific source
// first:
//  1. GRUB's one-shot next_entry, then saved_entry when GRUB_DEFAULT=saved
//     (or on BLS systems, where grub2 always honours saved_entry);
//  2. BLS entries (/boot/loader/entries/*.conf): the newest, as blscfg sorts;
//  3. the /boot/vmlinuz link Debian maintains to the newest image;
//  4. the newest installed kernel (GRUB's default menu order).
//
// A GRUB entry is matched to a kernel by the release string it contains
// (menu titles, menu ids and BLS ids all carry it).
func (g *Gatherer) nextBoot(f *Facts) NextBoot {
	if len(f.Kernels) == 0 {
		return NextBoot{}
	}
	env := g.grubEnv()
	bls := g.blsEntries()
	savedDefault := len(bls) > 0 || g.grubDefault() == "saved"
	if e := env["next_entry"]; e != "" {
		if k := g.entryKernel(f, e, bls); k != "" {
			return NextBoot{Kernel: k, Source: "grubenv next_entry"}
		}
	}
	if e := env["saved_entry"]; e != "" && savedDefault {
		if k := g.entryKernel(f, e, bls); k != "" {
			return NextBoot{Kernel: k, Source: "grubenv saved_entry"}
		}
	}
	if d := g.grubDefault(); d != "" && d != "saved" && !isAllDigits(d) {
		if k := matchKernel(f, d); k != "" {
			return NextBoot{Kernel: k, Source: "GRUB_DEFAULT in /etc/default/grub"}
		}
	}
	if len(bls) > 0 {
		var newest string
		for _, k := range bls {
			if _, ok := f.Kernel(k); ok && (newest == "" || compareKernels(k, newest) > 0) {
				newest = k
			}
		}
		if newest != "" {
			return NextBoot{Kernel: newest, Source: "newest BLS entry in /boot/loader/entries"}
		}
	}
	for _, link := range []string{"/boot/vmlinuz", "/vmlinuz"} {
		if target, err := os.Readlink(g.paths.Root(link)); err == nil {
			if k, ok := strings.CutPrefix(filepath.Base(target), "vmlinuz-"); ok {
				if _, installed := f.Kernel(k); installed {
					return NextBoot{Kernel: k, Source: link + " link"}
				}
			}
		}
	}
	return NextBoot{Kernel: f.Kernels[len(f.Kernels)-1].Release, Source: "newest installed kernel"}
}

// grubEnv reads GRUB's environment block (key=value lines padded with #).
func (g *Gatherer) grubEnv() map[string]string {
	env := map[string]string{}
	for _, p := range []string{"/boot/grub/grubenv", "/boot/grub2/grubenv", "/boot/efi/EFI/fedora/grubenv"} {
		b, err := g.paths.ReadFile(p, hostfs.LimitText)
		if err != nil {
			continue
		}
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(k, "#") {
				env[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		return env
	}
	return env
}

// grubDefault returns GRUB_DEFAULT from /etc/default/grub, unquoted.
func (g *Gatherer) grubDefault() string {
	b, err := g.paths.ReadFile("/etc/default/grub", hostfs.LimitText)
	if err != nil {
		return ""
	}
	var v string
	for l := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "GRUB_DEFAULT="); ok {
			v = strings.Trim(rest, `"'`) // the last assignment wins, as in the shell
		}
	}
	return v
}

// blsEntries maps BLS entry ids (file names without .conf) to the kernel
// release their "linux" line boots.
func (g *Gatherer) blsEntries() map[string]string {
	dir := g.paths.Root("/boot/loader/entries")
	ents, err := listDir(dir)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".conf")
		if !ok {
			continue
		}
		b, err := hostfs.ReadFile(filepath.Join(dir, e.Name()), hostfs.LimitText)
		if err != nil {
			continue
		}
		for l := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && f[0] == "linux" {
				if k, ok := strings.CutPrefix(path.Base(f[1]), "vmlinuz-"); ok {
					out[id] = k
				}
			}
		}
	}
	return out
}

// entryKernel maps a GRUB entry (a BLS id, a menu id or a menu title path)
// to an installed kernel.
func (g *Gatherer) entryKernel(f *Facts, entry string, bls map[string]string) string {
	if k, ok := bls[entry]; ok {
		if _, installed := f.Kernel(k); installed {
			return k
		}
	}
	return matchKernel(f, entry)
}

// matchKernel finds the installed kernel whose release appears in s; the
// longest release wins so that "6.1.0-18-amd64" is not mistaken for
// "6.1.0-1".
func matchKernel(f *Facts, s string) string {
	rels := make([]string, 0, len(f.Kernels))
	for _, k := range f.Kernels {
		rels = append(rels, k.Release)
	}
	slices.SortFunc(rels, func(a, b string) int { return len(b) - len(a) })
	for _, r := range rels {
		if strings.Contains(s, r) {
			return r
		}
	}
	return ""
}

func isAllDigits(s string) bool {
	for _, r := range s {
		if !isDigit(r) {
			return false
		}
	}
	return s != ""
}
