package replay

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// A looping replay plays the same recorded minutes again on an agent that
// keeps running, so the next loop is the same boot of the same node, not a
// new one:
//
//   - a cumulative counter (energy, ECC totals, throttling nanoseconds,
//     NVLink traffic, remapped rows) goes on from where the previous loop
//     left it: loop n answers the recorded value plus n times what the
//     counter gained over the whole trace, so rate() and increase() see one
//     node, never a reset;
//   - a GPU the trace lost stays lost: nothing brings a GPU that fell off
//     the bus back without a reset or a reboot, and the agent keeps such a
//     GPU critical for the boot, so its gpu_lost must say so too.

// loopState is what carries from one loop into the next.
type loopState struct {
	// gain[gpu][key] is, for each counter key, its first and last
	// recorded values (JSON decoded with numbers kept exact).
	gain []map[string]counterGain
	lost []bool // GPUs lost at the end of an earlier loop
}

type counterGain struct{ first, last any }

func newLoopState(t *Timeline) loopState {
	n := len(t.Header.GPUs)
	l := loopState{gain: make([]map[string]counterGain, n), lost: make([]bool, n)}
	for i := range l.gain {
		l.gain[i] = map[string]counterGain{}
	}
	for _, e := range t.steps {
		if e.other >= 0 {
			continue
		}
		g, keys := l.gain[e.gpu], t.gpus[e.gpu].names
		for _, c := range t.changes[e.lo:e.hi] {
			k, a := keys[c.slot], t.answer(c)
			if len(a.V) == 0 || !isCounterKey(k) {
				continue
			}
			v, ok := decodeNumbers(a.V)
			if !ok {
				continue
			}
			c, seen := g[k]
			if !seen {
				c.first = v
			}
			c.last = v
			g[k] = c
		}
	}
	return l
}

// carry notes, at the end of a loop, which GPUs it left lost.
func (l *loopState) carry(state [][]slotState) {
	for i, st := range state {
		for _, s := range st {
			if s.ok && s.a.R == "GPU_IS_LOST" {
				l.lost[i] = true
				break
			}
		}
	}
}

// lostBefore says whether an earlier loop left the GPU lost.
func (l *loopState) lostBefore(gpuIndex int) bool {
	return gpuIndex >= 0 && gpuIndex < len(l.lost) && l.lost[gpuIndex]
}

// continued is a recorded answer as loop epoch (0 the first) gives it.
func (l *loopState) continued(gpuIndex int, key string, a Answer, epoch int) Answer {
	if epoch == 0 || len(a.V) == 0 {
		return a
	}
	c, ok := l.gain[gpuIndex][key]
	if !ok {
		return a
	}
	v, ok := decodeNumbers(a.V)
	if !ok {
		return a
	}
	b, err := json.Marshal(shift(v, c.first, c.last, float64(epoch)))
	if err != nil {
		return a
	}
	return Answer{V: b}
}

// shift adds n times the gain from first to last to every number of v
// (the number itself, or the fields of an answer's JSON object); a counter
// that fell over the trace (reset in it) gains nothing.
func shift(v, first, last any, n float64) any {
	switch x := v.(type) {
	case float64:
		f, ok1 := first.(float64)
		e, ok2 := last.(float64)
		if ok1 && ok2 && e > f {
			return x + n*(e-f)
		}
		return x
	case map[string]any:
		fm, _ := first.(map[string]any)
		lm, _ := last.(map[string]any)
		out := make(map[string]any, len(x))
		for k, fv := range x {
			out[k] = shift(fv, fm[k], lm[k], n)
		}
		return out
	}
	return v
}

// decodeNumbers decodes a stored answer with its numbers as float64: the
// counters a GPU keeps stay far below 2^53 over any trace.
func decodeNumbers(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	return toFloats(v), true
}

func toFloats(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return v
		}
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = toFloats(e)
		}
	}
	return v
}

// counterMethods are the NVML calls whose answers only grow.
var counterMethods = []string{"GetTotalEnergyConsumption(", "GetTotalEccErrors(", "GetViolationStatus(", "GetRemappedRows("}

// counterFields are the NVML field ids the collector exports as counters.
var counterFields = func() map[uint32]bool {
	m := map[uint32]bool{}
	for _, f := range gpu.Fields {
		if f.Type == gpu.Counter && f.NVMLField != 0 {
			m[f.NVMLField] = true
		}
	}
	return m
}()

func isCounterKey(k string) bool {
	for _, m := range counterMethods {
		if strings.HasPrefix(k, m) {
			return true
		}
	}
	id, ok := strings.CutPrefix(k, "FieldValue(")
	if !ok {
		return false
	}
	id, _, _ = strings.Cut(id, "/")
	n, err := strconv.ParseUint(id, 10, 32)
	return err == nil && counterFields[uint32(n)]
}
