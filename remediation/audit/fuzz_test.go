package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzScanLines feeds hostile bytes to the reader of a log file: it must not
// panic, and whatever it returns is one JSON value per record, no newline in
// any, each line either returned or counted as skipped. The line limit is
// 64 bytes rather than MaxRecord so that small inputs reach the long-line
// path (TestALineOverMaxRecordIsSkipped covers the real limit).
func FuzzScanLines(f *testing.F) {
	const fuzzMaxLine = 64
	f.Add([]byte(`{"seq":1}` + "\n" + `{"seq":2}` + "\n"))
	f.Add([]byte(`{"seq":1}` + "\n" + `{"seq":2,"ru`))
	f.Add([]byte("\n\n\r\n \n"))
	f.Add([]byte(`{"a":"\u0000"}` + "\n\xff\xfe{}\n"))
	f.Add([]byte(strings.Repeat("[", 100) + "\n{}\n" + strings.Repeat("x", 64)))
	f.Add([]byte(`{"seq":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var recs []json.RawMessage
		skipped, err := scanLines(bytes.NewReader(data), fuzzMaxLine, func(r json.RawMessage) { recs = append(recs, r) })
		if err != nil {
			t.Fatalf("scanLines on a bytes.Reader: %v", err)
		}
		for _, r := range recs {
			if !json.Valid(r) || bytes.IndexByte(r, '\n') >= 0 || len(r) >= fuzzMaxLine {
				t.Fatalf("returned record %q", r)
			}
		}
		lines := bytes.Count(data, []byte("\n"))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			lines++
		}
		if len(recs)+skipped != lines {
			t.Fatalf("%d records + %d skipped != %d lines", len(recs), skipped, lines)
		}
	})
}

// FuzzRead runs the whole reader, files and ring included, on a log whose
// current and rotated files hold the fuzzer's bytes.
func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"seq":1}`+"\n"), []byte(`{"seq":2}`+"\n{"), 1)
	f.Add([]byte{}, []byte("\x00\n"), 0)
	f.Add([]byte("{}\n{}\n{}\n"), []byte("[]\n"), -3)
	f.Fuzz(func(t *testing.T, old, current []byte, limit int) {
		dir := t.TempDir()
		path := filepath.Join(dir, "audit.jsonl")
		if err := os.WriteFile(path+".1", old, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, current, 0o600); err != nil {
			t.Fatal(err)
		}
		limit %= 64
		tail, err := Scan(path, limit)
		if err != nil {
			t.Fatal(err)
		}
		if limit > 0 && len(tail.Records) > limit {
			t.Fatalf("%d records with limit %d", len(tail.Records), limit)
		}
		for _, r := range tail.Records {
			if !json.Valid(r) {
				t.Fatalf("returned record %q", r)
			}
		}
	})
}
