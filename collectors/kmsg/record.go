package kmsg

import (
	"bytes"
	"errors"
	"fmt"
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

// digitsAt parses the run of decimal digits at b[i:] and the ',' after it,
// and returns its value and the index after the ','. It reports false for
// no digits, more than 19 (which could overflow), or no ',' after them.
func digitsAt(b []byte, i int) (v uint64, next int, ok bool) {
	start := i
	for ; i < len(b); i++ {
		c := b[i] - '0'
		if c > 9 {
			break
		}
		v = v*10 + uint64(c)
	}
	// uint: no digits wraps round to a huge count.
	return v, i + 1, uint(i-start-1) < 19 && i < len(b) && b[i] == ','
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
	// The text ends at the first newline (the kernel escapes any in the
	// message), where the dictionary begins. It is looked for before the
	// header is parsed, so that the processor does both at once.
	nl := bytes.IndexByte(b, '\n')

	// The header, in one pass for the records the kernel writes: three runs
	// of 1 to 19 digits each ended by ',', the flags field, and the ';'
	// (further fields before it are skipped). It takes exactly the headers
	// parseHeaderSlow takes, with the same values (FuzzParseRecord checks
	// it); for anything else the field-by-field parse says what is wrong.
	// It is written out here, not called: a call costs a tenth of a
	// record's parse. A plain digit loop measured faster than reading eight
	// digits at a time, the kernel's numbers being short.
	hb := b[:min(len(b), maxHeader)]
	// The priority is one digit on almost every kernel line, two on a
	// process's (facility 1): taken without the loop, whose exit the
	// branch predictor would guess wrong.
	pri, i, ok := uint64(0), 0, false
	switch {
	case len(hb) > 2 && hb[1] == ',' && hb[0]-'0' <= 9:
		pri, i, ok = uint64(hb[0]-'0'), 2, true
	case len(hb) > 3 && hb[2] == ',' && hb[0]-'0' <= 9 && hb[1]-'0' <= 9:
		pri, i, ok = uint64(hb[0]-'0')*10+uint64(hb[1]-'0'), 3, true
	default:
		pri, i, ok = digitsAt(hb, 0)
	}
	seq, i, ok2 := digitsAt(hb, i)
	ts, i, ok3 := digitsAt(hb, i)
	ok = ok && ok2 && ok3 && pri <= 1<<13 && ts <= uint64(1<<63-1)/1000 && i < len(hb)
	h := header{pri: pri, seq: seq, ts: ts, flags: '-'}
	if ok {
		switch c := hb[i]; {
		case c == ';':
			h.semi = i
		case c != ',' && i+1 < len(hb) && hb[i+1] == ';':
			h.flags, h.semi = c, i+1
		default:
			if c != ',' {
				h.flags = c
			}
			j := bytes.IndexByte(hb[i:], ';')
			h.semi, ok = i+j, j >= 0
		}
	}
	if !ok {
		var err error
		if h, err = parseHeaderSlow(b); err != nil {
			*r = Record{}
			return err
		}
	}
	body := b[h.semi+1:]
	for len(body) > 0 && body[len(body)-1] == '\n' {
		body = body[:len(body)-1]
	}
	var end int
	if nl > h.semi {
		end = min(nl-h.semi-1, len(body))
	} else if end = bytes.IndexByte(body, '\n'); end < 0 { // a newline in the header
		end = len(body)
	}
	escaped := bytes.IndexByte(body[:end], '\\') >= 0
	rawText, rawDict := body[:end], body[min(end+1, len(body)):]
	// Bound what is copied: the text to maxRawText, the dictionary to its
	// whole lines within maxDictBytes. In the common case text and
	// dictionary are still one piece and take one string.
	if len(rawDict) > maxDictBytes {
		rawDict = rawDict[:maxDictBytes]
		if i := lastIndexByte(rawDict, '\n'); i >= 0 {
			rawDict = rawDict[:i]
		} else {
			rawDict = nil
		}
	}
	truncated := false
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
		truncated = true
		if a != nil {
			text, dict = a.string(rawText[:maxRawText]), a.string(rawDict)
		} else {
			text, dict = string(rawText[:maxRawText]), string(rawDict)
		}
	}
	if escaped {
		if a != nil {
			text = a.unescaped(text)
		} else {
			text = Unescape(text)
		}
	}
	if truncated || len(text) > MaxMessageBytes {
		truncated = true
		text = truncateText(text, MaxMessageBytes-len(TruncatedMarker)) + TruncatedMarker
	}
	// Field by field: a composite literal is built aside and copied in
	// with the garbage collector's barriers, which measured slower.
	r.Seq, r.Monotonic, r.Message = h.seq, time.Duration(h.ts)*time.Microsecond, text
	r.Subsystem, r.Device = "", ""
	r.Facility, r.Level, r.Flags, r.Seen, r.Truncated = uint16(h.pri>>3), uint8(h.pri&7), h.flags, false, truncated
	for dict != "" {
		line := dict
		if i := strings.IndexByte(dict, '\n'); i >= 0 {
			line, dict = dict[:i], dict[i+1:]
		} else {
			dict = ""
		}
		line = strings.TrimPrefix(line, " ")
		if v, ok := strings.CutPrefix(line, "SUBSYSTEM="); ok {
			r.Subsystem = v
		} else if v, ok := strings.CutPrefix(line, "DEVICE="); ok {
			r.Device = v
		}
	}
	return nil
}

