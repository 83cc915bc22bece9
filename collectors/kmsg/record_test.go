package kmsg

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseRecordWithDictionary(t *testing.T) {
	// As dev_printk writes it: the text, then the dictionary lines.
	raw := "3,2251,5140900123,-;pcieport 0000:00:03.0: AER: Corrected error received: 0000:3b:00.0\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:03.0\n"
	r, err := ParseRecord([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 2251 || r.Level != 3 || r.Facility != 0 || r.Monotonic != 5140900123*time.Microsecond || r.Flags != '-' {
		t.Errorf("header: %+v", r)
	}
	if r.Message != "pcieport 0000:00:03.0: AER: Corrected error received: 0000:3b:00.0" {
		t.Errorf("message %q: the dictionary must not be glued to it", r.Message)
	}
	if r.Subsystem != "pci" || r.Device != "+pci:0000:00:03.0" {
		t.Errorf("dictionary: subsystem %q device %q", r.Subsystem, r.Device)
	}
	if !r.FromKernel() {
		t.Error("facility 0 is the kernel")
	}
}

func TestParseRecordUnescapesAndKeepsNewlines(t *testing.T) {
	raw := `4,10,20,-,caller=T1;NVRM: The NVIDIA GPU 0000:02:00.0\x0aNVRM: (PCI ID: 10de:2bb5) installed in this system has\x0aNVRM: fallen off the bus and is not responding to commands.` + "\n"
	r, err := ParseRecord([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(r.Message, "\n") != 2 {
		t.Fatalf("message %q: want the two embedded newlines decoded", r.Message)
	}
	c := Classify(r.Message)
	if c.Kind != "fallen_off_bus" || c.PCIBusID != "0000:02:00.0" {
		t.Errorf("as one record the 570+ message is fallen_off_bus on 0000:02:00.0; got %q %q", c.Kind, c.PCIBusID)
	}
	// Round trip through String.
	r2, err := ParseRecord([]byte(r.String()))
	if err != nil || r2.Message != r.Message || r2.Seq != r.Seq {
		t.Errorf("round trip: %v %+v", err, r2)
	}
}

func TestParseRecordUserFacility(t *testing.T) {
	// echo '<3>text' > /dev/kmsg is stored as facility user (1), level 3.
	r, err := ParseRecord([]byte("11,5,6,-;hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Facility != 1 || r.Level != 3 || r.FromKernel() {
		t.Errorf("facility %d level %d", r.Facility, r.Level)
	}
}

func TestParseRecordRejectsMalformed(t *testing.T) {
	for _, raw := range []string{"", "no header at all", "1,2;x", "a,2,3,-;x", "1,2,x,-;x", "1,99999999999999999999,3,-;x"} {
		if _, err := ParseRecord([]byte(raw)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v, want ErrMalformed", raw, err)
		}
	}
}

func TestUnescapeKeepsBadEscapes(t *testing.T) {
	for in, want := range map[string]string{
		`a\x41b`:       "aAb",
		`a\x4`:         `a\x4`,
		`a\xzzb`:       `a\xzzb`,
		`\\x41`:        `\A`,
		`plain`:        "plain",
		`\xe2\x80\xae`: "\u202e",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRecordTruncatesAnOverlongMessage(t *testing.T) {
	long := strings.Repeat("a", 1<<20)
	for name, raw := range map[string]string{
		"plain":   "6,1,2,-;NVRM: " + long + "\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n",
		"escaped": "6,1,2,-;NVRM: " + strings.Repeat(`\x0a`, 1<<18) + "\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n",
		// Just over the cap once decoded, and under the raw bound.
		"just over": "6,1,2,-;" + strings.Repeat("b", MaxMessageBytes+1) + "\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n",
	} {
		r, err := ParseRecord([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !r.Truncated || len(r.Message) > MaxMessageBytes || !strings.HasSuffix(r.Message, TruncatedMarker) {
			t.Errorf("%s: truncated %v, %d bytes, ends %q", name, r.Truncated, len(r.Message), r.Message[max(0, len(r.Message)-20):])
		}
		if r.Subsystem != "pci" || r.Device != "+pci:0000:3b:00.0" {
			t.Errorf("%s: the dictionary after a long text must be kept: %q %q", name, r.Subsystem, r.Device)
		}
	}
	// At the cap exactly nothing is cut.
	r, err := ParseRecord([]byte("6,1,2,-;" + strings.Repeat("c", MaxMessageBytes) + "\n"))
	if err != nil || r.Truncated || len(r.Message) != MaxMessageBytes {
		t.Errorf("a message of MaxMessageBytes: %v truncated %v len %d", err, r.Truncated, len(r.Message))
	}
}

func TestParseRecordTruncatesOnARuneBoundary(t *testing.T) {
	// "é" is two bytes; the cut point falls inside one of them.
	msg := "x" + strings.Repeat("é", MaxMessageBytes)
	r, err := ParseRecord([]byte("6,1,2,-;" + msg + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !utf8.ValidString(r.Message) || !r.Truncated {
		t.Errorf("truncated %v, valid UTF-8 %v", r.Truncated, utf8.ValidString(r.Message))
	}
}

func TestParseRecordBoundsTheDictionary(t *testing.T) {
	raw := "6,1,2,-;text\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n JUNK=" + strings.Repeat("j", 1<<20) + "\n DEVICE=+pci:0000:ff:00.0\n"
	r, err := ParseRecord([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if r.Message != "text" || r.Subsystem != "pci" || r.Device != "+pci:0000:3b:00.0" || r.Truncated {
		t.Errorf("record %+v: want the dictionary lines within the bound, and no more", r)
	}
}

func TestParseRecordOfAnOverlongLineCopiesABoundedStart(t *testing.T) {
	raw := []byte("6,1,2,-;" + strings.Repeat("a", 1<<20) + "\n")
	var a arena
	allocs := testing.AllocsPerRun(20, func() {
		var r Record
		if err := parseRecordInto(&r, raw, &a); err != nil || !r.Truncated {
			t.Fatal(err)
		}
	})
	// One string of at most maxRawText and the truncated message; counting
	// allocations alone does not show their size, so check the arena too.
	if allocs > 3 {
		t.Errorf("%v allocations per record", allocs)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	for range 100 {
		var r Record
		parseRecordInto(&r, raw, &a)
	}
	runtime.ReadMemStats(&ms)
	if per := (ms.TotalAlloc - before) / 100; per > 2*maxRawText {
		t.Errorf("%d bytes allocated per record of 1 MiB, want at most %d", per, 2*maxRawText)
	}
}

// headerAgrees says how a record's parse (the one-pass header, for what it
// takes) and the field-by-field header parse differ, if they do: in whether
// they take it, in a value, or in where the text begins.
func headerAgrees(b []byte) error {
	hs, serr := parseHeaderSlow(b)
	r, err := ParseRecord(b)
	switch {
	case (err == nil) != (serr == nil):
		return fmt.Errorf("%q: ParseRecord %v, field-by-field %v", b, err, serr)
	case err != nil:
		return nil
	case r.Seq != hs.seq || uint64(r.Facility)<<3|uint64(r.Level) != hs.pri ||
		r.Monotonic != time.Duration(hs.ts)*time.Microsecond || r.Flags != hs.flags:
		return fmt.Errorf("%q: record %+v, field-by-field header %+v", b, r, hs)
	}
	text, _, _ := strings.Cut(strings.TrimRight(string(b[hs.semi+1:]), "\n"), "\n")
	if !r.Truncated && !strings.Contains(text, `\`) && r.Message != text {
		return fmt.Errorf("%q: text %q, want %q after the header's ';'", b, r.Message, text)
	}
	return nil
}

// The one-pass header parse agrees with the field-by-field one on every
// length of every number, on values at and past each bound, and on what
// may follow the flags.
func TestTheOnePassHeaderAgreesWithTheFieldByFieldParse(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	digits := func(n int) string {
		var sb strings.Builder
		for range n {
			sb.WriteByte(byte('0' + rng.IntN(10)))
		}
		return sb.String()
	}
	var headers []string
	for n := 0; n <= 21; n++ {
		for range 20 {
			headers = append(headers,
				digits(min(n, 4))+","+digits(n)+","+digits(n)+",-",
				"6,"+digits(n)+","+digits(max(n-3, 1))+",c,caller=T12",
			)
		}
	}
	headers = append(headers, "8192,1,2,-", "8193,1,2,-", "6,1,9223372036854775,-", "6,1,9223372036854776,-",
		"6,18446744073709551615,1,-", "6,99999999999999999999,1,-", "6,1,2,", "6,1,2,,x", "6,1,2", "6,1,2;x",
		"6,,2,-", "6,a,2,-", "6,1,2,-,", "6,1 ,2,-", "-6,1,2,-", "6,1,2,+", "6,1,2,\xff")
	for _, h := range headers {
		for _, rest := range []string{";text\n", ";a much longer text, to leave eight bytes after every number\n", ""} {
			b := []byte(h + rest)
			if err := headerAgrees(b); err != nil {
				t.Error(err)
			}
		}
	}
}

func TestDigitsAt(t *testing.T) {
	for _, s := range []string{"0", "7", "12345678", "123456789", "1234567890123456", "12345678901234567", "9999999999999999999", "0000000000000000001"} {
		b := []byte(s + ",padding")
		v, next, ok := digitsAt(b, 0)
		want, _ := strconv.ParseUint(s, 10, 64)
		if !ok || v != want || next != len(s)+1 {
			t.Errorf("%s: %d %d %v, want %d %d", s, v, next, ok, want, len(s)+1)
		}
	}
	for _, s := range []string{",", "a1,", "12345678901234567890,", "1", "1x,", "99999999999999999999,"} {
		if _, _, ok := digitsAt([]byte(s), 0); ok {
			t.Errorf("%q: taken", s)
		}
	}
}

// The text ends at its first newline and its escapes are decoded wherever
// they fall, with or without a dictionary after it, in an arena or not,
// and whatever the header holds (a newline in an extra field included).
func TestTheTextEndsAtItsFirstNewline(t *testing.T) {
	var a arena
	for _, head := range []string{"6,1,2,-;", "6,1,2,-,caller=T1;", "6,1,2,-,x\ny;"} {
		for n := range 40 {
			for esc := -1; esc <= n; esc++ {
				for _, dict := range []string{"", "\n SUBSYSTEM=pci", "\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0"} {
					text, want := strings.Repeat("a", n), strings.Repeat("a", n)
					if esc >= 0 {
						text, want = text[:esc]+`\x41`+text[esc:], want[:esc]+"A"+want[esc:]
					}
					b := []byte(head + text + dict + "\n")
					for _, in := range []*arena{nil, &a} {
						var r Record
						if err := parseRecordInto(&r, b, in); err != nil || r.Message != want || (r.Subsystem == "pci") != (dict != "") {
							t.Fatalf("%q: %+v, %v; want message %q", b, r, err, want)
						}
					}
				}
			}
		}
		a.reset()
	}
}
