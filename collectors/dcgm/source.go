// Package dcgm is the DCGM source: the profiling counters (DCGM_FI_PROF_*)
// from DCGM's profiling module, DCGM's health watches as the source's
// finding, and DCGM's policy violations as events. It runs an embedded
// hostengine, or talks to a standalone nv-hostengine at
// --collector.dcgm.address.
//
// DCGM is optional. Without libdcgm.so.4 the source reports itself down
// with the cause and the fix and the agent retries on its backoff; the
// binary needs nothing of DCGM to build or start (go-dcgm dlopens the
// library in Init). Profiling then comes from NVML's GPM where the GPU has
// it; see package profiling for which of the two serves it.
package dcgm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/profiling"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

func init() {
	source.Register(source.Registration{
		Name: "dcgm",
		Help: "Read profiling counters, health watches and policy violations from DCGM.",
		// On by default: without libdcgm the source is down as absent
		// (source.Absent), which does not weigh on host health.
		Default: true,
		Host:    true,
		New: func(env source.Env) (source.Source, error) {
			return &Source{Lib: FromGoDCGM(), Address: env.String("collector.dcgm.address"),
				Interval: env.Duration("collector.dcgm.interval"), Log: env.Log}, nil
		},
	})
}

// Library name, for the messages.
const libName = "libdcgm.so.4"

// Source is the DCGM source. The zero value of each optional field means
// its default.
type Source struct {
	Lib     Library
	Address string // "": an embedded hostengine
	// Interval is how often DCGM samples the profiling fields and the
	// source reads them and checks health; 0 means 10 s.
	Interval  time.Duration
	Profiling *profiling.Registry // nil: profiling.Default
	Log       *slog.Logger        // nil: slog.Default()
}

// firstRoundWait bounds the wait for the GPU collector's first round, whose
// GPUs label the profiling series.
const firstRoundWait = 15 * time.Second

// policyStop bounds the wait for the policy listener to stop.
const policyStop = 2 * time.Second

// KindPolicy is the kind of a DCGM policy violation event.
const KindPolicy event.Kind = "dcgm_policy"

// Run initialises DCGM once and serves until ctx ends. A failed Init
// returns its error (with the fix) for the agent to report and retry on its
// backoff; nothing else is called into DCGM after it.
func (s *Source) Run(ctx context.Context, sink source.Sink) error {
	g := &guard{lib: s.Lib}
	if err := g.Init(s.Address); err != nil {
		return s.initError(err)
	}
	defer g.Shutdown()
	r := &run{Source: s, g: g, sink: sink, reg: s.registry(), log: s.logger()}
	defer r.close()
	return r.serve(ctx)
}

func (s *Source) initError(err error) error {
	if strings.Contains(err.Error(), libName+" not found") {
		return source.Absent(source.WithFix(fmt.Errorf("DCGM not found (%s): the GPM source is used for profiling", libName),
			"install DCGM 4 (datacenter-gpu-manager-4) to use it, or turn the source off with --no-collector.dcgm"))
	}
	if s.Address != "" {
		return source.WithFix(fmt.Errorf("DCGM hostengine at %s: %w", s.Address, err),
			"start nv-hostengine (systemctl start nvidia-dcgm) or fix --collector.dcgm.address")
	}
	return source.WithFix(fmt.Errorf("DCGM embedded hostengine: %w", err),
		"run the agent as root, or run nv-hostengine and point --collector.dcgm.address at it")
}

func (s *Source) registry() *profiling.Registry {
	if s.Profiling != nil {
		return s.Profiling
	}
	return profiling.Default
}

func (s *Source) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Source) interval() time.Duration {
	if s.Interval > 0 {
		return s.Interval
	}
	return 10 * time.Second
}

// run is one Run's state, from a successful Init to its Shutdown.
type run struct {
	*Source
	g    *guard
	sink source.Sink
	reg  *profiling.Registry
	log  *slog.Logger

	devices []Device
	ids     []uint
	fields  []Field   // the profiling fields DCGM serves on these GPUs
	watch   Watch     // the profiling watch while it runs
	owned   bool      // this run claimed the profiling counters
	claimed time.Time // when
	health  HealthWatch
	noHost  bool // told once that another source owns profiling
}

