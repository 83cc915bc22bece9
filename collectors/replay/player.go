package replay

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// PlayerOptions tunes playback.
type PlayerOptions struct {
	Speed float64 // trace seconds per real second; default 1
	// Loop starts again at the end. The next loop is the same boot of the
	// recorded node (loop.go): its counters go on from where the previous
	// loop left them, and a GPU the trace lost stays lost.
	Loop  bool
	Clock func() time.Time // default time.Now
	// Kmsg receives each kernel-log record as its time comes, raw as the
	// trace holds it (up to MaxLineBytes): kmsg.ParseRecord bounds the
	// message it becomes to kmsg.MaxMessageBytes. It is called with the
	// player's lock held: it must not block or call the player.
	Kmsg func(raw string)
	// EBPF receives each eBPF record as its time comes: the record as the
	// trace keeps it (validated on read: ebpf.Layout, ebpf.RecordSize
	// bytes) and the memory cgroup path the trace gives it. The same rules
	// as Kmsg: called with the lock held, it must not block.
	EBPF func(raw []byte, memcg string)
}

// Player plays a trace as an NVML library.
type Player struct {
	tl    *Timeline
	opts  PlayerOptions
	start time.Time

	mu      sync.Mutex
	pos     int
	epoch   int
	now     float64       // trace time, within the current loop
	state   [][]slotState // by GPU, by the GPU's key slot (Timeline)
	hangAll float64       // trace time the global hang ends; 0 none
	hangGPU []float64
	host    *Host // the latest host record applied; nil none yet
	loop    loopState
	closed  chan struct{}
	once    sync.Once
	// polled: the clock is the caller's (PlayerOptions.Clock), which no
	// timer can follow, so waits look again every pollEvery instead of
	// sleeping to the deadline.
	polled bool
	wakes  atomic.Uint64 // Run's timer wake-ups (tests)
}

// slotState is a GPU's latest answer for one key; ok is false while the
// trace has not answered it.
type slotState struct {
	a  Answer
	ok bool
}

// pollEvery bounds a wait under a clock the caller moves.
const pollEvery = 20 * time.Millisecond

// ErrClosed is returned by calls interrupted by Close.
var ErrClosed = errors.New("replay closed")

// NewPlayer starts playing t now.
func NewPlayer(t *Trace, opts PlayerOptions) *Player {
	return NewTimelinePlayer(t.Timeline(), opts)
}

// NewTimelinePlayer starts playing t now.
func NewTimelinePlayer(t *Timeline, opts PlayerOptions) *Player {
	if opts.Speed <= 0 {
		opts.Speed = 1
	}
	polled := opts.Clock != nil
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	p := &Player{tl: t, opts: opts, start: opts.Clock(), closed: make(chan struct{}), loop: newLoopState(t), polled: polled}
	p.reset()
	return p
}

func (p *Player) reset() {
	n := len(p.tl.Header.GPUs)
	p.state = make([][]slotState, n)
	for i := range p.state {
		p.state[i] = make([]slotState, len(p.tl.gpus[i].names))
	}
	p.hangGPU = make([]float64, n)
	p.hangAll = 0
	p.host = nil
	p.pos = 0
}

// Header returns the trace's header.
func (p *Player) Header() Header { return p.tl.Header }

// Close ends playback and releases calls blocked in a hang.
func (p *Player) Close() { p.once.Do(func() { close(p.closed) }) }

// Run advances playback on its own, so kernel-log records arrive on time even
// while nothing samples. It returns when ctx ends or the player is closed.
// Between records it sleeps until the next one is due (or the trace loops):
// an idle replay wakes only when something happens.
func (p *Player) Run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		p.mu.Lock()
		p.advance()
		d := p.untilNext()
		p.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		t.Reset(p.bound(d))
		select {
		case <-ctx.Done():
			return
		case <-p.closed:
			return
		case <-t.C:
			p.wakes.Add(1)
		}
	}
}

// untilNext is how long until playback next changes: the next record, or
// the end of the trace when it loops; forever (a negative duration) when
// nothing is left. Callers hold mu, after advance.
func (p *Player) untilNext() time.Duration {
	if p.pos < len(p.tl.steps) {
		return p.until(p.tl.steps[p.pos].t)
	}
	if d := p.tl.Header.DurationS; p.opts.Loop && d > 0 {
		return p.until(d)
	}
	return -1
}

