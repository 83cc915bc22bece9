package gpu

import (
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// The profiling fields (DCGM_FI_PROF_*) come from NVML's GPU Performance
// Monitoring, on Hopper and newer with a driver from R525 on. NVML computes
// each metric as a rate over two samples of one GPU (or one MIG GPU
// instance), so there are no raw counters here and nothing wraps: each GPU
// keeps a ring of two sample buffers, takes one sample per round into the
// older buffer, and asks for the metrics between the previous round's sample
// and this one. The first round after a start, a pause or an error only
// fills the ring (StatusWarmingUp).

// Backoff while another profiler holds the GPU's counters: a minute, doubling
// to a quarter of an hour.
const (
	gpmBackoffMin = time.Minute
	gpmBackoffMax = 15 * time.Minute
)

// gpmSymbols are the functions GPM needs that an old libnvidia-ml lacks.
// go-nvml binds them lazily: calling one that is missing kills the process,
// so they are looked up first, once per Init.
const (
	gpmSymbol    = "nvmlGpmSampleGet"
	gpmMigSymbol = "nvmlGpmMigSampleGet"
)

// gpmBusy says whether NVML's answer means "the counters are in use
// elsewhere": retried on a backoff, not reported as broken. nvml.h names no
// such error for GPM; these are NVML's general ones for a taken resource.
func gpmBusy(ret nvml.Return) bool {
	return ret == nvml.ERROR_IN_USE || ret == nvml.ERROR_INSUFFICIENT_RESOURCES
}

// gpmRing is the two sample buffers of one GPU or GPU instance. Samples of
// different entities are never paired.
type gpmRing struct {
	s    [2]nvml.GpmSample
	next int  // the buffer the next sample goes into
	warm bool // s[next^1] holds the previous round's sample
}

func (r *gpmRing) free(lib Library) {
	for i, s := range r.s {
		if s != nil {
			lib.GpmSampleFree(s)
			r.s[i] = nil
		}
	}
	r.warm = false
}

// gpmState is one GPU's GPM state, used only by the goroutine that holds the
// GPU's busy lock.
type gpmState struct {
	checked bool
	noGPM   string // why this GPU has no GPM; empty when it has
	ring    gpmRing
	inst    map[int]*gpmInstance // MIG GPU instances, by GPU-instance id
	req     *nvml.GpmMetricsGetType
	backoff time.Duration // 0 unless the counters were found busy
	retryAt time.Time
}

type gpmInstance struct {
	ring    gpmRing
	profile string
}

// release frees every sample buffer of the GPU; the next round warms up.
func (st *gpmState) release(lib Library) {
	st.ring.free(lib)
	for id, in := range st.inst {
		in.ring.free(lib)
		delete(st.inst, id)
	}
}

// checkGPMLibrary looks the GPM symbols up; called once per Init, before any
// GPU is sampled.
func (c *Collector) checkGPMLibrary() {
	c.gpmLib, c.gpmMIG = false, false
	ext := c.lib.Extensions()
	if ext == nil {
		return
	}
	c.gpmLib = ext.LookupSymbol(gpmSymbol) == nil
	c.gpmMIG = c.gpmLib && ext.LookupSymbol(gpmMigSymbol) == nil
}

// gpmSupport asks the GPU once whether it has GPM. It returns why not (empty
// when it has), or a return to retry on (the GPU lost or timed out).
func (c *Collector) gpmSupport(d Device) (string, nvml.Return) {
	if !c.gpmLib {
		return "libnvidia-ml has no " + gpmSymbol + " (a driver older than R525): upgrade the NVIDIA driver", nvml.SUCCESS
	}
	sup, ret := d.GpmQueryDeviceSupport()
	switch {
	case ret == nvml.ERROR_GPU_IS_LOST || ret == nvml.ERROR_TIMEOUT || ret == nvml.ERROR_UNINITIALIZED:
		return "", ret
	case ret == nvml.ERROR_FUNCTION_NOT_FOUND:
		return "the driver's NVML has no GPM: upgrade the NVIDIA driver to R525 or newer", nvml.SUCCESS
	case ret != nvml.SUCCESS:
		return "nvmlGpmQueryDeviceSupport: " + nvml.ErrorString(ret), nvml.SUCCESS
	case sup.IsSupportedDevice == 0:
		return "this GPU has no GPM (it needs Hopper or newer)", nvml.SUCCESS
	}
	return "", nvml.SUCCESS
}

// sampleGPM fills the profiling fields of s, and its MIG instances.
func (c *Collector) sampleGPM(g *gpuState, s *Sample, now time.Time, paused bool) {
	st := &g.gpm
	setAll := func(status Status) {
		for _, fi := range c.profFields {
			s.Status[fi] = status
		}
	}
	if paused {
		st.release(c.lib)
		setAll(StatusPaused)
		return
	}
	if !st.checked {
		why, ret := c.gpmSupport(g.dev)
		if ret != nvml.SUCCESS {
			for _, fi := range c.profFields {
				c.set(g, s, fi, 0, ret)
			}
			return
		}
		st.checked, st.noGPM = true, why
		if why != "" {
			c.log.Info("profiling fields (DCGM_FI_PROF_*) absent: no GPM on this GPU",
				"gpu", g.info.Index, "uuid", g.info.UUID, "reason", why)
		}
	}
	if st.noGPM != "" {
		setAll(StatusNoSource)
		return
	}
	if st.backoff > 0 && now.Before(st.retryAt) {
		setAll(StatusBusy)
		return
	}
	if st.req == nil {
		st.req = &nvml.GpmMetricsGetType{}
	}

	mig := false
	if c.gpmMIG {
		cur, _, ret := g.dev.GetMigMode()
		mig = ret == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE
	}
	fields := c.profFields
	if mig {
		fields = c.gpuOnlyProfFields
		for _, fi := range c.profInstFields {
			s.Status[fi] = StatusPerInstance
		}
	}
	vals, rets, ret := c.gpmRound(&st.ring, st.req, fields, g.dev.GpmSampleGet)
	if gpmBusy(ret) {
		c.gpmBackOff(g, now, ret)
		setAll(StatusBusy)
		return
	}
	if st.backoff > 0 {
		c.log.Info("GPM counters free again; profiling fields resume", "gpu", g.info.Index, "uuid", g.info.UUID)
		st.backoff = 0
	}
	for j, fi := range fields {
		if rets == nil { // no sample buffers
			c.set(g, s, fi, 0, ret)
			continue
		}
		c.setGPM(g, s, fi, vals[j], rets[j])
	}
	if mig {
		c.sampleInstances(g, s)
		return
	}
	for id, in := range st.inst { // MIG was turned off
		in.ring.free(c.lib)
		delete(st.inst, id)
	}
}

func (c *Collector) gpmBackOff(g *gpuState, now time.Time, ret nvml.Return) {
	st := &g.gpm
	st.release(c.lib)
	if st.backoff == 0 {
		st.backoff = gpmBackoffMin
		c.log.Warn("GPM counters in use by another profiler; profiling fields absent, retrying on a backoff",
			"gpu", g.info.Index, "uuid", g.info.UUID, "err", nvml.ErrorString(ret), "retry_in", st.backoff,
			"fix", "stop the other profiler (Nsight, CUPTI, DCGM profiling) or pause it")
	} else {
		st.backoff = min(2*st.backoff, gpmBackoffMax)
	}
	st.retryAt = now.Add(st.backoff)
}

// setGPM sets one profiling field from GPM's answer.
func (c *Collector) setGPM(g *gpuState, s *Sample, fi int, v float64, ret nvml.Return) {
	switch {
	case ret == nvml.SUCCESS && math.IsNaN(v):
		s.Status[fi] = StatusError // NVML had no value; DCGM stores a blank
	case ret == errWarmingUp || ret == nvml.ERROR_NOT_READY:
		s.Status[fi] = StatusWarmingUp
	case ret == nvml.SUCCESS:
		c.set(g, s, fi, v, nvml.SUCCESS)
	default:
		c.set(g, s, fi, 0, ret)
	}
}

// errWarmingUp marks the values of a round that only filled the ring. It is
// no NVML return (NVML's are small positive numbers or 999). A metric
// answered NOT_READY is warming up too.
const errWarmingUp nvml.Return = -1

// gpmRound takes one sample of an entity into its ring with get and, once
// the ring holds the previous one, reads fields' metrics between the two, one
// metric per call (batched calls have come back corrupted past the first
// metric on some drivers). It returns the converted values and each one's
// return, or the return of a failed allocation or sample.
func (c *Collector) gpmRound(r *gpmRing, req *nvml.GpmMetricsGetType, fields []int, get func(nvml.GpmSample) nvml.Return) ([]float64, []nvml.Return, nvml.Return) {
	for i := range r.s {
		if r.s[i] == nil {
			s, ret := c.lib.GpmSampleAlloc()
			if ret != nvml.SUCCESS {
				r.free(c.lib)
				return nil, nil, ret
			}
			r.s[i] = s
		}
	}
	vals := make([]float64, len(fields))
	rets := make([]nvml.Return, len(fields))
	if ret := get(r.s[r.next]); ret != nvml.SUCCESS {
		r.warm = false
		for j := range rets {
			rets[j] = ret
		}
		return vals, rets, ret
	}
	prev, cur := r.s[r.next^1], r.s[r.next]
	r.next ^= 1
	if !r.warm {
		r.warm = true
		for j := range rets {
			rets[j] = errWarmingUp
		}
		return vals, rets, nvml.SUCCESS
	}
	for j, fi := range fields {
		f := &Fields[fi]
		req.Version = nvml.GPM_METRICS_GET_VERSION
		req.NumMetrics = 1
		req.Sample1, req.Sample2 = prev, cur // older first, as DCGM pairs them
		req.Metrics[0] = nvml.GpmMetric{MetricId: uint32(f.GPM)}
		c.gpmCompute.Lock()
		ret := c.lib.GpmMetricsGet(req)
		c.gpmCompute.Unlock()
		if gpmBusy(ret) {
			return nil, nil, ret
		}
		if ret == nvml.SUCCESS {
			ret = nvml.Return(req.Metrics[0].NvmlReturn)
		}
		rets[j] = ret
		if ret == nvml.SUCCESS {
			vals[j] = f.Unit.DCGM(req.Metrics[0].Value)
		}
	}
	return vals, rets, nvml.SUCCESS
}

// sampleInstances reads the PerInstance fields of each MIG GPU instance of a
// GPU in MIG mode. Instances are enumerated each round (MIG can be
// repartitioned while the agent runs); a compute instance adds a MIG device
// but not a GPU instance, so each GPU-instance id is read once.
func (c *Collector) sampleInstances(g *gpuState, s *Sample) {
	st := &g.gpm
	if st.inst == nil {
		st.inst = map[int]*gpmInstance{}
	}
	n, ret := g.dev.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return
	}
	seen := map[int]bool{}
	for i := 0; i < n; i++ {
		md, ret := g.dev.GetMigDeviceHandleByIndex(i)
		if ret != nvml.SUCCESS || md == nil {
			continue // NOT_FOUND: an empty slot
		}
		id, ret := md.GetGpuInstanceId()
		if ret != nvml.SUCCESS || seen[id] {
			continue
		}
		seen[id] = true
		in := st.inst[id]
		if in == nil {
			in = &gpmInstance{profile: migProfile(md, g.info.MemoryTotalMB)}
			st.inst[id] = in
		}
		out := Instance{ID: id, Profile: in.profile, Values: make([]float64, len(Fields)), Status: make([]Status, len(Fields))}
		for fi := range out.Status {
			out.Status[fi] = StatusNotSupported
		}
		vals, rets, ret := c.gpmRound(&in.ring, st.req, c.profInstFields, func(smp nvml.GpmSample) nvml.Return {
			return g.dev.GpmMigSampleGet(id, smp)
		})
		for j, fi := range c.profInstFields {
			r := ret
			if rets != nil {
				r = rets[j]
			}
			switch {
			case r == errWarmingUp || r == nvml.ERROR_NOT_READY:
				out.Status[fi] = StatusWarmingUp
			case r == nvml.SUCCESS && !math.IsNaN(vals[j]):
				out.Values[fi], out.Status[fi] = vals[j], StatusOK
			case r == nvml.SUCCESS:
				out.Status[fi] = StatusError
			default:
				out.Status[fi] = StatusOf(r)
			}
		}
		s.Instances = append(s.Instances, out)
	}
	for id, in := range st.inst {
		if !seen[id] {
			in.ring.free(c.lib)
			delete(st.inst, id)
		}
	}
	sort.Slice(s.Instances, func(a, b int) bool { return s.Instances[a].ID < s.Instances[b].ID })
}

// migProfile names a MIG device's GPU-instance profile as NVIDIA does
// ("1g.10gb", "3g.40gb"): its slice count, and its memory as a share of the
// GPU's rounded up to an eighth, times the GPU's memory in whole GiB.
func migProfile(md nvml.Device, totalMiB uint64) string {
	a, ret := md.GetAttributes()
	if ret != nvml.SUCCESS {
		return ""
	}
	var gb uint64
	if totalMiB > 0 {
		share := math.Ceil(float64(a.MemorySizeMB)/float64(totalMiB)*8) / 8
		gb = uint64(math.Round(share * float64((totalMiB+1023)/1024)))
	} else {
		gb = (a.MemorySizeMB + 1023) / 1024
	}
	return strconv.Itoa(int(a.GpuInstanceSliceCount)) + "g." + strconv.FormatUint(gb, 10) + "gb"
}

// releaseGPM frees every GPU's sample buffers, before NVML shuts down. A GPU
// whose sample is still running (hung in NVML) keeps its buffers: freeing
// them under the running call would be worse than the leak.
func (c *Collector) releaseGPM() {
	for _, g := range c.gpus {
		if g.busy.TryLock() {
			g.gpm.release(c.lib)
			g.busy.Unlock()
		}
	}
}
