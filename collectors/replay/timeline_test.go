package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

const demoTracePath = "demo/traces/dgx-h100-demo.trace.jsonl.gz"

// naiveState is what a GPU answers at trace time el of loop epoch: every
// record up to el applied in order into a map, each counter shifted by
// epoch times its gain over the trace, and a GPU lost at the end of the
// trace lost in every later loop. The player's semantics, written the plain
// way against the records as Read returns them.
func naiveState(t *testing.T, tr *Trace, el float64, epoch int) (state []map[string]Answer, lost []bool) {
	t.Helper()
	n := len(tr.Header.GPUs)
	state, lost = make([]map[string]Answer, n), make([]bool, n)
	end := make([]map[string]Answer, n)
	first := make([]map[string]any, n)
	last := make([]map[string]any, n)
	for i := range state {
		state[i], end[i], first[i], last[i] = map[string]Answer{}, map[string]Answer{}, map[string]any{}, map[string]any{}
	}
	for _, r := range tr.Records {
		if r.NVML == nil {
			continue
		}
		g := *r.GPU
		for k, a := range r.NVML {
			end[g][k] = a
			if r.T <= el {
				state[g][k] = a
			}
			if v, ok := decodeNumbers(a.V); ok && len(a.V) > 0 && isCounterKey(k) {
				if _, seen := first[g][k]; !seen {
					first[g][k] = v
				}
				last[g][k] = v
			}
		}
	}
	for g := range state {
		for _, a := range end[g] {
			lost[g] = lost[g] || (epoch > 0 && a.R == "GPU_IS_LOST")
		}
		for k, a := range state[g] {
			if epoch > 0 && len(a.V) > 0 && first[g][k] != nil {
				v, _ := decodeNumbers(a.V)
				b, err := json.Marshal(shift(v, first[g][k], last[g][k], float64(epoch)))
				if err != nil {
					t.Fatal(err)
				}
				state[g][k] = Answer{V: b}
			}
		}
	}
	return state, lost
}

// answers is what p answers, now, for every key the trace records for each GPU,
// and for one it never records.
func answers(p *Player, keys []map[string]bool) []map[string]string {
	p.mu.Lock()
	p.advance()
	p.mu.Unlock()
	out := make([]map[string]string, len(keys))
	for g := range keys {
		out[g] = map[string]string{}
		for k := range keys[g] {
			var raw json.RawMessage
			ret := p.lookup(g, k, &raw, nvml.ERROR_NOT_FOUND)
			out[g][k] = fmt.Sprintf("%v %s", ret, raw)
		}
	}
	return out
}

func expected(state []map[string]Answer, lost []bool, keys []map[string]bool) []map[string]string {
	out := make([]map[string]string, len(keys))
	for g := range keys {
		out[g] = map[string]string{}
		for k := range keys[g] {
			a, ok := state[g][k]
			if lost[g] {
				a, ok = Answer{R: "GPU_IS_LOST"}, true
			}
			switch {
			case !ok:
				out[g][k] = fmt.Sprintf("%v ", nvml.ERROR_NOT_FOUND)
			case a.R != "":
				out[g][k] = fmt.Sprintf("%v ", returnByName[a.R])
			default:
				out[g][k] = fmt.Sprintf("%v %s", nvml.SUCCESS, a.V)
			}
		}
	}
	return out
}

// The demo trace read as a Timeline, and compiled from a Trace, answers
// every key of every GPU at every time of several loops as the records Read
// returns, applied one by one into maps, say it should.
func TestATimelinePlaysTheAnswersOfTheTraceItWasReadFrom(t *testing.T) {
	tr, err := Open(demoTracePath)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := OpenTimeline(demoTracePath)
	if err != nil {
		t.Fatal(err)
	}
	if tl.Header.DurationS != tr.Header.DurationS || len(tl.Header.GPUs) != len(tr.Header.GPUs) {
		t.Fatalf("timeline header %+v, trace header %+v", tl.Header, tr.Header)
	}
	keys := make([]map[string]bool, len(tr.Header.GPUs))
	for g := range keys {
		keys[g] = map[string]bool{"GetNeverRecorded()": true}
	}
	for _, r := range tr.Records {
		for k := range r.NVML {
			keys[*r.GPU][k] = true
		}
	}
	start := time.Unix(5000, 0)
	now := start
	clock := func() time.Time { return now }
	players := map[string]*Player{
		"ReadTimeline":    NewTimelinePlayer(tl, PlayerOptions{Loop: true, Clock: clock}),
		"Trace.Timeline":  NewPlayer(tr, PlayerOptions{Loop: true, Clock: clock}),
		"second of a run": NewTimelinePlayer(tl, PlayerOptions{Loop: true, Clock: clock}),
	}
	d := tr.Header.DurationS
	compared := 0
	for _, ts := range []float64{0, 0.5, 7, 240, 241.5, d / 3, d/2 + 1, d - 1, d + 0.2, d + 300, 2*d + d/2, 3*d + d - 2} {
		now = start.Add(time.Duration(ts * float64(time.Second)))
		epoch := int(ts / d)
		state, lost := naiveState(t, tr, ts-float64(epoch)*d, epoch)
		want := expected(state, lost, keys)
		for name, p := range players {
			got := answers(p, keys)
			for g := range want {
				for k, w := range want[g] {
					compared++
					if got[g][k] != w {
						t.Errorf("%s at %v s (loop %d): GPU %d %s = %q, want %q", name, ts, epoch+1, g, k, got[g][k], w)
					}
				}
			}
		}
	}
	if compared < 1000 {
		t.Fatalf("compared only %d answers", compared)
	}
}

