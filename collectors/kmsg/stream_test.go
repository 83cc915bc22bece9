package kmsg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// pipeReader opens a Reader on the read end of a new pipe and returns the
// write end.
func pipeReader(t *testing.T, cfg Config) (*Reader, *os.File) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pw.Close() })
	cfg.Path = fmt.Sprintf("/proc/self/fd/%d", pr.Fd())
	cfg.Logger = quiet
	r, err := Open(cfg)
	pr.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, pw
}

// readNow reads what the source has, in this goroutine, up to EAGAIN: the
// step Run repeats each time the poller wakes it.
func readNow(t *testing.T, r *Reader) {
	t.Helper()
	rc, err := r.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	if err := rc.Read(func(fd uintptr) bool { rerr = r.readSome(int(fd), !r.cfg.NoFollow); return true }); err != nil {
		t.Fatal(err)
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
}

func pending(r *Reader) []Record {
	var got []Record
	for {
		select {
		case b := <-r.Batches():
			got = append(got, b.Records...)
		default:
			return got
		}
	}
}

func TestARecordSplitAcrossReadsOfAPipeIsParsedWhole(t *testing.T) {
	r, pw := pipeReader(t, Config{})
	rec := "6,1,1,-;NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, x\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n"
	for _, cut := range []int{20, len("6,1,1,-;NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, x\n SUBSYS")} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			seq := fmt.Sprint(cut)
			raw := strings.Replace(rec, "6,1,", "6,"+seq+",", 1)
			fmt.Fprint(pw, raw[:cut])
			readNow(t, r) // ends in EAGAIN in the middle of a line
			if got := pending(r); len(got) != 0 {
				t.Fatalf("half a record was handed over: %+v", got)
			}
			fmt.Fprint(pw, raw[cut:])
			readNow(t, r)
			got := pending(r)
			if len(got) != 1 || got[0].Message != "NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, x" || got[0].Seq != uint64(cut) {
				t.Fatalf("got %+v, want the whole record", got)
			}
			if cut == 20 && got[0].Device != "+pci:0000:3b:00.0" {
				t.Errorf("dictionary lost: %+v", got[0])
			}
			if st := r.Stats(); st.Malformed != 0 {
				t.Errorf("stats %+v: nothing is malformed", st)
			}
		})
	}
}

func TestAFinalLineWithoutNewlineIsParsedOnceAtEOF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(p, []byte("6,1,1,-;one\n6,2,2,-;two without a newline"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, r := runAll(t, Config{Path: p})
	if len(got) != 2 || got[1].Message != "two without a newline" {
		t.Fatalf("got %+v", got)
	}
	if st := r.Stats(); st.Malformed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestHalfARecordIsMalformedWhenReadingStopsBeforeItEnds(t *testing.T) {
	r, pw := pipeReader(t, Config{NoFollow: true})
	fmt.Fprint(pw, "6,1,1,-;whole\n6,2,2,-;half")
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got []Record
	for b := range r.Batches() {
		got = append(got, b.Records...)
	}
	if len(got) != 1 || got[0].Message != "whole" {
		t.Fatalf("got %+v, want only the whole record", got)
	}
	if st := r.Stats(); st.Malformed != 1 {
		t.Errorf("stats %+v, want the half record counted malformed", st)
	}
}

func TestAMegabyteLineOnAPipeIsOneTruncatedRecordInBoundedMemory(t *testing.T) {
	r, pw := pipeReader(t, Config{})
	line := []byte("6,1,1,-;NVRM: " + strings.Repeat("x", 1<<20) + "\n DEVICE=+pci:0000:3b:00.0\n6,2,2,-;next\n")
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	// The pipe holds 64 KiB: the reader reads as this fills it.
	if _, err := pw.Write(line); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var got []Record
	for b := range r.Batches() {
		got = append(got, b.Records...)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&ms)
	if len(got) != 2 || got[1].Message != "next" {
		t.Fatalf("got %d records, want the long one and the next", len(got))
	}
	long := got[0]
	if !long.Truncated || len(long.Message) > MaxMessageBytes || !strings.HasSuffix(long.Message, TruncatedMarker) ||
		!strings.HasPrefix(long.Message, "NVRM: xxx") || long.Device != "+pci:0000:3b:00.0" {
		t.Errorf("long record: truncated %v, %d bytes, device %q", long.Truncated, len(long.Message), long.Device)
	}
	if st := r.Stats(); st.Truncated != 1 || st.Malformed != 0 {
		t.Errorf("stats %+v, want 1 truncated", st)
	}
	if cap(r.line) > 2*maxStreamLine || cap(r.partial) > 2*maxStreamRecord {
		t.Errorf("buffers grew to %d and %d bytes", cap(r.line), cap(r.partial))
	}
	// What reading a 1 MiB line cost: the reader's buffers and one record,
	// not the line.
	if n := ms.TotalAlloc - before; n > 512<<10 {
		t.Errorf("%d bytes allocated reading a 1 MiB line", n)
	}
}