// until is the real time from now until trace time t of the current loop,
// rounded up so a wake-up is never before it (at least a millisecond:
// waking early only re-arms). Infinite t is forever (-1).
func (p *Player) until(t float64) time.Duration {
	if math.IsInf(t, 1) || math.IsNaN(t) {
		return -1
	}
	if d := p.tl.Header.DurationS; p.opts.Loop && d > 0 {
		t += float64(p.epoch) * d
	}
	at := p.start.Add(time.Duration(math.Ceil(t / p.opts.Speed * 1e9)))
	return max(at.Sub(p.opts.Clock()), time.Millisecond)
}

// bound is the timer for a wait of d (negative: forever): d itself, or at
// most pollEvery under the caller's clock.
func (p *Player) bound(d time.Duration) time.Duration {
	switch {
	case p.polled && (d < 0 || d > pollEvery):
		return pollEvery
	case d < 0 || d > 24*time.Hour:
		return 24 * time.Hour // then it looks again, which costs nothing
	}
	return d
}

// advance applies every record whose time has come. Callers hold mu.
func (p *Player) advance() {
	el := p.opts.Clock().Sub(p.start).Seconds() * p.opts.Speed
	d := p.tl.Header.DurationS
	if p.opts.Loop && d > 0 {
		ep := int(math.Floor(el / d))
		el -= float64(ep) * d
		if ep != p.epoch {
			// What the rest of the previous loop said happened; then the
			// next loop starts from the state that loop ended in.
			for ; p.pos < len(p.tl.steps); p.pos++ {
				p.apply(&p.tl.steps[p.pos])
			}
			p.loop.carry(p.state)
			p.epoch = ep
			p.reset()
		}
	}
	p.now = el
	evs := p.tl.steps
	for p.pos < len(evs) && evs[p.pos].t <= el {
		p.apply(&evs[p.pos])
		p.pos++
	}
}

func (p *Player) apply(e *step) {
	if e.other < 0 {
		st, keys := p.state[e.gpu], p.tl.gpus[e.gpu].names
		for _, c := range p.tl.changes[e.lo:e.hi] {
			st[c.slot] = slotState{p.loop.continued(int(e.gpu), keys[c.slot], p.tl.answer(c), p.epoch), true}
		}
		return
	}
	r := &p.tl.others[e.other]
	switch {
	case r.Host != nil:
		p.host = r.Host
	case r.Kmsg != "":
		if p.opts.Kmsg != nil {
			p.opts.Kmsg(r.Kmsg)
		}
	case r.EBPF != nil:
		if p.opts.EBPF != nil {
			p.opts.EBPF(r.EBPF.Raw, r.EBPF.Memcg)
		}
	case r.HangS != 0:
		end := r.T + r.HangS
		if r.HangS < 0 {
			end = math.Inf(1)
		}
		if r.GPU != nil {
			p.hangGPU[*r.GPU] = end
		} else {
			p.hangAll = end
		}
	}
}

// wait blocks while a hang covers gpu (-1: a call not about one GPU),
// sleeping until the hang ends or the next record (which may end or extend
// it) is due.
func (p *Player) wait(gpuIndex int) bool {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		p.mu.Lock()
		p.advance()
		end := 0.0
		if p.now < p.hangAll {
			end = p.hangAll
		}
		if gpuIndex >= 0 && p.now < p.hangGPU[gpuIndex] {
			end = max(end, p.hangGPU[gpuIndex])
		}
		var d time.Duration
		if end > 0 {
			d = p.until(end)
			if next := p.untilNext(); next >= 0 && (d < 0 || next < d) {
				d = next
			}
		}
		p.mu.Unlock()
		if end == 0 {
			return true
		}
		if t == nil {
			t = time.NewTimer(p.bound(d))
		} else {
			t.Reset(p.bound(d))
		}
		select {
		case <-p.closed:
			return false
		case <-t.C:
		}
	}
}

func (p *Player) answer(gpuIndex int, key string, dst any) nvml.Return {
	return p.answerOr(gpuIndex, key, dst, nvml.ERROR_NOT_SUPPORTED)
}

