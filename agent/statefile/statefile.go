// Package statefile writes the agent's files in --state.dir (the kernel-log
// cursor, the GPU inventory) the one way they must be written: atomically,
// and with a corrupt file moved aside for inspection, never silently reset.
package statefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Write replaces dir/name with data atomically: a temporary file in the
// same directory, then rename. It does not fsync: these files matter within
// a boot or as a best effort across one, and rename covers the crash of the
// process itself.
func Write(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, name))
	}
	if werr != nil {
		os.Remove(tmp)
	}
	return werr
}

// WriteSync is Write made durable: the data is fsync'd before the rename
// and the directory after it, so that after a power loss the file is the
// old one or the new one, whole.
func WriteSync(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, name))
	}
	if werr != nil {
		os.Remove(tmp)
		return werr
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// MoveAside renames path to the first free path.corrupt-N, so repeated
// corruption keeps every copy, and returns where it went.
func MoveAside(path string) (string, error) {
	for n := 1; n < 1000; n++ {
		to := path + ".corrupt-" + strconv.Itoa(n)
		if _, err := os.Lstat(to); errors.Is(err, fs.ErrNotExist) {
			return to, os.Rename(path, to)
		}
	}
	return "", fmt.Errorf("%s.corrupt-1 to -999 all exist", path)
}
