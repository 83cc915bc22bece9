package kmsg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gpuwarden/gpuwarden/agent/statefile"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

// CursorFile is the name of the kernel-log cursor in the state directory.
const CursorFile = "kmsg-cursor.json"

const cursorVersion = 1

// cursor is where reading stopped: the last SEQ handed over, in the boot it
// belongs to (SEQ restarts at 0 on every boot).
type cursor struct {
	Version int    `json:"version"`
	BootID  string `json:"boot_id"`
	Seq     uint64 `json:"seq"`
	// Checkpoint is what the consumer had made of the records up to Seq
	// (the agent's counters), saved in the same write so both commit
	// together. Opaque to the reader.
	Checkpoint json.RawMessage `json:"checkpoint,omitempty"`
}

// CorruptStateError reports a cursor file that could not be read and was
// moved aside. Reading then starts from the beginning of the ring buffer, so
// events of this boot may be reported a second time; the error says so.
type CorruptStateError struct {
	Path    string // the file as it was
	MovedTo string // where it is now
	Err     error
}

func (e *CorruptStateError) Error() string {
	return fmt.Sprintf("kernel-log cursor %s is corrupt (%v); moved it to %s and reading the ring buffer from the start, "+
		"so this boot's events may be counted twice", e.Path, e.Err, e.MovedTo)
}

func (e *CorruptStateError) Unwrap() error { return e.Err }

// CursorAheadError reports a cursor that parsed but cannot be right: it is
// for this boot, yet its SEQ is past the newest record the kernel has (a
// state directory restored from another host's backup, a clock of SEQs
// that went wrong). Trusting it would skip every record as already seen.
// The file was moved aside, and the ring buffer is read from its start with
// every record new.
type CursorAheadError struct {
	Path      string // the file as it was
	MovedTo   string // where it is now; "" if it could not be moved (MoveErr)
	CursorSeq uint64 // the SEQ the cursor held
	KernelSeq uint64 // the newest SEQ the kernel had when the reader opened
	MoveErr   error
}

func (e *CursorAheadError) Error() string {
	where := "moved it to " + e.MovedTo
	if e.MovedTo == "" {
		where = fmt.Sprintf("could not move it aside (%v)", e.MoveErr)
	}
	return fmt.Sprintf("kernel-log cursor %s is ahead of the kernel: it says SEQ %d of this boot was read, but the newest "+
		"record is SEQ %d (restored from another host or written in error); %s and reading the ring buffer from the start, "+
		"so this boot's events may be counted twice", e.Path, e.CursorSeq, e.KernelSeq, where)
}

func (e *CursorAheadError) Unwrap() error { return e.MoveErr }

// moveAsideAs renames path to the first free path.why-N, like
// statefile.MoveAside does for a corrupt file.
func moveAsideAs(path, why string) (string, error) {
	for n := 1; n < 1000; n++ {
		to := path + "." + why + "-" + strconv.Itoa(n)
		if _, err := os.Lstat(to); errors.Is(err, fs.ErrNotExist) {
			return to, os.Rename(path, to)
		}
	}
	return "", fmt.Errorf("%s.%s-1 to -999 all exist", path, why)
}

// loadCursor reads the cursor. A missing file is not an error (found false).
// A corrupt one is moved aside and reported as *CorruptStateError.
func loadCursor(dir string) (c cursor, found bool, err error) {
	path := filepath.Join(dir, CursorFile)
	// Read as a file from outside: a symlink, a FIFO or /dev/zero in its
	// place is refused (and moved aside below), never followed, waited on
	// or read without end.
	b, err := hostfs.ReadFile(path, hostfs.LimitState)
	if errors.Is(err, fs.ErrNotExist) {
		return cursor{}, false, nil
	}
	perr := err
	if perr == nil {
		perr = parseCursor(b, &c)
	}
	if perr == nil {
		return c, true, nil
	}
	moved, merr := statefile.MoveAside(path)
	if merr != nil {
		return cursor{}, false, fmt.Errorf("kernel-log cursor %s is corrupt (%v) and could not be moved aside: %w", path, perr, merr)
	}
	return cursor{}, false, &CorruptStateError{Path: path, MovedTo: moved, Err: perr}
}

func parseCursor(b []byte, c *cursor) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	if c.Version != cursorVersion {
		return fmt.Errorf("version %d, want %d", c.Version, cursorVersion)
	}
	if c.BootID == "" {
		return errors.New("no boot_id")
	}
	return nil
}

// saveCursor writes the cursor atomically. Not fsyncing is fine: the cursor
// only matters within one boot, and a power loss starts a new boot anyway.
func saveCursor(dir string, c cursor) error {
	c.Version = cursorVersion
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := statefile.Write(dir, CursorFile, append(b, '\n')); err != nil {
		return fmt.Errorf("save kernel-log cursor in %s: %w", dir, err)
	}
	return nil
}
