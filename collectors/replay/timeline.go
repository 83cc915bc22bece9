package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
)

// A Timeline is a trace as a player keeps it: the same records in the same
// order, in a fraction of the memory of a Trace. A Trace holds every NVML
// record as a map with its own string for every key and its own slice for
// every value: tens of bytes of headers and a few allocations for an answer
// of a few bytes, some 12 MB for the 35 minutes of the demo. A Timeline
// holds:
//
//   - each key once per GPU, as a slot of that GPU: one string per distinct
//     key in the whole trace, shared by the GPUs that answer it;
//   - every recorded value's JSON in one byte arena, and each answer as
//     three numbers (the key's slot, and where its value is in the arena, or
//     which error it returns);
//   - an answer only where it changes what the GPU answers: an answer the
//     same as the GPU's previous answer for its key is dropped, since
//     applying it leaves the player's state as it was;
//   - the records that are not NVML answers (kernel log, eBPF, host facts,
//     hangs), of which a trace has few, as they are.
//
// A Timeline is read only: players share one.
type Timeline struct {
	Header Header

	steps   []step
	changes []change // the answers of the NVML steps, in step order
	vals    []byte   // every value's JSON, back to back
	gpus    []gpuKeys
	rets    []string // the error names the answers return
	others  []Record // the records that are not NVML answers
}

// step is one record: NVML answers (changes[lo:hi] for gpu), or
// others[other].
type step struct {
	t      float64
	lo, hi uint32
	gpu    int32
	other  int32 // -1 for NVML answers
}

// change is one NVML answer: the value vals[off:off+n], or, where n is 0,
// the error rets[off].
type change struct {
	slot, off, n uint32
}

// gpuKeys are the keys one GPU's answers are recorded under, each in a slot
// of the GPU's state.
type gpuKeys struct {
	names []string
	slot  map[string]uint32
}

// answer is the recorded answer c, its value sharing the arena (capped, so
// that nothing can append into it).
func (tl *Timeline) answer(c change) Answer {
	if c.n == 0 {
		return Answer{R: tl.rets[c.off]}
	}
	end := c.off + c.n
	return Answer{V: json.RawMessage(tl.vals[c.off:end:end])}
}

// Timeline is t as a player keeps it, its records in t's order (a player
// plays them in that order).
func (t *Trace) Timeline() *Timeline {
	b := newTimelineBuilder(t.Header)
	for i := range t.Records {
		b.add(&t.Records[i])
	}
	return b.finish(false)
}

// OpenTimeline reads a trace file as a Timeline.
func OpenTimeline(path string) (*Timeline, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()
	return ReadTimeline(f, path)
}