// arena hands out strings carved from large append-only chunks, so the
// reader allocates once per chunk rather than once per record. Bytes are
// never written after a string points at them until reset, which is the
// owner's promise that no string handed out is in use any more. A string
// keeps its whole chunk alive, which is why RecordEvent copies what it
// keeps.
type arena struct {
	buf  []byte   // the chunk being filled
	full [][]byte // chunks filled before it, since the last reset
	free [][]byte // chunks to fill again
}

const (
	// arenaChunk is the size of the chunks; a string of more than a quarter
	// of it is allocated on its own.
	arenaChunk = 16 << 10
	// arenaKeep bounds the chunks an arena keeps across a reset: what a
	// flood needed is given back to the garbage collector, what an ordinary
	// batch needs is not made again.
	arenaKeep = 4
)

func (a *arena) string(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > arenaChunk/4 {
		return string(b)
	}
	a.room(len(b))
	start := len(a.buf)
	a.buf = append(a.buf, b...)
	return unsafe.String(&a.buf[start], len(b))
}

// unescaped is Unescape(s), in the arena.
func (a *arena) unescaped(s string) string {
	if len(s) > arenaChunk/4 {
		return Unescape(s)
	}
	a.room(len(s))
	start := len(a.buf)
	a.buf = appendUnescaped(a.buf, s)
	if len(a.buf) == start {
		return ""
	}
	return unsafe.String(&a.buf[start], len(a.buf)-start)
}

// room makes sure the chunk being filled has n bytes free, n at most
// arenaChunk.
func (a *arena) room(n int) {
	if cap(a.buf)-len(a.buf) >= n {
		return
	}
	if a.buf != nil {
		a.full = append(a.full, a.buf)
	}
	if k := len(a.free); k > 0 {
		a.buf, a.free = a.free[k-1][:0], a.free[:k-1]
	} else {
		a.buf = make([]byte, 0, arenaChunk)
	}
}

// reset makes the arena's chunks free to be filled again: every string it
// handed out may then change.
//
// It keeps as many chunks as were filled since the last reset, up to
// arenaKeep: what the last round needed, and no more.
func (a *arena) reset() {
	if a.buf != nil {
		a.full = append(a.full, a.buf)
		a.buf = nil
	}
	clear(a.free)
	a.free = a.free[:0]
	for _, c := range a.full[:min(len(a.full), arenaKeep)] {
		a.free = append(a.free, c[:0])
	}
	clear(a.full)
	a.full = a.full[:0]
}

// Unescape decodes the kernel's \xNN escapes. Anything else, including a
// malformed escape, is kept as it is.
func Unescape(s string) string {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s
	}
	return string(appendUnescaped(make([]byte, 0, len(s)), s))
}

// appendUnescaped appends s to out with its \xNN escapes decoded: at most
// len(s) bytes.
func appendUnescaped(out []byte, s string) []byte {
	for {
		// The text up to the next backslash as it is, in one copy.
		i := strings.IndexByte(s, '\\')
		if i < 0 {
			return append(out, s...)
		}
		out = append(out, s[:i]...)
		s = s[i:]
		if len(s) >= 4 && s[1] == 'x' && isHex(s[2]) && isHex(s[3]) {
			out = append(out, unhex(s[2])<<4|unhex(s[3]))
			s = s[4:]
		} else {
			out = append(out, '\\')
			s = s[1:]
		}
	}
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