// answerOr is answer with missing returned for a key the trace has not
// answered (yet).
func (p *Player) answerOr(gpuIndex int, key string, dst any, missing nvml.Return) nvml.Return {
	if !p.wait(gpuIndex) {
		return nvml.ERROR_UNINITIALIZED
	}
	return p.lookup(gpuIndex, key, dst, missing)
}

// lookup answers from the state at the latest advance, without waiting out
// a hang: for calls that do not reach the GPU.
func (p *Player) lookup(gpuIndex int, key string, dst any, missing nvml.Return) nvml.Return {
	p.mu.Lock()
	var a Answer
	s, ok := p.tl.gpus[gpuIndex].slot[key]
	if ok {
		a, ok = p.state[gpuIndex][s].a, p.state[gpuIndex][s].ok
	}
	if p.loop.lostBefore(gpuIndex) {
		a, ok = Answer{R: "GPU_IS_LOST"}, true
	}
	p.mu.Unlock()
	if !ok {
		return missing
	}
	if a.R != "" {
		return returnByName[a.R]
	}
	if err := json.Unmarshal(a.V, dst); err != nil {
		return nvml.ERROR_UNKNOWN
	}
	return nvml.SUCCESS
}

// Library returns the player as the collector's NVML.
func (p *Player) Library() gpu.Library { return playerLibrary{p} }

type playerLibrary struct{ p *Player }

func (l playerLibrary) Init() nvml.Return     { return nvml.SUCCESS }
func (l playerLibrary) Shutdown() nvml.Return { return nvml.SUCCESS }
func (l playerLibrary) SystemGetDriverVersion() (string, nvml.Return) {
	return l.p.tl.Header.DriverVersion, nvml.SUCCESS
}
func (l playerLibrary) DeviceGetCount() (int, nvml.Return) {
	if !l.p.wait(-1) {
		return 0, nvml.ERROR_UNINITIALIZED
	}
	return len(l.p.tl.Header.GPUs), nvml.SUCCESS
}
func (l playerLibrary) DeviceGetHandleByIndex(i int) (gpu.Device, nvml.Return) {
	if i < 0 || i >= len(l.p.tl.Header.GPUs) {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	return &playerDevice{p: l.p, i: i, info: l.p.tl.Header.GPUs[i]}, nvml.SUCCESS
}

type playerDevice struct {
	p    *Player
	i    int
	info gpu.Info
}

func (d *playerDevice) GetUUID() (string, nvml.Return)   { return d.info.UUID, nvml.SUCCESS }
func (d *playerDevice) GetName() (string, nvml.Return)   { return d.info.Name, nvml.SUCCESS }
func (d *playerDevice) GetSerial() (string, nvml.Return) { return d.info.Serial, nvml.SUCCESS }
func (d *playerDevice) GetMinorNumber() (int, nvml.Return) {
	return d.info.Minor, nvml.SUCCESS
}
func (d *playerDevice) GetPciInfo() (nvml.PciInfo, nvml.Return) {
	var p nvml.PciInfo
	for i := 0; i < len(d.info.PCIBusID) && i < len(p.BusId)-1; i++ {
		p.BusId[i] = int8(d.info.PCIBusID[i])
	}
	return p, nvml.SUCCESS
}

// staticMemory answers GetMemoryInfo_v2 from the header when the trace has
// not: static enumeration asks before any record applies.
func (d *playerDevice) staticMemory() (nvml.Memory_v2, bool) {
	if d.info.MemoryTotalMB == 0 {
		return nvml.Memory_v2{}, false
	}
	return nvml.Memory_v2{Total: d.info.MemoryTotalMB << 20}, true
}

// The methods answered by key are in player_gen.go.

func (d *playerDevice) GetFieldValues(vals []nvml.FieldValue) nvml.Return {
	for i := range vals {
		var f float64
		ret := d.p.answer(d.i, keyFieldValue(vals[i].FieldId, vals[i].ScopeId), &f)
		if ret == nvml.ERROR_UNINITIALIZED {
			return ret
		}
		vals[i].NvmlReturn = uint32(ret)
		gpu.SetFieldValueFloat(&vals[i], f)
	}
	return nvml.SUCCESS
}
