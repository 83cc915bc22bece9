// Package audit is remediation's audit log: one JSON line per decision,
// appended to a file that only root can read, durable before Append returns,
// rotated by size.
//
// The file is JSON Lines. Each record is marshalled with encoding/json (which
// never emits a raw newline), written with one write(2) on a descriptor
// opened O_APPEND, and fsync'd. A crash can therefore leave at most one torn
// line, the last one. Open notices it (the file does not end in '\n') and the
// next Append writes a '\n' before its record, in the same write, so the torn
// bytes become a line of their own that Read skips and counts, and every later
// record starts on a fresh line.
//
// Rotation happens before a write that would take the current file over
// MaxBytes: audit.jsonl.(K-1) is renamed to audit.jsonl.K (replacing it),
// down to audit.jsonl becoming audit.jsonl.1, then a new audit.jsonl is
// created and the record is written there. Each step is one rename, so a
// crash at any point loses at most the oldest file, never a record that
// Append reported written; a gap in the numbering left by such a crash is
// harmless (Read walks whatever numbered files exist).
package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// MaxRecord is the largest record Append writes, its newline included. The
// caller bounds its fields (event text, hook output); a record over it is an
// error rather than a silently cut line.
const MaxRecord = 64 << 10

// Log is an open audit log. Its methods are safe for concurrent use.
type Log struct {
	path     string
	maxBytes int64
	keep     int

	mu     sync.Mutex
	f      *os.File // nil after Close, or after a rotation that could not open the new file
	closed bool
	size   int64
	torn   bool // the file does not end in '\n': a crash cut the last write short
}

// Open opens (creating if needed) the audit log at path. Its directory is
// created mode 0700 if missing, the file mode 0600 (an existing file with a
// wider mode is narrowed). maxBytes is the size a file may reach before it is
// rotated (0 or less: never rotate); keep is how many rotated files
// (path.1 ... path.keep) are kept beside the current one, at least 1.
func Open(path string, maxBytes int64, keep int) (*Log, error) {
	if keep < 1 {
		return nil, fmt.Errorf("audit log %s: keep is %d, must be at least 1", path, keep)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l := &Log{path: path, maxBytes: maxBytes, keep: keep}
	if err := l.openCurrent(); err != nil {
		return nil, err
	}
	return l, nil
}

// openCurrent opens l.path for appending and learns its size and whether its
// last line is torn.
func (l *Log) openCurrent() error {
	_, statErr := os.Lstat(l.path)
	created := errors.Is(statErr, os.ErrNotExist)
	// O_RDWR rather than O_WRONLY only to read the last byte back; O_APPEND
	// makes every write land at the end whatever the offset.
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit log: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("audit log %s: not a regular file (%s)", l.path, fi.Mode().Type())
	}
	if fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return fmt.Errorf("audit log: %w", err)
		}
	}
	torn := false
	if fi.Size() > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], fi.Size()-1); err != nil {
			f.Close()
			return fmt.Errorf("audit log %s: reading its last byte: %w", l.path, err)
		}
		torn = last[0] != '\n'
	}
	if created {
		if err := syncDir(filepath.Dir(l.path)); err != nil {
			f.Close()
			return err
		}
	}
	l.f, l.size, l.torn = f, fi.Size(), torn
	return nil
}

// Append marshals rec with encoding/json and appends it as one line. When it
// returns nil the line is on disk (fsync'd). A record whose line would exceed
// MaxRecord is refused, and nothing is written.
func (l *Log) Append(rec any) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("audit log %s: %w", l.path, err)
	}
	if bytes.IndexByte(b, '\n') >= 0 {
		// encoding/json escapes newlines in strings and compacts
		// json.RawMessage and MarshalJSON output; this is a guard, not a path.
		return fmt.Errorf("audit log %s: marshalled record contains a newline", l.path)
	}
	if len(b)+1 > MaxRecord {
		return fmt.Errorf("audit log %s: record is %d bytes, over the %d-byte limit", l.path, len(b)+1, MaxRecord)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("audit log %s: closed", l.path)
	}
	if l.f == nil { // the last rotation renamed the file but could not open a new one
		if err := l.openCurrent(); err != nil {
			return err
		}
	}
	line := make([]byte, 0, len(b)+2)
	if l.torn {
		line = append(line, '\n')
	}
	line = append(line, b...)
	line = append(line, '\n')
	if l.maxBytes > 0 && l.size > 0 && l.size+int64(len(line)) > l.maxBytes {
		if err := l.rotate(); err != nil {
			return err
		}
		line = line[len(line)-len(b)-1:] // a new file has no torn line to end
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	if err != nil {
		// A short write leaves a torn line; the next Append ends it.
		l.torn = n > 0 || l.torn
		return fmt.Errorf("audit log %s: %w", l.path, err)
	}
	l.torn = false
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit log %s: fsync: %w", l.path, err)
	}
	return nil
}

// rotate shifts path.(keep-1) to path.keep ... path to path.1 and opens a new
// path. Called with l.mu held.
func (l *Log) rotate() error {
	for i := l.keep - 1; i >= 1; i-- {
		err := os.Rename(rotated(l.path, i), rotated(l.path, i+1))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit log: rotating: %w", err)
		}
	}
	if err := os.Rename(l.path, rotated(l.path, 1)); err != nil {
		return fmt.Errorf("audit log: rotating: %w", err)
	}
	old := l.f
	l.f = nil
	if err := old.Close(); err != nil {
		return fmt.Errorf("audit log %s: closing before rotation: %w", l.path, err)
	}
	// openCurrent syncs the directory, which makes the renames durable too.
	return l.openCurrent()
}

// Close closes the log. Appends after Close return an error.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("audit log %s: %w", l.path, err)
	}
	return nil
}

func rotated(path string, i int) string { return fmt.Sprintf("%s.%d", path, i) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, syscall.EINVAL) { // some filesystems cannot sync a directory
		return fmt.Errorf("audit log: syncing %s: %w", dir, err)
	}
	return nil
}
