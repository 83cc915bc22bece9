package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Tail is what Scan found: the newest records and how many lines it skipped.
type Tail struct {
	Records []json.RawMessage // oldest first, newest last
	// Skipped counts lines that were not one JSON value: a torn write left by
	// a crash (see the package comment), a line over MaxRecord, or damage.
	Skipped int
}

// Read returns the newest limit records (all of them if limit <= 0) across
// the log at path and its rotated files, newest last. Lines that are not
// JSON, such as a torn last line, are skipped; Scan also counts them.
func Read(path string, limit int) ([]json.RawMessage, error) {
	t, err := Scan(path, limit)
	return t.Records, err
}

// Scan is Read that also reports how many lines it skipped. It reads path.N
// for every N present, highest (oldest) first, then path. It is an error
// only when none of them exists or one cannot be read. Scan takes no lock: a
// rotation by a writer during a Scan can make it miss or repeat one file's
// records (it never returns a partial record).
func Scan(path string, limit int) (Tail, error) {
	files, err := logFiles(path)
	if err != nil {
		return Tail{}, err
	}
	keep := newRing(limit)
	skipped := 0
	for _, name := range files {
		n, err := scanFile(name, keep.add)
		skipped += n
		if err != nil {
			return Tail{}, err
		}
	}
	return Tail{Records: keep.records(), Skipped: skipped}, nil
}

// logFiles lists path's rotated files, oldest first, then path itself.
func logFiles(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	type numbered struct {
		n    int
		name string
	}
	var old []numbered
	current := false
	for _, e := range entries {
		name := e.Name()
		if name == base {
			current = true
			continue
		}
		suffix, ok := strings.CutPrefix(name, base+".")
		if !ok || suffix == "" || strings.Trim(suffix, "0123456789") != "" {
			continue
		}
		n, err := strconv.Atoi(suffix)
		if err != nil || n < 1 {
			continue
		}
		old = append(old, numbered{n, filepath.Join(dir, name)})
	}
	if !current && len(old) == 0 {
		return nil, fmt.Errorf("audit log %s: %w", path, fs.ErrNotExist)
	}
	sort.Slice(old, func(i, j int) bool { return old[i].n > old[j].n })
	files := make([]string, 0, len(old)+1)
	for _, o := range old {
		files = append(files, o.name)
	}
	if current {
		files = append(files, path)
	}
	return files, nil
}

func scanFile(name string, emit func(json.RawMessage)) (int, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil // rotated away between listing and opening
	}
	if err != nil {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	skipped, err := scanLines(f, MaxRecord, emit)
	if err != nil {
		return skipped, fmt.Errorf("audit log %s: %w", name, err)
	}
	return skipped, nil
}

// scanLines calls emit with a copy of every line of r that is one JSON value
// and returns how many lines it skipped. A line over maxLine bytes (its
// newline included; at least 16) is skipped without being held in memory.
func scanLines(r io.Reader, maxLine int, emit func(json.RawMessage)) (skipped int, err error) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			skipped++
			for errors.Is(err, bufio.ErrBufferFull) { // discard the rest of the long line
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				return skipped, nil
			}
			if err != nil {
				return skipped, err
			}
			continue
		}
		if err != nil && err != io.EOF {
			return skipped, err
		}
		if len(line) > 0 {
			body := line
			if body[len(body)-1] == '\n' {
				body = body[:len(body)-1]
			}
			if json.Valid(body) {
				emit(append(json.RawMessage(nil), body...))
			} else {
				skipped++
			}
		}
		if err == io.EOF {
			return skipped, nil
		}
	}
}

// ring keeps the last limit records it is given (all if limit <= 0).
type ring struct {
	limit int
	buf   []json.RawMessage
	next  int // where the next record goes once buf is full
}

func newRing(limit int) *ring { return &ring{limit: limit} }

func (r *ring) add(rec json.RawMessage) {
	if r.limit <= 0 || len(r.buf) < r.limit {
		r.buf = append(r.buf, rec)
		return
	}
	r.buf[r.next] = rec
	r.next = (r.next + 1) % r.limit
}

func (r *ring) records() []json.RawMessage {
	out := make([]json.RawMessage, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}