// Answers that repeat a GPU's previous answer for the key are dropped, in
// time order: a record out of order in the file still changes what comes
// after it, and an NVML record left with nothing is gone.
func TestATimelineDropsRepeatedAnswersInTimeOrder(t *testing.T) {
	text := goodHeader + "\n" +
		`{"t":1,"gpu":0,"nvml":{"GetPowerUsage()":{"v":100},"GetTemperature(0)":{"r":"NOT_SUPPORTED"}}}` + "\n" +
		`{"t":3,"gpu":0,"nvml":{"GetPowerUsage()":{"v":100}}}` + "\n" + // repeats t=1, but t=2 comes between
		`{"t":2,"gpu":0,"nvml":{"GetPowerUsage()":{"v":200},"GetTemperature(0)":{"r":"NOT_SUPPORTED"}}}` + "\n" +
		`{"t":4,"gpu":0,"nvml":{"GetPowerUsage()":{"v":100},"GetTemperature(0)":{"r":"NOT_SUPPORTED"}}}` + "\n" + // all repeats
		`{"t":5,"gpu":0,"nvml":{}}` + "\n" +
		`{"t":6,"gpu":0,"nvml":{"GetTemperature(0)":{"v":40}}}` + "\n"
	tl, err := ReadTimeline(strings.NewReader(text), "x")
	if err != nil {
		t.Fatal(err)
	}
	var ts []float64
	for _, s := range tl.steps {
		ts = append(ts, s.t)
	}
	if got := fmt.Sprint(ts); got != "[1 2 3 6]" {
		t.Errorf("steps at %s, want [1 2 3 6]", got)
	}
	if len(tl.changes) != 5 {
		t.Errorf("%d answers kept, want 5 (2 at t=1, 1 at t=2, 3 and 6)", len(tl.changes))
	}
	start := time.Unix(0, 0)
	now := start
	p := NewTimelinePlayer(tl, PlayerOptions{Clock: func() time.Time { return now }})
	defer p.Close()
	d, _ := p.Library().DeviceGetHandleByIndex(0)
	for _, c := range []struct {
		at    float64
		power uint32
		temp  string
	}{{1.5, 100, "ERROR_NOT_SUPPORTED 0"}, {2.5, 200, "ERROR_NOT_SUPPORTED 0"}, {3.5, 100, "ERROR_NOT_SUPPORTED 0"}, {5.5, 100, "ERROR_NOT_SUPPORTED 0"}, {6.5, 100, "SUCCESS 40"}} {
		now = start.Add(time.Duration(c.at * float64(time.Second)))
		w, ret := d.GetPowerUsage()
		temp, tret := d.GetTemperature(0)
		if w != c.power || ret != nvml.SUCCESS || fmt.Sprintf("%v %d", tret, temp) != c.temp {
			t.Errorf("at %v s: power %d (%v), temperature %v %d; want power %d, temperature %s", c.at, w, ret, tret, temp, c.power, c.temp)
		}
	}
}

