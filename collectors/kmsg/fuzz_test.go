package kmsg

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// seedLines are the example lines and the extra real formats: every fuzz
// target starts from them.
func seedLines(f *testing.F) []string {
	b, err := os.ReadFile("testdata/kmsg-examples.tsv")
	if err != nil {
		f.Fatal(err)
	}
	var lines []string
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if i > 0 {
			lines = append(lines, strings.SplitN(l, "\t", 2)[0])
		}
	}
	for _, tc := range classifyCases {
		lines = append(lines, tc.line)
	}
	return lines
}

var validKinds = map[event.Kind]bool{
	event.KindXid: true, event.KindSXid: true, event.KindGPUIdentity: true, event.KindFallenOffBus: true,
	event.KindRmInitFailed: true, event.KindAPIMismatch: true, event.KindDriverLoaded: true, event.KindAER: true,
	event.KindMCE: true, event.KindOtherNVRM: true, event.KindUnrelated: true,
}

func FuzzParseRecord(f *testing.F) {
	for i, l := range seedLines(f) {
		f.Add([]byte("6," + strconv.Itoa(i) + ",123,-;" + l + "\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:01.0\n"))
	}
	f.Add([]byte(`4,1,2,-,caller=T1;a\x0ab\xzz\` + "\n"))
	f.Add([]byte("6,1,2,-;" + strings.Repeat(`\xe2\x80\xa6`, MaxMessageBytes/3+1) + "\n SUBSYSTEM=pci\n"))
	f.Add([]byte("6,1,2,-;" + strings.Repeat("é", MaxMessageBytes/2) + "x\n DEVICE=+pci:0000:3b:00.0\n"))
	f.Add([]byte("1234567890123456789,12345678901234567890,9223372036854775,c,caller=T1;x\n"))
	f.Add([]byte("8192,00000000,0,;text that is long enough\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The one-pass header takes only what the field-by-field parse
		// takes, with the same values.
		if err := headerAgrees(b); err != nil {
			t.Fatal(err)
		}
		r, err := ParseRecord(b)
		// The reader's parse, into an arena used before, says the same.
		var inArena Record
		if aerr := parseRecordInto(&inArena, b, fuzzArena()); (aerr == nil) != (err == nil) || inArena != r {
			t.Fatalf("in an arena: %+v, %v; alone: %+v, %v", inArena, aerr, r, err)
		}
		if err != nil {
			return
		}
		if len(r.Message) > MaxMessageBytes {
			t.Fatalf("message of %d bytes, more than MaxMessageBytes", len(r.Message))
		}
		if r.Truncated && !strings.HasSuffix(r.Message, TruncatedMarker) {
			t.Fatalf("truncated record without the marker: %q", r.Message)
		}
		if len(r.Subsystem)+len(r.Device) > maxDictBytes {
			t.Fatalf("dictionary values of %d bytes", len(r.Subsystem)+len(r.Device))
		}
		if !r.Truncated && len(r.Message)+len(r.Subsystem)+len(r.Device) > len(b) {
			t.Fatalf("parsed text is longer than the record: %d > %d", len(r.Message), len(b))
		}
		// What String writes, ParseRecord reads back the same.
		r2, err := ParseRecord([]byte(r.String()))
		if err != nil || r2.Seq != r.Seq || r2.Message != r.Message || r2.Level != r.Level || r2.Facility != r.Facility || r2.Truncated {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, r, r2)
		}
	})
}

func FuzzClassify(f *testing.F) {
	for _, l := range seedLines(f) {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c := ClassifyLine(line)
		if !validKinds[c.Kind] {
			t.Fatalf("kind %q", c.Kind)
		}
		if c.PCIBusID != "" {
			if n := pciAddrLen(c.PCIBusID); n != len(c.PCIBusID) || c.PCIBusID != strings.ToLower(c.PCIBusID) ||
				c.PCIBusID[len(c.PCIBusID)-2] != '.' {
				t.Fatalf("bus id %q is not DDDD:BB:DD.F", c.PCIBusID)
			}
		}
		if len(c.ProcessName) > len(line) || len(c.UUID) > len(line) || len(c.Switch) > len(line) {
			t.Fatal("a field is longer than the line")
		}
		if c.HasPID && c.PID < 0 || c.HasCode && c.Code < 0 {
			t.Fatalf("negative number: %+v", c)
		}
		if c.Kind == event.KindUnrelated && (c.PCIBusID != "" || c.HasCode || c.HasPID) {
			t.Fatalf("unrelated with fields: %+v", c)
		}
		if c.Rejected != "" && c.Rejected != RejectProcessName && c.Rejected != RejectMalformed {
			t.Fatalf("rejected for %q", c.Rejected)
		}

		// An event's bus id is the address where the grammar puts it.
		m := Classify(line)
		if m.Kind != event.KindUnrelated && m.Kind != event.KindOtherNVRM && m.PCIBusID != "" {
			if !slices.Contains(anchoredAddrs(line), m.PCIBusID) {
				t.Fatalf("%s bus id %q is not at an anchored position of %q (have %q)", m.Kind, m.PCIBusID, line, anchoredAddrs(line))
			}
		}

		// Whatever a task calls itself and its file, the kernel's report
		// of its segfault is never an event.
		comm := line[:min(len(line), maxComm)]
		forged := comm + "[4242]: segfault at 0 ip 0000556304466180 sp 00007ffd6a1f7fd0 error 6 in " + line + "[1180,556304466000+1000] likely on CPU 1 (core 1, socket 0)"
		if f := Classify(forged); f.Kind != event.KindUnrelated || f.PCIBusID != "" || f.HasCode {
			t.Fatalf("forged segfault report classified %+v: %q", f, forged)
		}
	})
}

// anchoredAddrs lists the normalized addresses found where the grammars
// put them in a kernel message: after "NVRM: Xid (" or "NVRM: Xid (PCI:",
// "NVRM: GPU ", "NVRM: GPU at ", "NVRM: GPU at PCI:", "NVRM: The NVIDIA
// GPU ", "nvidia-nvswitchN: SXid (PCI:", a dev_printk device name, and
// AER's "received: " / "received from ".
func anchoredAddrs(m string) []string {
	m = trimBlank(m)
	var starts []string
	if strings.HasPrefix(m, "NVRM") && len(m) > 5 {
		body := trimBlank(m[5:])
		if x, ok := strings.CutPrefix(body, "Xid"); ok {
			if x, ok := strings.CutPrefix(trimBlank(x), "("); ok {
				starts = append(starts, x, strings.TrimPrefix(x, "PCI:"))
			}
		}
		for _, p := range []string{"GPU at PCI:", "GPU at ", "GPU ", "The NVIDIA GPU "} {
			if r, ok := strings.CutPrefix(body, p); ok {
				starts = append(starts, r)
			}
		}
	}
	if strings.HasPrefix(m, "nvidia-nvswitch") {
		if i := strings.Index(m, ": SXid"); i >= 0 {
			if x, ok := strings.CutPrefix(trimBlank(m[i+len(": SXid"):]), "("); ok {
				starts = append(starts, x, strings.TrimPrefix(x, "PCI:"))
			}
		}
	}
	if sp := strings.IndexByte(m, ' '); sp >= 0 {
		starts = append(starts, m[sp+1:])
		for _, p := range []string{"received: ", "received from "} {
			if i := strings.Index(m, p); i >= 0 {
				starts = append(starts, m[i+len(p):])
			}
		}
	}
	var addrs []string
	for _, s := range starts {
		if n := pciAddrLen(s); n > 0 {
			addrs = append(addrs, normalizeAddr(s[:n]))
		}
	}
	return addrs
}

func FuzzStripWrapper(f *testing.F) {
	for _, l := range seedLines(f) {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		w := StripWrapper(line)
		// The message is always a piece of the line: stripping never
		// invents or copies text, so its memory is bounded by the input.
		if !strings.Contains(line, w.Message) || len(w.Message) > len(line) {
			t.Fatalf("message %q is not part of %q", w.Message, line)
		}
		// Stripping is idempotent on what it leaves, unless a layer was a
		// user-space tag.
		if !w.UserSpace {
			if again := StripWrapper(w.Message); len(again.Message) > len(w.Message) {
				t.Fatalf("second strip grew: %q -> %q", w.Message, again.Message)
			}
		}
	})
}

// streamRecords splits b into records as the stream path does, fed chunk
// bytes per read with no pause between reads, up to EOF. held is the most
// the reader kept of unfinished lines and records between reads.
func streamRecords(b []byte, chunk int) (recs []Record, held int) {
	r := &Reader{cfg: Config{BatchSize: 1 << 30}, log: quiet, out: make(chan Batch, 1)}
	for len(b) > 0 {
		n := min(chunk, len(b))
		r.splitStream(b[:n])
		b = b[n:]
		held = max(held, len(r.line)+len(r.partial))
	}
	r.endStream(true)
	return r.batch, held
}

func FuzzStreamSplit(f *testing.F) {
	for i, l := range seedLines(f)[:20] {
		f.Add([]byte("6,"+strconv.Itoa(i)+",1,-;"+l+"\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:01.0\n6,99,2,-;next"), uint16(i+1))
	}
	f.Add([]byte("6,1,1,-;"+strings.Repeat("y", maxStreamLine+10)+"\n DEVICE=+pci:0000:00:01.0\n\n SUBSYSTEM=x\n6,2,2,-;b\n"), uint16(1000))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint16) {
		whole, _ := streamRecords(b, len(b)+1)
		split, held := streamRecords(b, int(chunk)+1)
		// Where the reads end does not change the records.
		if len(whole) != len(split) {
			t.Fatalf("%d records read whole, %d in chunks of %d", len(whole), len(split), int(chunk)+1)
		}
		for i := range whole {
			w, s := whole[i], split[i]
			if w.Seq != s.Seq || w.Message != s.Message || w.Subsystem != s.Subsystem || w.Device != s.Device || w.Truncated != s.Truncated {
				t.Fatalf("record %d: %+v whole, %+v in chunks", i, w, s)
			}
			if len(s.Message) > MaxMessageBytes {
				t.Fatalf("message of %d bytes", len(s.Message))
			}
		}
		if held > maxStreamLine+maxStreamRecord {
			t.Fatalf("the reader held %d bytes between reads", held)
		}
	})
}

// fuzzArena is an arena that has handed out strings and been reset, so that
// a parse into it writes over memory used before.
func fuzzArena() *arena {
	a := &arena{}
	a.string(bytes.Repeat([]byte("\\x41"), arenaChunk/5))
	a.reset()
	return a
}
