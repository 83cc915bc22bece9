package hostfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Size limits by kind of file: what such a file can be, with room to
// spare. A file larger than its limit is not what it claims to be.
const (
	LimitText  = 1 << 20  // a host's text file: os-release, a boot-loader entry, a proc file
	LimitState = 16 << 20 // one of the agent's state files
)

// ErrNotRegular is returned for a path that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// Open opens path for reading as the agent reads every file it did not
// make: a symlink at the last component is refused (O_NOFOLLOW), the open
// never blocks (a FIFO or a device would), and anything but a regular file
// is refused with ErrNotRegular.
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s: a symbolic link, not followed", path)
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, kind(st.Mode()))
	}
	return f, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return m.Type().String()
}

// ReadFile reads a whole regular file of at most limit bytes, through
// Open. A larger file is an error naming the path and the limit. procfs
// and sysfs files, which report size 0, are read to their end.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes, more than such a file can be", path, limit)
	}
	return b, nil
}

// ReadPrefix reads at most n bytes from the start of a regular file,
// through Open: for a file of which only the beginning matters (the first
// line of a build log).
func ReadPrefix(path string, n int64) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// ReadFile reads name, inside the root tree, as the host would see it:
// every symlink on the way is resolved inside the root (an absolute link
// cannot leave it), and the file itself is read through ReadFile.
func (p Paths) ReadFile(name string, limit int64) ([]byte, error) {
	host, err := p.Resolve(name)
	if err != nil {
		return nil, err
	}
	return ReadFile(host, limit)
}
