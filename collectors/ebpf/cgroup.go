package ebpf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

// maxCgroupDirs bounds the walk that finds a memory cgroup by id: a host
// with more cgroups than this gets the leaf name only.
const maxCgroupDirs = 20000

var errWalkLimit = errors.New("walk limit")

// memcgPath finds the memory cgroup whose id is id and returns its path in
// its hierarchy ("/slurm/uid_0/job_42"), or "" if none is found.
//
// The program reads the victim's memory cgroup in the kernel (its kernfs id
// and leaf name) because by the time userspace reads the record the victim
// is usually dead and /proc/<pid>/cgroup is gone with it; the cgroup itself
// outlives its last task until someone removes it. A kernfs id is the inode
// number of the cgroup's directory, so the directory is found by a bounded
// walk of the memory hierarchy (v1 at fs/cgroup/memory, else v2's unified
// tree), on each OOM kill only.
func memcgPath(paths hostfs.Paths, id uint64) string {
	p := paths.WithDefaults()
	// Inode numbers are per filesystem: search the memory hierarchy only,
	// never the other v1 hierarchies beside it.
	root := p.Sys("fs/cgroup/memory")
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		root = p.Sys("fs/cgroup")
	}
	return findInode(root, id)
}

func findInode(root string, ino uint64) string {
	found, n := "", 0
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if n++; n > maxCgroupDirs {
			return errWalkLimit
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Ino == ino {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return nil
			}
			found = "/" + filepath.ToSlash(rel)
			if rel == "." {
				found = "/"
			}
			return fs.SkipAll
		}
		return nil
	})
	return found
}
