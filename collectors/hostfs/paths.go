// Package hostfs is the one helper for the host's filesystem paths:
// --path.rootfs, --path.procfs and --path.sysfs, so that every source reads
// the same host (a container's mounted host root, a fixture tree in tests).
package hostfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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

func (p Paths) WithDefaults() Paths {
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

// Resolve returns the host path that name (absolute, inside the root tree)
// leads to when every symlink is followed as if the root were "/". An
// absolute link such as lib/modules/K/build -> /usr/src/linux-headers-K must
// land inside the fixture or the mounted host root, not on this machine.
func (p Paths) Resolve(name string) (string, error) {
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

// IsDirIn reports whether name, inside the root, is (or links to) a directory.
func (p Paths) IsDirIn(name string) bool {
	host, err := p.Resolve(name)
	if err != nil {
		return false
	}
	fi, err := os.Stat(host)
	return err == nil && fi.IsDir()
}

// ExistsIn reports whether name, inside the root, exists after following links.
func (p Paths) ExistsIn(name string) bool {
	_, err := p.Resolve(name)
	return err == nil
}

// BootID is the kernel's boot id, read from procfs: a UUID that changes on
// every boot.
func (p Paths) BootID() (string, error) {
	return ReadBootID(p.WithDefaults().Proc("sys/kernel/random/boot_id"))
}

// ReadBootID reads a boot id file (procfs's sys/kernel/random/boot_id).
func ReadBootID(path string) (string, error) {
	b, err := ReadFile(path, 4096)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" || len(id) > 64 {
		return "", fmt.Errorf("boot id in %s is empty or too long", path)
	}
	return id, nil
}

// BootTime is the wall-clock time of boot: now less procfs's uptime.
// Kernel records carry time since boot.
func (p Paths) BootTime() (time.Time, error) {
	path := p.WithDefaults().Proc("uptime")
	b, err := ReadFile(path, LimitText)
	if err != nil {
		return time.Time{}, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return time.Time{}, errors.New(path + " is empty")
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil || up < 0 {
		return time.Time{}, fmt.Errorf("%s: uptime %q is not a number of seconds", path, f[0])
	}
	return time.Now().Add(-time.Duration(up * float64(time.Second))), nil
}
