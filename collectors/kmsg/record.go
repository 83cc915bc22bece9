package kmsg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// Record is one /dev/kmsg record.
type Record struct {
	Seq       uint64
	Monotonic time.Duration // since boot, by the kernel's log clock (stops during suspend)
	// Message is the text with \xNN escapes decoded. A message printed with
	// embedded newlines (NVIDIA's multi-line messages) keeps them. From a
	// Reader, it shares memory with the records read with it: copy it
	// (strings.Clone) to keep it long after the batch; RecordEvent does.
	Message string
	// From the dictionary lines that dev_printk adds.
	Subsystem string // "pci"
	Device    string // "+pci:0000:3b:00.0"
	Facility  uint16 // 0 = kernel; user-space writes to /dev/kmsg default to 1 (user)
	Level     uint8  // 0 (emerg) .. 7 (debug)
	// Flags is the header's flags field: '-' for a whole record, 'c' and '+'
	// for the pieces of a continued line on older kernels.
	Flags byte
	// Seen marks a record handed over before a restart (Config.RereadSeen).
	Seen bool
	// Truncated marks a record whose text was longer than MaxMessageBytes:
	// Message holds its start and ends in TruncatedMarker.
	Truncated bool
}

// Limits on the text one record may become. The kernel formats a printk
// record in about 1 KiB and a whole /dev/kmsg record in at most 8 KiB
// (CONSOLE_EXT_LOG_MAX), but a file, a pipe or a trace may hold lines of
// any length: none of them may become an event of that size.
const (
	// MaxMessageBytes bounds Record.Message, marker included.
	MaxMessageBytes = 8 << 10
	// TruncatedMarker ends the Message of a Truncated record.
	TruncatedMarker = "…[truncated]"
	// maxRawText bounds the escaped text looked at: a \xNN escape takes 4
	// bytes for one, so any message of MaxMessageBytes fits in it, and
	// anything longer is truncated without reading (or copying) the rest.
	maxRawText = 4 * MaxMessageBytes
	// maxDictBytes bounds the dictionary looked at; the kernel's (SUBSYSTEM,
	// DEVICE) are tens of bytes. Lines past it are ignored.
	maxDictBytes = 1 << 10
)

// FromKernel reports whether the kernel wrote the record (facility 0), as
// opposed to a process writing to /dev/kmsg.
func (r Record) FromKernel() bool { return r.Facility == 0 }

// ErrMalformed is wrapped by every ParseRecord error.
var ErrMalformed = errors.New("malformed kmsg record")

// ParseRecord parses one record as read(2) returns it from /dev/kmsg:
// "PRI,SEQ,TS_USEC,FLAGS[,more];TEXT\n[ KEY=VALUE\n]...". It allocates one
// string for the text and dictionary (and one more only when the text has
// escapes or is truncated). Text longer than MaxMessageBytes is truncated
// (Record.Truncated), and only a bounded start of an over-long record is
// copied, so the memory a record takes does not depend on its input.
func ParseRecord(b []byte) (Record, error) {
	var r Record
	err := parseRecordInto(&r, b, nil)
	return r, err
}

// header is the fixed part of a record's header; semi is the index of the
// ';' that ends it.
type header struct {
	pri, seq, ts uint64
	flags        byte
	semi         int
}

// maxHeader bounds where the ';' that ends the header may be.
const maxHeader = 256

// parseHeader parses the header: one pass over the bytes for the records
// the kernel writes, and the field-by-field parse, which says what is
// wrong, for anything it does not take.
func parseHeader(b []byte) (header, error) {
	if h, ok := parseHeaderFast(b); ok {
		return h, nil
	}
	return parseHeaderSlow(b)
}

// parseHeaderFast takes exactly the headers parseHeaderSlow accepts, and
// gives the same values (FuzzParseRecord checks both), in one pass: three
// runs of 1 to 19 digits each ended by ',', the flags field, and the ';'
// (further fields before it are skipped). It reports false for anything
// else, and the slow parse then says what is wrong. The digits are read
// eight at a time, with few branches: the read(2) before each record
// leaves the branch predictor little to go on.
func parseHeaderFast(b []byte) (h header, ok bool) {
	hb := b[:min(len(b), maxHeader)]
	var v [3]uint64
	i := 0
	for f := range v {
		x, next, ok := parseDigits(hb, i)
		if !ok || next >= len(hb) || hb[next] != ',' {
			return h, false
		}
		v[f], i = x, next+1
	}
	if v[0] > 1<<13 || v[2] > uint64(1<<63-1)/1000 {
		return h, false
	}
	h.pri, h.seq, h.ts, h.flags = v[0], v[1], v[2], '-'
	if i >= len(hb) {
		return h, false
	}
	switch c := hb[i]; {
	case c == ';':
		h.semi = i
		return h, true
	case c != ',':
		h.flags = c
		if i+1 < len(hb) && hb[i+1] == ';' {
			h.semi = i + 1
			return h, true
		}
	}
	j := bytes.IndexByte(hb[i:], ';')
	if j < 0 {
		return h, false
	}
	h.semi = i + j
	return h, true
}

