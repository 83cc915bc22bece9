package agent

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
	"time"
)

// The sample ages are the one part of a gzip scrape made per scrape. They
// go as a gzip member of one deflate block with the fixed Huffman codes
// (RFC 1951, 3.2.6), encoded from a plan made once per snapshot: each
// line's label set is mostly its predecessor's, so the plan says which runs
// of a line are copies of the line before (a match) and which are new (the
// literals: mostly the GPU's index, UUID and bus id). A scrape only writes
// the codes for that plan and for its numbers; nothing is searched, so it
// costs about what writing the bytes does, and the member is about half
// the lines' size.

// ageOp is one run of an age line's prefix: n bytes copied from the line
// before (at the same offset from its start, or from its end when end is
// set), or lit written as literals.
type ageOp struct {
	lit  string
	code litBits // lit's codes, made with the plan
	n    int
	end  bool
}

// litBits is a run of literals' codes as the stream sends them, 32 bits a
// word, so a scrape writes a word at a time.
type litBits struct {
	words []uint32
	nbits uint
}

func encodeLiterals(s string) litBits {
	w := bitWriter{}
	w.literalString(s)
	var out litBits
	out.nbits = uint(len(w.b))*8 + w.nbits
	w.flush()
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
	for i := 0; i < len(w.b); i += 4 {
		out.words = append(out.words, binary.LittleEndian.Uint32(w.b[i:]))
	}
	return out
}

func (w *bitWriter) encoded(l litBits) {
	n := l.nbits
	for _, word := range l.words {
		k := min(n, 32)
		w.bits(uint64(word)&(1<<k-1), k)
		n -= k
	}
}

// minMatch is deflate's shortest match; maxMatch its longest.
const (
	minMatch = 3
	maxMatch = 258
)

// agePlan is the runs of cur against prev: their common start copied as it
// is, then the rest compared from the end (so an index one digit longer
// shifts nothing after it), equal runs of minMatch or more copied.
func agePlan(prev, cur string) []ageOp {
	cp := 0
	for cp < len(prev) && cp < len(cur) && prev[cp] == cur[cp] {
		cp++
	}
	var ops []ageOp
	lit := 0 // start of the pending literals
	emit := func(at, n int, end bool) {
		if at > lit {
			ops = append(ops, ageOp{lit: cur[lit:at]})
		}
		for n > 0 {
			k := min(n, maxMatch)
			if n-k > 0 && n-k < minMatch {
				k = n - minMatch // leave a last piece long enough to be a match
			}
			ops = append(ops, ageOp{n: k, end: end})
			n -= k
		}
		lit = at
	}
	if cp >= minMatch {
		emit(0, cp, false)
		lit = cp
	}
	shift := len(cur) - len(prev)
	for j := cp; j < len(cur); {
		k := j - shift
		if k < cp || k >= len(prev) || cur[j] != prev[k] {
			j++
			continue
		}
		e := j
		for e < len(cur) && e-shift < len(prev) && cur[e] == prev[e-shift] {
			e++
		}
		if e-j >= minMatch {
			emit(j, e-j, true)
			lit = e
		}
		j = e
	}
	if lit < len(cur) {
		ops = append(ops, ageOp{lit: cur[lit:]})
	}
	for i := range ops {
		if ops[i].lit != "" {
			ops[i].code = encodeLiterals(ops[i].lit)
		}
	}
	return ops
}

// agePlans is the plan of the ages' header and of every age line: the
// first line is all literals.
type agePlans struct {
	head  litBits
	lines [][]ageOp
}

func planAges(head string, ages []ageLine) *agePlans {
	p := &agePlans{head: encodeLiterals(head), lines: make([][]ageOp, len(ages))}
	for i := range ages {
		if i == 0 {
			p.lines[0] = []ageOp{{lit: ages[0].prefix, code: encodeLiterals(ages[0].prefix)}}
			continue
		}
		p.lines[i] = agePlan(ages[i-1].prefix, ages[i].prefix)
	}
	return p
}

// bitWriter writes deflate's LSB-first bit stream.
type bitWriter struct {
	b     []byte
	acc   uint64
	nbits uint
}

func (w *bitWriter) bits(v uint64, n uint) {
	w.acc |= v << w.nbits
	w.nbits += n
	if w.nbits >= 32 {
		w.b = binary.LittleEndian.AppendUint32(w.b, uint32(w.acc))
		w.acc >>= 32
		w.nbits -= 32
	}
}

