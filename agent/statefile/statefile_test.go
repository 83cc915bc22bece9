package statefile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesAtomicallyAndLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"one", "two"} {
		if err := Write(dir, "x.json", []byte(content)); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "x.json")); string(b) != content {
			t.Errorf("content %q, want %q", b, content)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
	if err := Write(filepath.Join(dir, "missing"), "x.json", nil); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

func TestMoveAsideKeepsEveryCorruptCopy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.json")
	for i, want := range []string{path + ".corrupt-1", path + ".corrupt-2"} {
		os.WriteFile(path, []byte{byte('a' + i)}, 0o644)
		got, err := MoveAside(path)
		if err != nil || got != want {
			t.Fatalf("MoveAside = %q, %v; want %q", got, err, want)
		}
		if b, _ := os.ReadFile(got); string(b) != string(rune('a'+i)) {
			t.Errorf("%s holds %q", got, b)
		}
	}
}