// parseDigits parses the run of 1 to 19 decimal digits at b[i:], eight
// bytes at a time, and returns its value and the index after it. It reports
// false for no digits, more than 19, or fewer than eight bytes left to look
// at (the slow parse takes those).
func parseDigits(b []byte, i int) (v uint64, next int, ok bool) {
	n := 0
	for {
		if i+8 > len(b) {
			return 0, 0, false
		}
		// The bytes as digit values: a digit's byte is 0..9 after the xor.
		a := binary.LittleEndian.Uint64(b[i:]) ^ 0x3030303030303030
		// The high bit of each byte that is not a digit (over 9), without
		// carries between bytes.
		nd := ((a & 0x7f7f7f7f7f7f7f7f) + 0x7676767676767676 | a) & 0x8080808080808080
		k := bits.TrailingZeros64(nd) >> 3 // digits at the start, 0..8
		n += k
		if n > 19 {
			return 0, 0, false
		}
		if k > 0 {
			v = v*pow10[k] + eightDigits(a<<(64-8*k))
		}
		i += k
		if k < 8 {
			break
		}
	}
	return v, i, n > 0
}

var pow10 = [9]uint64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000}

// eightDigits is the number whose eight decimal digit values are a's bytes,
// the most significant first in memory (the lowest byte).
func eightDigits(a uint64) uint64 {
	a = a*10 + a>>8 // pairs
	a = ((a&0x000000ff000000ff)*(100+1000000<<32) + (a>>16&0x000000ff000000ff)*(1+10000<<32)) >> 32
	return a
}

// parseHeaderSlow splits the header into its fields and parses each, so
// that an error names the field that is wrong.
func parseHeaderSlow(b []byte) (header, error) {
	var hd header
	semi := bytes.IndexByte(b[:min(len(b), maxHeader)], ';')
	if semi < 0 {
		return hd, fmt.Errorf("%w: no ';' after the header", ErrMalformed)
	}
	h := b[:semi]
	var field [4][]byte
	n := 0
	for n < 4 {
		i := indexByte(h, ',')
		if i < 0 {
			field[n] = h
			n++
			break
		}
		field[n] = h[:i]
		h = h[i+1:]
		n++
	}
	if n < 4 {
		return hd, fmt.Errorf("%w: header %q has %d fields, want at least 4", ErrMalformed, b[:semi], n)
	}
	pri, ok := parseUint(field[0])
	if !ok || pri > 1<<13 {
		return hd, fmt.Errorf("%w: priority %q", ErrMalformed, field[0])
	}
	seq, ok := parseUint(field[1])
	if !ok {
		return hd, fmt.Errorf("%w: sequence number %q", ErrMalformed, field[1])
	}
	ts, ok := parseUint(field[2])
	if !ok || ts > uint64(1<<63-1)/1000 {
		return hd, fmt.Errorf("%w: time stamp %q", ErrMalformed, field[2])
	}
	hd = header{pri: pri, seq: seq, ts: ts, flags: '-', semi: semi}
	if len(field[3]) > 0 {
		hd.flags = field[3][0]
	}
	return hd, nil
}

