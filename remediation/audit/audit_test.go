package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

type decision struct {
	Seq  int    `json:"seq"`
	Rule string `json:"rule"`
	Note string `json:"note,omitempty"`
}

func seqs(t *testing.T, recs []json.RawMessage) []int {
	t.Helper()
	var out []int
	for _, r := range recs {
		var d decision
		if err := json.Unmarshal(r, &d); err != nil {
			t.Fatalf("record %q: %v", r, err)
		}
		out = append(out, d.Seq)
	}
	return out
}

func openT(t *testing.T, path string, maxBytes int64, keep int) *Log {
	t.Helper()
	l, err := Open(path, maxBytes, keep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendT(t *testing.T, l *Log, seq int) {
	t.Helper()
	if err := l.Append(decision{Seq: seq, Rule: "xid-79-drain"}); err != nil {
		t.Fatal(err)
	}
}

func TestRecordsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "audit.jsonl")
	l := openT(t, path, 0, 1)
	appendT(t, l, 1)
	appendT(t, l, 2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openT(t, path, 0, 1)
	appendT(t, l, 3)
	recs, err := Read(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(seqs(t, recs)); got != "[1 2 3]" {
		t.Fatalf("records %s, want [1 2 3]", got)
	}
}

func TestFileIsRootOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "audit.jsonl")
	appendT(t, openT(t, path, 0, 1), 1)
	for name, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", name, fi.Mode().Perm(), want)
		}
	}
}

func TestAnExistingWideFileIsNarrowedTo0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	openT(t, path, 0, 1)
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o, want 600", fi.Mode().Perm())
	}
}

func TestRotationKeepsKFilesAndTheRecordThatTriggeredIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	line, _ := json.Marshal(decision{Seq: 10, Rule: "xid-79-drain"})
	perLine := int64(len(line) + 1)
	// Three records fit in a file; the fourth rotates.
	l := openT(t, path, 3*perLine, 2)
	for i := 10; i < 22; i++ { // 12 records: 4 files' worth
		appendT(t, l, i)
		recs, err := Read(path, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := seqs(t, recs); len(got) != 1 || got[0] != i {
			t.Fatalf("after appending %d the newest record is %v", i, got)
		}
	}
	for _, name := range []string{path, path + ".1", path + ".2"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != 3*perLine {
			t.Errorf("%s: %d bytes, want %d", name, fi.Size(), 3*perLine)
		}
	}
	if _, err := os.Stat(path + ".3"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s.3 exists with keep 2 (err %v)", path, err)
	}
	recs, err := Read(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(seqs(t, recs)); got != "[13 14 15 16 17 18 19 20 21]" {
		t.Fatalf("records %s", got)
	}
	recs, _ = Read(path, 4)
	if got := fmt.Sprint(seqs(t, recs)); got != "[18 19 20 21]" {
		t.Fatalf("newest 4: %s", got)
	}
}

func TestARecordLargerThanMaxBytesIsStillWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openT(t, path, 10, 1)
	appendT(t, l, 1)
	appendT(t, l, 2)
	recs, _ := Read(path, 0)
	if got := fmt.Sprint(seqs(t, recs)); got != "[1 2]" {
		t.Fatalf("records %s", got)
	}
}

// A crash between the renames of one rotation leaves a gap in the numbering;
// Read takes whatever numbered files exist, oldest first.
func TestReadAcrossAGapLeftByACrashDuringRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	write := func(name string, seq ...int) {
		var b bytes.Buffer
		for _, s := range seq {
			fmt.Fprintf(&b, "{\"seq\":%d}\n", s)
		}
		if err := os.WriteFile(name, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(path+".3", 1, 2)
	write(path+".1", 3, 4)
	write(path+".x", 99) // not a rotated file
	write(path+".-1", 99)
	// No current file: the crash came after renaming it to .1.
	recs, err := Read(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(seqs(t, recs)); got != "[1 2 3 4]" {
		t.Fatalf("records %s", got)
	}
	l := openT(t, path, 1, 3)
	appendT(t, l, 5)
	appendT(t, l, 6) // rotates: .1 -> .2, current -> .1
	recs, _ = Read(path, 0)
	if got := fmt.Sprint(seqs(t, recs)); got != "[1 2 3 4 5 6]" {
		t.Fatalf("records after rotation %s", got)
	}
}

func TestReadOfAMissingLogIsNotExist(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), "audit.jsonl"), 0)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err %v, want ErrNotExist", err)
	}
}