// ReadTimeline reads a trace as a Timeline: the trace Read reads, refused
// with the same errors, played the same, without ever holding it as a
// Trace.
func ReadTimeline(r io.Reader, name string) (*Timeline, error) {
	var h Header
	var b *timelineBuilder
	err := scan(r, name, &h, func(rec Record) error {
		if b == nil {
			b = newTimelineBuilder(h)
		}
		b.add(&rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = newTimelineBuilder(h)
	}
	tl := b.finish(true)
	// As Read: the trace lasts at least until its last record.
	if tl.Header.DurationS < b.lastT {
		tl.Header.DurationS = b.lastT
	}
	return tl, nil
}

// HasHost says whether the trace holds host facts at all.
func (tl *Timeline) HasHost() bool {
	for i := range tl.others {
		if tl.others[i].Host != nil {
			return true
		}
	}
	return false
}

// EBPFRecords is the number of eBPF records in the trace.
func (tl *Timeline) EBPFRecords() int {
	n := 0
	for i := range tl.others {
		if tl.others[i].EBPF != nil {
			n++
		}
	}
	return n
}

type timelineBuilder struct {
	tl     *Timeline
	intern map[string]string // one string per distinct key
	lastT  float64
}

func newTimelineBuilder(h Header) *timelineBuilder {
	tl := &Timeline{Header: h, gpus: make([]gpuKeys, len(h.GPUs))}
	for i := range tl.gpus {
		tl.gpus[i].slot = map[string]uint32{}
	}
	return &timelineBuilder{tl: tl, intern: map[string]string{}}
}

func (b *timelineBuilder) add(r *Record) {
	tl := b.tl
	b.lastT = max(b.lastT, r.T)
	if r.NVML == nil || r.GPU == nil {
		rec := *r
		rec.NVML = nil
		tl.others = append(tl.others, rec)
		tl.steps = append(tl.steps, step{t: r.T, gpu: -1, other: int32(len(tl.others) - 1)})
		return
	}
	g := &tl.gpus[*r.GPU]
	lo := len(tl.changes)
	for k, a := range r.NVML {
		s, ok := g.slot[k]
		if !ok {
			name, seen := b.intern[k]
			if !seen {
				name = k
				b.intern[k] = k
			}
			s = uint32(len(g.names))
			g.names = append(g.names, name)
			g.slot[name] = s
		}
		c := change{slot: s}
		if len(a.V) > 0 {
			c.off, c.n = uint32(len(tl.vals)), uint32(len(a.V))
			tl.vals = append(tl.vals, a.V...)
		} else {
			c.off = uint32(slices.Index(tl.rets, a.R))
			if int32(c.off) < 0 {
				c.off = uint32(len(tl.rets))
				tl.rets = append(tl.rets, a.R)
			}
		}
		tl.changes = append(tl.changes, c)
	}
	tl.steps = append(tl.steps, step{t: r.T, gpu: int32(*r.GPU), other: -1, lo: uint32(lo), hi: uint32(len(tl.changes))})
}

// finish puts the steps in time order (stable, as Read sorts records)
// where sorted, and drops every answer that repeats the GPU's previous
// answer for its key in that order, and every NVML step left empty.
func (b *timelineBuilder) finish(sorted bool) *Timeline {
	tl := b.tl
	b.intern = nil
	if sorted {
		sort.SliceStable(tl.steps, func(i, j int) bool { return tl.steps[i].t < tl.steps[j].t })
	}
	last := make([][]change, len(tl.gpus))
	for i := range last {
		last[i] = make([]change, len(tl.gpus[i].names))
	}
	seen := make([][]bool, len(tl.gpus))
	for i := range seen {
		seen[i] = make([]bool, len(tl.gpus[i].names))
	}
	changes := make([]change, 0, len(tl.changes))
	steps := tl.steps[:0]
	for _, e := range tl.steps {
		if e.other >= 0 {
			steps = append(steps, e)
			continue
		}
		lo := len(changes)
		for _, c := range tl.changes[e.lo:e.hi] {
			if seen[e.gpu][c.slot] && tl.same(last[e.gpu][c.slot], c) {
				continue
			}
			seen[e.gpu][c.slot] = true
			last[e.gpu][c.slot] = c
			changes = append(changes, c)
		}
		if len(changes) == lo {
			continue
		}
		e.lo, e.hi = uint32(lo), uint32(len(changes))
		steps = append(steps, e)
	}
	tl.steps = slices.Clone(steps)
	tl.changes = slices.Clone(changes)
	tl.vals = tl.compactVals()
	return tl
}

// same says whether two answers are the same: the same error, or the same
// bytes of JSON.
func (tl *Timeline) same(a, c change) bool {
	if a.n == 0 || c.n == 0 {
		return a.n == c.n && a.off == c.off
	}
	return bytes.Equal(tl.vals[a.off:a.off+a.n], tl.vals[c.off:c.off+c.n])
}

// compactVals is the arena with only the values the changes kept, each
// distinct value once (a value recurs: the same temperature an hour
// later), which it points them at.
func (tl *Timeline) compactVals() []byte {
	at := map[string]uint32{}
	vals := make([]byte, 0, len(tl.vals))
	for i := range tl.changes {
		c := &tl.changes[i]
		if c.n == 0 {
			continue
		}
		v := tl.vals[c.off : c.off+c.n]
		off, ok := at[string(v)]
		if !ok {
			off = uint32(len(vals))
			vals = append(vals, v...)
			at[string(v)] = off
		}
		c.off = off
	}
	return slices.Clone(vals)
}