// ReadTimeline takes the traces Read takes and refuses the others with the
// same error.
func TestReadTimelineRefusesWhatReadRefuses(t *testing.T) {
	for _, text := range []string{
		"",
		goodHeader,
		goodHeader + "\n{\"t\":1,\"gpu\":0,\"nvml\":{\"a\":{\"r\":\"SOMETIMES\"}}}",
		goodHeader + "\n{\"t\":1,\"gpu\":5,\"nvml\":{\"a\":{\"v\":1}}}",
		goodHeader + "\n{\"t\":1,\"gpu\":0,\"nvml\":{\"a\":{\"v\":1,\"r\":\"TIMEOUT\"}}}",
		goodHeader + "\n{\"t\":9,\"kmsg\":\"x\"}\n{\"t\":30,\"hang_s\":2}",
	} {
		_, rerr := Read(strings.NewReader(text), "x")
		tl, terr := ReadTimeline(strings.NewReader(text), "x")
		if fmt.Sprint(rerr) != fmt.Sprint(terr) {
			t.Errorf("%q: Read: %v; ReadTimeline: %v", text, rerr, terr)
		}
		if terr == nil && strings.Contains(text, "hang_s") && tl.Header.DurationS != 30 {
			t.Errorf("duration %v, want 30 (the last record's time)", tl.Header.DurationS)
		}
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The demo trace, as the agent keeps it, takes a few MB of heap, where the
// same trace read as a Trace takes several times that.
func TestTheDemoTimelineTakesLittleHeap(t *testing.T) {
	b, err := os.ReadFile(demoTracePath)
	if err != nil {
		t.Fatal(err)
	}
	before := liveHeap()
	tl, err := ReadTimeline(bytes.NewReader(b), "demo")
	if err != nil {
		t.Fatal(err)
	}
	timeline := int64(liveHeap()) - int64(before)
	runtime.KeepAlive(tl)
	before = liveHeap()
	tr, err := Read(bytes.NewReader(b), "demo")
	if err != nil {
		t.Fatal(err)
	}
	trace := int64(liveHeap()) - int64(before)
	runtime.KeepAlive(tr)
	t.Logf("demo trace in memory: Timeline %d bytes, Trace %d bytes", timeline, trace)
	const limit = 2 << 20
	if timeline > limit {
		t.Errorf("the demo timeline takes %d bytes of heap, more than %d", timeline, limit)
	}
	if timeline*4 > trace {
		t.Errorf("the demo timeline takes %d bytes, the trace %d: not a quarter", timeline, trace)
	}
}

// BenchmarkReadTimeline reads the demo trace as the agent does; live-B is
// the heap it keeps.
func BenchmarkReadTimeline(b *testing.B) {
	data, err := os.ReadFile(demoTracePath)
	if err != nil {
		b.Fatal(err)
	}
	var live int64
	for b.Loop() {
		before := liveHeap()
		tl, err := ReadTimeline(bytes.NewReader(data), "demo")
		if err != nil {
			b.Fatal(err)
		}
		live = int64(liveHeap()) - int64(before)
		runtime.KeepAlive(tl)
	}
	b.ReportMetric(float64(live), "live-B")
}

// A trace Read takes, ReadTimeline takes, and its player answers every key
// at each record's time, in the first loop and the second, as the records
// applied one by one say it should; a trace Read refuses, ReadTimeline
// refuses with the same error.
func FuzzReadTimeline(f *testing.F) {
	f.Add([]byte(goodHeader + "\n{\"t\":1,\"gpu\":0,\"nvml\":{\"GetPowerUsage()\":{\"v\":71000}}}\n{\"t\":2,\"kmsg\":\"3,1,2,-;NVRM: Xid\"}\n{\"t\":3,\"hang_s\":-1}\n"))
	f.Add([]byte(goodHeader + "\n" +
		`{"t":1,"gpu":0,"nvml":{"GetPowerUsage()":{"v":100},"GetTotalEnergyConsumption()":{"v":5}}}` + "\n" +
		`{"t":3,"gpu":0,"nvml":{"GetPowerUsage()":{"v":100},"GetTotalEnergyConsumption()":{"v":9}}}` + "\n" +
		`{"t":2,"gpu":0,"nvml":{"GetPowerUsage()":{"v":200},"GetTemperature(0)":{"r":"GPU_IS_LOST"}}}` + "\n" +
		`{"t":4,"gpu":0,"nvml":{}}` + "\n"))
	if b, err := os.ReadFile(demoTracePath); err == nil {
		tl, _ := Read(bytes.NewReader(b), "demo")
		var buf bytes.Buffer
		tl.Write(&buf)
		f.Add(buf.Bytes()[:min(buf.Len(), 8000)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, rerr := Read(bytes.NewReader(data), "fuzz")
		tl, terr := ReadTimeline(bytes.NewReader(data), "fuzz")
		if fmt.Sprint(rerr) != fmt.Sprint(terr) {
			t.Fatalf("Read: %v; ReadTimeline: %v", rerr, terr)
		}
		if rerr != nil {
			return
		}
		if tl.Header.DurationS != tr.Header.DurationS {
			t.Fatalf("duration %v, Read's %v", tl.Header.DurationS, tr.Header.DurationS)
		}
		keys := make([]map[string]bool, len(tr.Header.GPUs))
		for g := range keys {
			keys[g] = map[string]bool{}
		}
		times := []float64{0}
		for _, r := range tr.Records {
			if r.GPU != nil && *r.GPU < len(keys) {
				for k := range r.NVML {
					keys[*r.GPU][k] = true
				}
			}
			if len(times) < 8 {
				times = append(times, r.T)
			}
		}
		start := time.Unix(0, 0)
		now := start
		p := NewTimelinePlayer(tl, PlayerOptions{Loop: true, Clock: func() time.Time { return now }})
		p.Close()
		d := tr.Header.DurationS
		for epoch := 0; epoch < 2 && (epoch == 0 || d > 0); epoch++ {
			for _, el := range times {
				if d > 0 && el >= d {
					continue // the next loop's first instant
				}
				now = start.Add(time.Duration((float64(epoch)*d + el) * float64(time.Second)))
				state, lost := naiveState(t, tr, el, epoch)
				want, got := expected(state, lost, keys), answers(p, keys)
				for g := range want {
					for k, w := range want[g] {
						if got[g][k] != w {
							t.Fatalf("at %v s of loop %d: GPU %d %s = %q, want %q", el, epoch+1, g, k, got[g][k], w)
						}
					}
				}
			}
		}
	})
}