func TestATornLastLineIsSkippedAndTheNextAppendStartsAFreshLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openT(t, path, 0, 1)
	appendT(t, l, 1)
	l.Close()
	// What a crash in the middle of write(2) leaves: half a line.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":2,"rule":"xid-`)
	f.Close()

	tail, err := Scan(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(seqs(t, tail.Records)); got != "[1]" || tail.Skipped != 1 {
		t.Fatalf("records %s, skipped %d; want [1], 1", got, tail.Skipped)
	}

	l = openT(t, path, 0, 1)
	appendT(t, l, 3)
	appendT(t, l, 4)
	tail, _ = Scan(path, 0)
	if got := fmt.Sprint(seqs(t, tail.Records)); got != "[1 3 4]" || tail.Skipped != 1 {
		t.Fatalf("records %s, skipped %d; want [1 3 4], 1", got, tail.Skipped)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 4 || lines[1] != `{"seq":2,"rule":"xid-` {
		t.Fatalf("file:\n%s", b)
	}
}

func TestATornLineIsEndedEvenWhenTheAppendRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, []byte(`{"seq":1}`+"\n"+`{"seq":2,"ru`), 0o600); err != nil {
		t.Fatal(err)
	}
	l := openT(t, path, 20, 1)
	appendT(t, l, 3) // rotates the torn file to .1 and starts a clean one
	b, _ := os.ReadFile(path)
	if !bytes.HasPrefix(b, []byte(`{"seq":3`)) {
		t.Fatalf("new file starts %q", b)
	}
	tail, _ := Scan(path, 0)
	if got := fmt.Sprint(seqs(t, tail.Records)); got != "[1 3]" || tail.Skipped != 1 {
		t.Fatalf("records %s, skipped %d", got, tail.Skipped)
	}
}

func TestAnOversizedRecordIsRefusedAndNothingWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openT(t, path, 0, 1)
	err := l.Append(decision{Seq: 1, Note: strings.Repeat("x", MaxRecord)})
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("err %v, want an over-the-limit error", err)
	}
	fi, _ := os.Stat(path)
	if fi.Size() != 0 {
		t.Fatalf("file has %d bytes after a refused record", fi.Size())
	}
	// The largest record that fits is written and read back.
	overhead := len(`{"seq":1,"rule":"","note":""}` + "\n")
	if err := l.Append(decision{Seq: 1, Note: strings.Repeat("x", MaxRecord-overhead)}); err != nil {
		t.Fatal(err)
	}
	recs, _ := Read(path, 0)
	if len(recs) != 1 {
		t.Fatalf("%d records, want the one of exactly MaxRecord bytes", len(recs))
	}
}

func TestAppendAfterCloseIsAnError(t *testing.T) {
	l := openT(t, filepath.Join(t.TempDir(), "audit.jsonl"), 0, 1)
	l.Close()
	if err := l.Append(decision{Seq: 1}); err == nil {
		t.Fatal("Append after Close succeeded")
	}
}

func TestOpenRefusesKeepBelowOne(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "audit.jsonl"), 100, 0); err == nil {
		t.Fatal("keep 0 accepted")
	}
}

func TestConcurrentAppendsWriteWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openT(t, path, 4096, 50) // small files: rotation races with appends too
	const writers, each = 8, 40
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := l.Append(decision{Seq: w*1000 + i, Rule: strings.Repeat("r", 50+w)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	tail, err := Scan(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tail.Skipped != 0 || len(tail.Records) != writers*each {
		t.Fatalf("%d records, %d skipped; want %d, 0", len(tail.Records), tail.Skipped, writers*each)
	}
	seen := map[int]bool{}
	last := map[int]int{}
	for _, s := range seqs(t, tail.Records) {
		if seen[s] {
			t.Fatalf("record %d twice", s)
		}
		seen[s] = true
		w := s / 1000
		if prev, ok := last[w]; ok && s < prev {
			t.Fatalf("writer %d: record %d after %d", w, s, prev)
		}
		last[w] = s
	}
}

func TestALineOverMaxRecordIsSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	long := `{"note":"` + strings.Repeat("x", MaxRecord) + `"}`
	if err := os.WriteFile(path, []byte(`{"seq":1}`+"\n"+long+"\n"+`{"seq":2}`+"\n"+long), 0o600); err != nil {
		t.Fatal(err)
	}
	tail, err := Scan(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(seqs(t, tail.Records)); got != "[1 2]" || tail.Skipped != 2 {
		t.Fatalf("records %s, skipped %d; want [1 2], 2", got, tail.Skipped)
	}
}
