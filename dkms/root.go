package dkms

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Paths says where the host's files are, as node_exporter's --path.* flags do.
// ProcFS and SysFS, when relative, are taken under RootFS (a fixture tree
// carries its own proc/ and sys/); when absolute they are used as they are.
type Paths struct {
	RootFS string // default "/"
	ProcFS string // default "/proc"
	SysFS  string // default "/sys"
}

// DefaultPaths are the paths of a host seen from itself.
func DefaultPaths() Paths { return Paths{RootFS: "/", ProcFS: "/proc", SysFS: "/sys"} }

func (p Paths) withDefaults() Paths {
	d := DefaultPaths()
	if p.RootFS == "" {
		p.RootFS = d.RootFS
	}
	if p.ProcFS == "" {
		p.ProcFS = d.ProcFS
	}
	if p.SysFS == "" {
		p.SysFS = d.SysFS
	}
	return p
}

// Root returns the host path of an absolute path inside the root tree.
func (p Paths) Root(name string) string { return filepath.Join(p.RootFS, name) }

// Proc returns the host path of name inside procfs.
func (p Paths) Proc(name string) string { return filepath.Join(p.under(p.ProcFS), name) }

// Sys returns the host path of name inside sysfs.
func (p Paths) Sys(name string) string { return filepath.Join(p.under(p.SysFS), name) }

func (p Paths) under(fsPath string) string {
	if filepath.IsAbs(fsPath) {
		return fsPath
	}
	return filepath.Join(p.RootFS, fsPath)
}

// maxLinks bounds symlink resolution, as the kernel's ELOOP does.
const maxLinks = 40

// resolve returns the host path that name (absolute, inside the root tree)
// leads to when every symlink is followed as if the root were "/". An
// absolute link such as lib/modules/K/build -> /usr/src/linux-headers-K must
// land inside the fixture or the mounted host root, not on this machine.
func (p Paths) resolve(name string) (string, error) {
	root := filepath.Clean(p.RootFS)
	todo := strings.Split(strings.TrimPrefix(filepath.Clean("/"+name), "/"), "/")
	done := "/" // resolved so far, inside the root
	links := 0
	for len(todo) > 0 {
		part := todo[0]
		todo = todo[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			done = filepath.Dir(done)
			continue
		}
		next := filepath.Join(done, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		links++
		if links > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links under %s", name, root)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			done = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return filepath.Join(root, done), nil
}

// isDirIn reports whether name, inside the root, is (or links to) a directory.
func (p Paths) isDirIn(name string) bool {
	host, err := p.resolve(name)
	if err != nil {
		return false
	}
	fi, err := os.Stat(host)
	return err == nil && fi.IsDir()
}

// existsIn reports whether name, inside the root, exists after following links.
func (p Paths) existsIn(name string) bool {
	_, err := p.resolve(name)
	return err == nil
}

// readFirstLine reads a small text file and returns its first line, trimmed.
func readFirstLine(host string) (string, error) {
	b, err := os.ReadFile(host)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), nil
}

// listDir returns the entries of a directory; a missing directory is empty,
// any other error is returned so the caller can say it could not tell.
func listDir(host string) ([]fs.DirEntry, error) {
	ents, err := os.ReadDir(host)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return ents, err
}
