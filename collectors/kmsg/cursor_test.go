package kmsg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

func writeCursor(t *testing.T, dir, bootID string, seq uint64) string {
	t.Helper()
	p := filepath.Join(dir, CursorFile)
	b := fmt.Sprintf(`{"version":1,"boot_id":%q,"seq":%d}`+"\n", bootID, seq)
	if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func savedSeq(t *testing.T, dir string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, CursorFile))
	if err != nil {
		t.Fatal(err)
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Seq
}

func TestACursorAheadOfTheLogIsMovedAsideAndEveryRecordIsNew(t *testing.T) {
	state := t.TempDir()
	old := writeCursor(t, state, "boot-a", 100)
	cfg := Config{Path: recordsFile(t, 1, 2, 3), StateDir: state, BootIDPath: writeBootID(t, "boot-a"), RereadSeen: true}
	got, r := runAll(t, cfg)
	if len(got) != 3 {
		t.Fatalf("got %d records, want all 3", len(got))
	}
	for _, rec := range got {
		if rec.Seen {
			t.Errorf("record %d delivered as Seen; a cursor ahead of the log says nothing about what was applied", rec.Seq)
		}
	}
	var ahead *CursorAheadError
	if !errors.As(r.StateError(), &ahead) {
		t.Fatalf("StateError() = %v, want *CursorAheadError", r.StateError())
	}
	if ahead.CursorSeq != 100 || ahead.KernelSeq != 3 || ahead.Path != filepath.Join(state, CursorFile) {
		t.Errorf("error %+v", ahead)
	}
	if b, err := os.ReadFile(ahead.MovedTo); err != nil || string(b) != old {
		t.Errorf("the implausible cursor must be kept at %q: %v %q", ahead.MovedTo, err, b)
	}
	for _, want := range []string{"ahead of the kernel", "SEQ 100", "SEQ 3", ahead.MovedTo, "from the start"} {
		if !strings.Contains(ahead.Error(), want) {
			t.Errorf("error %q does not say %q", ahead.Error(), want)
		}
	}
	if st := r.Stats(); st.Skipped != 0 || st.Lost != 0 {
		t.Errorf("stats %+v: nothing skipped or lost", st)
	}
	// The acknowledgements of the new records wrote a sane cursor.
	if seq := savedSeq(t, state); seq != 3 {
		t.Errorf("cursor seq %d, want 3", seq)
	}
}

func TestACursorAtTheNewestRecordIsTrusted(t *testing.T) {
	state := t.TempDir()
	writeCursor(t, state, "boot-a", 3)
	got, r := runAll(t, Config{Path: recordsFile(t, 1, 2, 3), StateDir: state, BootIDPath: writeBootID(t, "boot-a")})
	if len(got) != 0 || r.StateError() != nil {
		t.Fatalf("got %d records, state error %v; want none of either", len(got), r.StateError())
	}
	if st := r.Stats(); st.Skipped != 3 {
		t.Errorf("stats %+v, want 3 skipped", st)
	}
}

func TestACursorOfAnotherBootIsNotJudged(t *testing.T) {
	state := t.TempDir()
	writeCursor(t, state, "boot-old", 1<<40)
	got, r := runAll(t, Config{Path: recordsFile(t, 1, 2), StateDir: state, BootIDPath: writeBootID(t, "boot-new")})
	if len(got) != 2 || r.StateError() != nil {
		t.Fatalf("got %d records, state error %v", len(got), r.StateError())
	}
}

// TestACursorAheadOfTheRealKernel restores a cursor of this boot with a SEQ
// the kernel cannot have reached, as a backup from a busier host would.
func TestACursorAheadOfTheRealKernel(t *testing.T) {
	if f, err := os.OpenFile(DefaultPath, os.O_WRONLY, 0); err != nil {
		t.Skipf("cannot write %s: %v", DefaultPath, err)
	} else {
		f.Close()
	}
	bootID, err := hostfs.ReadBootID(DefaultBootIDPath)
	if err != nil {
		t.Skip(err)
	}
	state := t.TempDir()
	old := writeCursor(t, state, bootID, 1<<40)
	r, err := Open(Config{StateDir: state, RereadSeen: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var ahead *CursorAheadError
	if !errors.As(r.StateError(), &ahead) {
		r.Close()
		t.Fatalf("StateError() = %v, want *CursorAheadError", r.StateError())
	}
	if ahead.CursorSeq != 1<<40 || ahead.KernelSeq >= 1<<40 {
		t.Errorf("error %+v", ahead)
	}
	if b, err := os.ReadFile(ahead.MovedTo); err != nil || string(b) != old {
		t.Errorf("the cursor must be kept at %q: %v %q", ahead.MovedTo, err, b)
	}
	if _, err := os.Stat(filepath.Join(state, CursorFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the implausible cursor is still in place: %v", err)
	}

	b := make([]byte, 8)
	rand.Read(b)
	marker := "gwtest-ahead-" + hex.EncodeToString(b)
	if err := os.WriteFile(DefaultPath, []byte("<6>"+marker+"\n"), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var found *Record
	var seen int
	for batch := range r.Batches() {
		for i, rec := range batch.Records {
			if rec.Seen {
				seen++
			}
			if strings.Contains(rec.Message, marker) {
				found = &batch.Records[i]
				cancel()
			}
		}
		batch.Ack()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.Close()
	if found == nil {
		t.Fatalf("%s never arrived; stats %+v", marker, r.Stats())
	}
	if found.Seen || seen != 0 {
		t.Errorf("marker Seen %v, %d records Seen: with an implausible cursor every record is new", found.Seen, seen)
	}
	if seq := savedSeq(t, state); seq < found.Seq || seq >= 1<<40 {
		t.Errorf("cursor seq %d after acknowledging the marker (seq %d)", seq, found.Seq)
	}
}