// parseRecordInto parses b into *r, all of which it overwrites, taking its
// strings from a (when not nil).
func parseRecordInto(r *Record, b []byte, a *arena) error {
	*r = Record{}
	h, err := parseHeader(b)
	if err != nil {
		return err
	}
	r.Level = uint8(h.pri & 7)
	r.Facility = uint16(h.pri >> 3)
	r.Seq = h.seq
	r.Monotonic = time.Duration(h.ts) * time.Microsecond
	r.Flags = h.flags

	body := b[h.semi+1:]
	for len(body) > 0 && body[len(body)-1] == '\n' {
		body = body[:len(body)-1]
	}
	// Bound what is copied: the text to maxRawText, the dictionary to its
	// whole lines within maxDictBytes. In the common case text and
	// dictionary are still one piece and take one string.
	rawText, rawDict := body, body[len(body):]
	if i := bytes.IndexByte(body, '\n'); i >= 0 { // the text is long: the vector search
		rawText, rawDict = body[:i], body[i+1:]
	}
	if len(rawDict) > maxDictBytes {
		rawDict = rawDict[:maxDictBytes]
		if i := lastIndexByte(rawDict, '\n'); i >= 0 {
			rawDict = rawDict[:i]
		} else {
			rawDict = nil
		}
	}
	var text, dict string
	switch {
	case len(rawText) <= maxRawText:
		keep := len(rawText)
		if len(rawDict) > 0 {
			keep += 1 + len(rawDict)
		}
		var s string
		if a != nil {
			s = a.string(body[:keep])
		} else {
			s = string(body[:keep])
		}
		text = s[:len(rawText)] // the text, then its dictionary after one newline
		if len(s) > len(rawText) {
			dict = s[len(rawText)+1:]
		}
	default:
		r.Truncated = true
		if a != nil {
			text, dict = a.string(rawText[:maxRawText]), a.string(rawDict)
		} else {
			text, dict = string(rawText[:maxRawText]), string(rawDict)
		}
	}
	if strings.IndexByte(text, '\\') >= 0 {
		text = Unescape(text)
	}
	if r.Truncated || len(text) > MaxMessageBytes {
		r.Truncated = true
		text = truncateText(text, MaxMessageBytes-len(TruncatedMarker)) + TruncatedMarker
	}
	r.Message = text
	for dict != "" {
		var line string
		line, dict, _ = strings.Cut(dict, "\n")
		k, v, ok := strings.Cut(strings.TrimPrefix(line, " "), "=")
		if !ok {
			continue
		}
		switch k {
		case "SUBSYSTEM":
			r.Subsystem = v
		case "DEVICE":
			r.Device = v
		}
	}
	return nil
}

// arena hands out strings carved from large append-only chunks, so the
// reader allocates once per chunk rather than once per record. Bytes are
// never written after a string points at them. A string keeps its whole
// chunk alive, which is why RecordEvent copies what it keeps.
type arena struct{ buf []byte }

const arenaChunk = 16 << 10

func (a *arena) string(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > arenaChunk/4 {
		return string(b)
	}
	if cap(a.buf)-len(a.buf) < len(b) {
		a.buf = make([]byte, 0, arenaChunk)
	}
	start := len(a.buf)
	a.buf = append(a.buf, b...)
	return unsafe.String(&a.buf[start], len(b))
}

// Unescape decodes the kernel's \xNN escapes. Anything else, including a
// malformed escape, is kept as it is.
func Unescape(s string) string {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s
	}
	out := make([]byte, 0, len(s))
	out = append(out, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+3 < len(s) && s[i+1] == 'x' && isHex(s[i+2]) && isHex(s[i+3]) {
			out = append(out, unhex(s[i+2])<<4|unhex(s[i+3]))
			i += 3
			continue
		}
		out = append(out, c)
	}
	return string(out)
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// truncateText cuts s to at most n bytes, backing off to the start of a
// UTF-8 sequence so that valid text stays valid.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for k := 0; k < 3 && i > 0 && s[i]&0xc0 == 0x80; k++ {
		i--
	}
	return s[:i]
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// String renders the record in /dev/kmsg's own format (escaping the text
// again), for traces and tests.
func (r Record) String() string {
	var sb strings.Builder
	sb.WriteString(strconv.FormatUint(uint64(r.Facility)<<3|uint64(r.Level), 10))
	sb.WriteByte(',')
	sb.WriteString(strconv.FormatUint(r.Seq, 10))
	sb.WriteByte(',')
	sb.WriteString(strconv.FormatInt(r.Monotonic.Microseconds(), 10))
	sb.WriteByte(',')
	sb.WriteByte(r.Flags)
	sb.WriteByte(';')
	for i := 0; i < len(r.Message); i++ {
		c := r.Message[i]
		if c < ' ' || c >= 127 || c == '\\' {
			sb.WriteString(`\x`)
			sb.WriteByte("0123456789abcdef"[c>>4])
			sb.WriteByte("0123456789abcdef"[c&15])
			continue
		}
		sb.WriteByte(c)
	}
	sb.WriteByte('\n')
	if r.Subsystem != "" {
		sb.WriteString(" SUBSYSTEM=" + r.Subsystem + "\n")
	}
	if r.Device != "" {
		sb.WriteString(" DEVICE=" + r.Device + "\n")
	}
	return sb.String()
}