func (r *run) serve(ctx context.Context) error {
	r.sink.GPUs().WaitFirstRound(ctx, firstRoundWait)
	devs, err := r.g.Devices()
	if err != nil {
		return fmt.Errorf("DCGM: listing GPUs: %w", err)
	}
	r.devices = devs
	for _, d := range devs {
		r.ids = append(r.ids, d.ID)
	}
	if len(devs) == 0 {
		return source.WithFix(errors.New("DCGM sees no supported GPU"), "check the driver with nvidia-smi and dcgmi discovery -l")
	}
	r.fields = r.profilingFields()
	if r.health, err = r.g.WatchHealth(r.ids); err != nil {
		r.log.Warn("DCGM health watches unavailable; the source serves profiling and policies without them", "err", err)
	}
	pctx, cancel := context.WithCancel(ctx)
	forwarded := make(chan struct{})
	defer func() {
		// The policy is unregistered as its channel closes: wait for it
		// (bounded) so that it happens before the Shutdown.
		cancel()
		select {
		case <-forwarded:
		case <-time.After(policyStop):
		}
	}()
	if viol, err := r.g.Policies(pctx, r.ids); err != nil {
		close(forwarded)
		r.log.Warn("DCGM policy violations unavailable; the source serves profiling and health without them", "err", err)
	} else {
		go func() {
			defer close(forwarded)
			r.forward(viol)
		}()
	}
	t := time.NewTicker(r.interval())
	defer t.Stop()
	for {
		changed := r.reg.Changed()
		if err := r.round(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-changed: // a pause or a resume: act at once
		}
	}
}

// profilingFields are the Fields DCGM's profiling module serves on the
// first GPU; none, with one log line, when the module does not answer.
func (r *run) profilingFields() []Field {
	ids, err := r.g.ProfilingFields(r.ids[0])
	if err != nil {
		r.log.Info("DCGM profiling module unavailable: the GPM source is used for profiling where the GPU has it", "err", err)
		return nil
	}
	have := map[uint16]bool{}
	for _, id := range ids {
		have[id] = true
	}
	var out []Field
	for _, f := range Fields() {
		if have[f.ID] {
			out = append(out, f)
		}
	}
	return out
}

// round is one interval's work: follow the pause, read the profiling
// fields, check health, publish.
func (r *run) round() error {
	start := time.Now()
	r.followPause()
	var stats []source.Metric
	if r.watch != nil {
		stats = r.readProfiling()
	}
	if r.health != nil {
		in, err := r.health.Check()
		if err != nil {
			return fmt.Errorf("DCGM health check: %w", err)
		}
		r.sink.Report(r.finding(in))
	}
	r.sink.Stats(stats)
	r.sink.Ran(time.Since(start))
	return nil
}

// followPause releases the profiling counters while profiling is paused
// and takes them again after, if nobody else owns them then.
func (r *run) followPause() {
	paused, until := r.reg.Paused()
	switch {
	case paused && r.watch != nil:
		r.release()
		r.log.Info("profiling paused: DCGM stopped watching the profiling fields and released the counters", "until", until)
	case !paused && r.watch == nil && len(r.fields) > 0:
		if !r.reg.Claim(profiling.OwnerDCGM) {
			if !r.noHost {
				r.log.Info("the profiling counters are owned by another source; DCGM serves no profiling series", "owner", r.reg.Owner())
				r.noHost = true
			}
			return
		}
		r.owned, r.noHost, r.claimed = true, false, time.Now()
		ids := make([]uint16, len(r.fields))
		for i, f := range r.fields {
			ids[i] = f.ID
		}
		w, err := r.g.WatchProfiling(r.ids, ids, r.interval())
		if err != nil {
			r.log.Warn("DCGM cannot watch the profiling fields; the GPM source is used for profiling", "err", err)
			r.fields = nil // not again in this run: the agent's retry starts over
			r.reg.Release(profiling.OwnerDCGM)
			r.owned = false
			return
		}
		r.watch = w
	}
}

func (r *run) release() {
	if r.watch != nil {
		if err := r.watch.Close(); err != nil {
			r.log.Warn("DCGM: stopping the profiling watch", "err", err)
		}
		r.watch = nil
	}
	if r.owned {
		r.reg.Release(profiling.OwnerDCGM)
		r.owned = false
	}
}

// close ends the run: the counters go back, and the series and the finding
// are withdrawn, so that a source that is down serves nothing stale and
// the GPM source, taking over, is not written beside old DCGM series.
func (r *run) close() {
	r.release()
	if r.health != nil {
		r.health.Close()
	}
	r.sink.Stats(nil)
	r.sink.Report(source.Finding{Level: event.OK})
}