// flush writes the bits left, padded to a byte.
func (w *bitWriter) flush() {
	for w.nbits > 0 {
		w.b = append(w.b, byte(w.acc))
		w.acc >>= 8
		w.nbits -= min(w.nbits, 8)
	}
}

// code writes a Huffman code of n bits, which deflate sends from its most
// significant bit.
func (w *bitWriter) code(c uint16, n uint) {
	w.bits(uint64(bits.Reverse16(c)>>(16-n)), n)
}

func (w *bitWriter) literal(c byte) { w.bits(uint64(litCode[c]), uint(8+c/144)) }

// litCode is each literal's fixed code, bit-reversed as the stream sends it
// (8 bits below 144, 9 from there).
var litCode = func() (t [256]uint16) {
	for c := range t {
		if c < 144 {
			t[c] = bits.Reverse16(0x30+uint16(c)) >> 8
		} else {
			t[c] = bits.Reverse16(0x190+uint16(c)-144) >> 7
		}
	}
	return t
}()

func (w *bitWriter) literalString(s string) {
	for i := 0; i < len(s); i++ {
		w.literal(s[i])
	}
}

var (
	lengthBase  = [...]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [...]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [...]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [...]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// lengthCode is each match length's symbol index (into lengthBase).
var lengthCode = func() (t [maxMatch + 1]uint8) {
	i := 0
	for n := minMatch; n <= maxMatch; n++ {
		for i+1 < len(lengthBase) && int(lengthBase[i+1]) <= n {
			i++
		}
		t[n] = uint8(i)
	}
	return t
}()

// distCode is the distance symbol of dist (1 to 32768): the low ones as
// they are, then two a power of two.
func distCode(dist int) int {
	d := dist - 1
	if d < 4 {
		return d
	}
	n := bits.Len(uint(d))
	return 2*(n-1) + (d>>(n-2))&1
}

// match writes a copy of n bytes (minMatch to maxMatch) from dist back (1
// to maxDist).
func (w *bitWriter) match(n, dist int) {
	i := int(lengthCode[n])
	if sym := 257 + i; sym < 280 {
		w.code(uint16(sym-256), 7)
	} else {
		w.code(uint16(0xc0+sym-280), 8)
	}
	w.bits(uint64(n-int(lengthBase[i])), uint(lengthExtra[i]))
	d := distCode(dist)
	w.code(uint16(d), 5)
	w.bits(uint64(dist-int(distBase[d])), uint(distExtra[d]))
}

// maxDist is how far back deflate copies from.
const maxDist = 32768

// appendAgesMember appends the ages at now as one gzip member, and returns
// it with their text (in text's room; the text is what the member holds).
// Without GPUs there is no member.
func (s *Snapshot) appendAgesMember(dst, text []byte, now time.Time) (member, plain []byte) {
	plans := s.agePlans()
	text = s.appendAges(text[:0], now)
	if len(text) == 0 {
		return dst, text
	}
	w := bitWriter{b: append(dst, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff)} // magic, deflate, no flags or mtime, unknown OS
	w.bits(1, 1)                                                          // the final block
	w.bits(1, 2)                                                          // fixed Huffman codes
	off := len(s.render.agesHead)
	w.encoded(plans.head)
	prevLen, prevPrefix := 0, 0 // the line before: its length, its prefix's
	for i, a := range s.render.ages {
		start := off
		if i > 0 && prevLen > maxDist {
			w.literalString(a.prefix)
		} else {
			j := 0 // in the prefix
			for _, op := range plans.lines[i] {
				if op.lit != "" {
					w.encoded(op.code)
					j += len(op.lit)
					continue
				}
				dist := prevLen // the same offset in the line before
				if op.end {
					dist += len(a.prefix) - prevPrefix
				}
				if dist > maxDist {
					w.literalString(a.prefix[j : j+op.n])
				} else {
					w.match(op.n, dist)
				}
				j += op.n
			}
		}
		off += len(a.prefix)
		for text[off] != '\n' {
			w.literal(text[off])
			off++
		}
		w.literal('\n')
		off++
		prevLen, prevPrefix = off-start, len(a.prefix)
	}
	w.code(0, 7) // end of block
	w.flush()
	b := binary.LittleEndian.AppendUint32(w.b, crc32.ChecksumIEEE(text))
	return binary.LittleEndian.AppendUint32(b, uint32(len(text))), text
}

// agePlans is the snapshot's plan of its age lines, made once, on the first
// gzip scrape.
func (s *Snapshot) agePlans() *agePlans {
	s.text()
	s.render.planOnce.Do(func() { s.render.plans = planAges(s.render.agesHead, s.render.ages) })
	return s.render.plans
}
