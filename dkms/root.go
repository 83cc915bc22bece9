package dkms

import (
	"errors"
	"io/fs"
	"os"
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

// Paths are the host's filesystem paths (see package hostfs).
type Paths = hostfs.Paths

// DefaultPaths are the paths of a host seen from itself.
func DefaultPaths() Paths { return hostfs.DefaultPaths() }

// readFirstLine reads a small text file and returns its first line, trimmed.
func readFirstLine(host string) (string, error) {
	b, err := hostfs.ReadPrefix(host, 64<<10)
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