// readProfiling turns the newest values into series labelled as the GPU
// collector labels the GPU's, in Fields order; a blank value is absent,
// never 0, and so is a GPU the GPU collector does not know (it could not
// be labelled) or has not sampled since the claim.
func (r *run) readProfiling() []source.Metric {
	byUUID := map[string]source.GPU{}
	for _, g := range r.sink.GPUs().GPUs() {
		byUUID[g.UUID] = g
	}
	byID := map[uint16]int{}
	for i, f := range r.fields {
		byID[f.ID] = i
	}
	type row struct {
		field int
		m     source.Metric
	}
	var rows []row
	for _, d := range r.devices {
		g, ok := byUUID[d.UUID]
		// A sample taken before the claim may hold another source's
		// profiling values (GPM's, which reads the owner each round):
		// DCGM writes the GPU's series from its first sample after it.
		if !ok || g.SampleTime.Before(r.claimed) {
			continue
		}
		vals, err := r.watch.Latest(d.ID)
		if err != nil {
			r.log.Debug("DCGM: reading profiling fields", "gpu", d.ID, "uuid", d.UUID, "err", err)
			continue
		}
		for _, v := range vals {
			i, ok := byID[v.Field]
			if !ok || v.Blank {
				continue
			}
			f := r.fields[i]
			rows = append(rows, row{i, source.Metric{Name: f.Name, Help: f.Help, Labels: g.Labels, Value: v.Value}})
		}
	}
	sort.SliceStable(rows, func(a, b int) bool { return rows[a].field < rows[b].field })
	out := make([]source.Metric, 0, len(rows))
	for _, rw := range rows {
		out = append(out, rw.m)
	}
	return out
}

// finding is the health watches' incidents as the source's finding: a
// failure is critical, a warning a warning.
func (r *run) finding(in []Incident) source.Finding {
	if len(in) == 0 {
		return source.Finding{Level: event.OK}
	}
	f := source.Finding{Level: event.Warning,
		Fix: "see dcgmi health -c and run dcgmi diag -r 2 on the GPU"}
	for _, x := range in {
		if x.Fail {
			f.Level = event.Critical
		}
		res := "warning"
		if x.Fail {
			res = "failure"
		}
		f.Reasons = append(f.Reasons, fmt.Sprintf("DCGM health %s on %s: %s (DCGM_FR code %d): %s",
			res, r.gpuName(x.GPU), x.System, x.Code, x.Message))
	}
	return f
}

// gpuName names a DCGM GPU id by the GPU collector's index and UUID.
func (r *run) gpuName(id uint) string {
	ref := r.ref(id, true)
	if ref.Index < 0 {
		return "DCGM GPU " + strconv.Itoa(int(id))
	}
	return fmt.Sprintf("GPU %d (%s, %s)", ref.Index, ref.UUID, ref.PCIBusID)
}

// ref is the GPU an event about DCGM GPU id concerns, or none (index -1).
func (r *run) ref(id uint, has bool) event.GPURef {
	if !has {
		return event.GPURef{Index: -1}
	}
	for _, d := range r.devices {
		if d.ID != id {
			continue
		}
		for _, g := range r.sink.GPUs().GPUs() {
			if g.UUID == d.UUID {
				return event.GPURef{Index: g.Index, UUID: g.UUID, PCIBusID: g.PCIBusID}
			}
		}
		return event.GPURef{Index: -1, UUID: d.UUID, PCIBusID: d.PCIBusID}
	}
	return event.GPURef{Index: -1}
}

// forward turns policy violations into events until the channel closes.
func (r *run) forward(viol <-chan Violation) {
	for v := range viol {
		r.sink.Events([]event.Event{r.violationEvent(v)}, nil)
	}
}

// policy is what a violation of a condition means: a row per condition.
type policy struct {
	mnemonic    string
	severity    event.Level
	action      event.Action
	explanation string
}

var policies = map[string]policy{
	"Double-bit ECC error": {"DCGM_POLICY_DBE", event.Critical, event.ActionResetGPU,
		"DCGM saw the volatile double-bit ECC count rise: memory returned data it could not correct."},
	"PCI error": {"DCGM_POLICY_PCI", event.Warning, event.ActionNone,
		"DCGM saw the PCIe replay counter rise: the link retried transfers."},
	"Nvlink Error": {"DCGM_POLICY_NVLINK", event.Warning, event.ActionNone,
		"DCGM saw an NVLink CRC, replay or recovery counter rise."},
	"XID Error": {"DCGM_POLICY_XID", event.Warning, event.ActionNone,
		"DCGM reported an Xid; the kernel-log source explains the code."},
}

func (r *run) violationEvent(v Violation) event.Event {
	p, ok := policies[v.Condition]
	if !ok {
		p = policy{mnemonic: "DCGM_POLICY", severity: event.Warning, action: event.ActionNone,
			explanation: "DCGM reported a policy violation."}
	}
	at := v.Time
	if at.IsZero() {
		at = time.Now()
	}
	fields := map[string]string{"condition": v.Condition}
	for k, val := range v.Fields {
		fields[k] = val
	}
	raw := "DCGM policy violation: " + v.Condition
	if v.Xid != 0 {
		raw += " " + strconv.Itoa(v.Xid)
	}
	ref := r.ref(v.GPU, v.HasGPU)
	return event.Event{Time: at, Source: "dcgm", Kind: KindPolicy, GPU: ref, Code: v.Xid, Fields: fields, Raw: raw,
		Severity: p.severity, Mnemonic: p.mnemonic, Explanation: p.explanation, Action: p.action,
		HealthDuration: event.DurationWindow, PointsAtGPU: ref.Index >= 0}
}
