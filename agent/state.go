package agent

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gpuwarden/gpuwarden/collectors/attribution"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/kubelet"
	"github.com/gpuwarden/gpuwarden/collectors/source"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
)

// Snapshot is everything the readers see, built by State whenever something
// changes and never modified after it is published. A scrape, /v1/... and
// the sd_notify status read the latest Snapshot without taking a lock.
type Snapshot struct {
	Built         time.Time
	Hostname      string
	DriverVersion string
	GPUs          []GPUState
	Collectors    []CollectorState
	GPUsExpected  int
	Health        Health
	// XidCounts is gpuwarden_xid_errors_total, by GPU index (-1: a bus id
	// the collector does not know) and code.
	XidCounts   []XidCount
	KindCounts  map[event.Kind]uint64
	EventCounts map[EventKey]uint64
	// TruncatedEvents counts events whose text was cut to MaxEventText.
	TruncatedEvents uint64
	// JoinedXid and JoinedAER count second reports of one error from
	// another source (an Xid from the kernel log and NVML, an AER from the
	// kernel log and the eBPF tracepoint), joined into the first's event.
	JoinedXid, JoinedAER uint64
	Subscribers          []SubscriberStats
	fieldMask            []bool // fields exported, from a counters file; nil: all
	// SourceStats are the sources' own series, by source name.
	SourceStats []SourceStats

	ConfigReload ConfigReload // the last load of the configuration (reload.go)

	render rendered // the exposition text, made on first use
}

// GPUState is one GPU as the readers see it.
type GPUState struct {
	Info        gpu.Info    `json:"info"`
	Sample      *gpu.Sample `json:"-"`
	SampleTime  time.Time   `json:"sample_time"`
	Lost        bool        `json:"lost"`
	Health      Health      `json:"health"`
	LastXid     int         `json:"last_xid"`
	LastXidMsg  string      `json:"last_xid_msg,omitempty"`
	Unsupported []string    `json:"unsupported_fields,omitempty"`
	// Processes are who uses the GPU, with the Slurm job or pod each
	// belongs to (on a live host; a replayed node's pids are not ours).
	Processes []ProcessState `json:"processes,omitempty"`
	// Pods are the containers the kubelet gave the GPU to
	// (collector.gpu.kubernetes), while its answer is fresh.
	Pods   []kubelet.Ref `json:"pods,omitempty"`
	Sticky []event.Event `json:"-"`
	labels []string      // dcgm-exporter's label values, in gpuLabelNames order
	lt     *labelText    // labels rendered, kept across snapshots (render.go)
}

// CollectorState is one source's own health.
type CollectorState struct {
	Name        string        `json:"name"`
	Up          bool          `json:"up"`
	Err         string        `json:"error,omitempty"`
	Fix         string        `json:"fix,omitempty"`
	Duration    time.Duration `json:"duration_ns"`
	Errors      uint64        `json:"errors_total"`
	LastSuccess time.Time     `json:"last_success"`
	// Absent: down because what it reads is not on this host; no effect
	// on health.
	Absent bool `json:"absent,omitempty"`
}

// VisibleHealth is the rule for the GPU count: fewer GPUs visible than
// expected is critical (a GPU fell off the bus or failed to initialise).
// The agent and `gpuwarden check` both apply it.
func VisibleHealth(visible, expected int) Health {
	if expected > 0 && visible < expected {
		return Health{Level: event.Critical, Action: event.ActionDrainAndReset,
			Reasons: []string{fmt.Sprintf("%d of %d expected GPUs visible", visible, expected)}}
	}
	return Health{Level: event.OK}
}

// SourceStats is one source's own series.
type SourceStats struct {
	Source  string
	Metrics []source.Metric
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// XidCount is one series of gpuwarden_xid_errors_total.
type XidCount struct {
	GPU      int
	UUID     string
	PCIBusID string
	Xid      int
	Count    uint64
}

// alertedEventKeys are the gpuwarden_events_total series the shipped alert
// rules take increase() of (GPUXidCritical, GPUXidWarning). They are
// exported at 0 from the start: a counter that first appears at 1 shows
// Prometheus no increase, and the node's first Xid would raise no alert.
var alertedEventKeys = []EventKey{
	{event.KindXid, event.Critical}, {event.KindXid, event.Warning}, {event.KindXid, event.Unknown},
}

// EventKey is one series of gpuwarden_events_total.
type EventKey struct {
	Kind     event.Kind
	Severity event.Level
}

// State is the one owner of what the agent knows. Sources call its Apply
// methods; it publishes a new Snapshot after each.
type State struct {
	mu       sync.Mutex
	hostname string
	expected int // configured; 0 means "the first count seen"
	window   time.Duration
	clock    func() time.Time

	driver     string
	gpus       []GPUState
	collectors map[string]*CollectorState
	xid        map[xidKey]*XidCount
	lastXid    map[xidKey]xidSeen // for counting an Xid seen by both sources once
	lastAER    map[aerKey]xidSeen // and an AER seen by the kernel log and eBPF
	kinds      map[event.Kind]uint64
	events     map[EventKey]uint64
	ring       *EventRing
	hostSticky []event.Event // events that weigh on the host rather than one GPU
	truncated  uint64        // events whose text or fields were cut to the limits
	joinedXid  uint64        // second-source reports joined into an event
	joinedAER  uint64
	subs       []*Subscription
	attr       *attribution.Reader          // nil: processes are not attributed (a replay)
	jobLabel   bool                         // GPU series carry hpc_job
	podLabel   bool                         // GPU series carry container, namespace, pod
	pods       kubelet.Assignments          // the kubelet's last answer
	podsAt     time.Time                    // when it was had
	fieldMask  []bool                       // fields exported (nil: all)
	owners     map[uint32]attribution.Owner // by pid
	lastLevels map[string]event.Level       // health per GPU UUID and "" for the host, as last published
	findings   map[string]source.Finding    // host-level health from other sources, by source
	stats      map[string][]source.Metric
	statsDirty bool
	restoredCP bool // a checkpoint was restored (at most once a process)
	firstCount int
	inventory  *Inventory // GPUs this host has had; nil when not kept (a replay)
	invDir     string
	invLog     *slog.Logger
	reload     ConfigReload

	snap atomic.Pointer[Snapshot]
	// gzipWanted is set by the first scrape that accepts gzip.
	gzipWanted atomic.Bool
	// compressions counts the gzip members the metrics path made (render.go).
	compressions atomic.Uint64
	// textSize is the last rendered text's size (render.go).
	textSize atomic.Int64
}

type xidKey struct {
	gpu int
	bus string
	xid int
}

// NewState returns an empty State.
func NewState(hostname string, expectedGPUs int, eventWindow time.Duration, clock func() time.Time) *State {
	if clock == nil {
		clock = time.Now
	}
	s := &State{hostname: hostname, expected: expectedGPUs, window: eventWindow, clock: clock,
		collectors: map[string]*CollectorState{}, xid: map[xidKey]*XidCount{}, lastXid: map[xidKey]xidSeen{}, lastAER: map[aerKey]xidSeen{},
		kinds: map[event.Kind]uint64{}, events: map[EventKey]uint64{},
		findings: map[string]source.Finding{}, stats: map[string][]source.Metric{}, ring: NewEventRing(ringEvents, ringBytes)}
	s.publish()
	return s
}

// KeepInventory makes State remember every GPU it sees in dir, so a GPU
// that is gone after a restart or a reboot is reported missing by name.
func (s *State) KeepInventory(inv *Inventory, dir string, log *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inventory, s.invDir, s.invLog = inv, dir, log
	s.publish()
}

// Reconfigure changes the expected GPU count and the event window.
func (s *State) Reconfigure(expectedGPUs int, eventWindow time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expected, s.window = expectedGPUs, eventWindow
	s.publish()
}

// Snapshot returns the latest published Snapshot.
func (s *State) Snapshot() *Snapshot { return s.snap.Load() }

// Events returns the recent-event ring.
func (s *State) Events() *EventRing { return s.ring }

// SetFinding replaces a source's host-level health contribution.
func (s *State) SetFinding(name string, f source.Finding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.findings[name] = f
	s.publish()
}

// statsDelay bounds how stale a source's series may be in the Snapshot:
// counters that move with every kernel record must not cost a snapshot each.
const statsDelay = 250 * time.Millisecond

// SetStats replaces a source's own series. They are published with the
// next change, or within statsDelay.
func (s *State) SetStats(name string, m []source.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats[name] = m
	if !s.statsDirty {
		s.statsDirty = true
		time.AfterFunc(statsDelay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.statsDirty {
				s.publish()
			}
		})
	}
}

// Refresh republishes, for when a health source changed.
func (s *State) Refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publish()
}

// SetCollector records a source's own state.
func (s *State) SetCollector(name string, up bool, err error, fix string, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.collectors[name]
	if c == nil {
		c = &CollectorState{Name: name}
		s.collectors[name] = c
	}
	c.Up, c.Duration, c.Fix = up, took, fix
	c.Err = ""
	if up {
		c.Absent = false
	}
	if err != nil {
		c.Err = err.Error()
		c.Errors++
	} else {
		c.LastSuccess = s.clock()
	}
	s.publish()
}

// SetCollectorAbsent marks a down source as absent from this host (an
// optional backend not installed), so it does not make the host unknown.
func (s *State) SetCollectorAbsent(name string, absent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.collectors[name]; c != nil {
		c.Absent = absent
		s.publish()
	}
}

// ApplyRound takes a GPU collector round.
func (s *State) ApplyRound(r gpu.Round) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.collectors["gpu"]
	if c == nil {
		c = &CollectorState{Name: "gpu"}
		s.collectors["gpu"] = c
	}
	c.Duration = r.Duration
	if r.Err != nil {
		c.Up, c.Err = false, r.Err.Error()
		c.Errors++
		s.publish()
		return
	}
	c.Up, c.Err, c.LastSuccess = true, "", r.Time
	s.driver = r.DriverVersion
	if s.firstCount == 0 {
		s.firstCount = len(r.Samples)
	}
	if len(s.gpus) != len(r.Samples) {
		old := s.gpus
		s.gpus = make([]GPUState, len(r.Samples))
		copy(s.gpus, old)
	}
	for i, smp := range r.Samples {
		g := &s.gpus[i]
		if g.Info != smp.GPU || g.labels == nil {
			g.Info = smp.GPU
			g.labels = []string{strconv.Itoa(smp.GPU.Index), smp.GPU.UUID, smp.GPU.PCIBusID,
				smp.GPU.DeviceName(), smp.GPU.Name, s.hostname, r.DriverVersion}
		}
		g.Sample = smp
		g.Processes = s.owned(smp.Processes)
		s.relabel(g)
		g.SampleTime = smp.Time
		g.Lost = smp.Lost
		g.Unsupported = g.Unsupported[:0]
		for fi, st := range smp.Status {
			if st == gpu.StatusNotSupported || st == gpu.StatusNoSource {
				g.Unsupported = append(g.Unsupported, gpu.Fields[fi].Name)
			}
		}
	}
	s.namePods()
	if s.inventory != nil {
		infos := make([]gpu.Info, len(r.Samples))
		for i, smp := range r.Samples {
			infos[i] = smp.GPU
		}
		if s.inventory.Add(infos, r.Time) {
			if err := s.inventory.Save(s.invDir); err != nil {
				s.invLog.Warn("cannot save the GPU inventory; a GPU lost before a restart may go unnoticed", "dir", s.invDir, "err", err)
			}
		}
	}
	for _, x := range r.Xids {
		ev := event.Event{Time: r.Time, Source: "nvml", Kind: event.KindXid, Code: x.Xid,
			GPU: event.GPURef{Index: x.GPU.Index, UUID: x.GPU.UUID, PCIBusID: x.GPU.PCIBusID},
			Raw: fmt.Sprintf("NVML event: Xid %d on GPU %d (%s)", x.Xid, x.GPU.Index, x.GPU.UUID)}
		xid.Enrich(&ev)
		s.applyEvent(ev)
	}
	s.publish()
}

// ApplyEvent takes an event from any source: fills in the GPU it concerns,
// counts it, keeps it, and lets it affect health.
func (s *State) ApplyEvent(ev event.Event) event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev, _ = s.applyEvent(ev)
	s.publish()
	return ev
}

// ApplyEvents applies a batch in one publish: fresh events are counted,
// kept and passed to subscribers; restored ones (kernel-log records the
// agent applied before a restart, re-read below its cursor) bring back
// their GPU's health and their place in /v1/events, and are neither
// counted nor passed on again.
func (s *State) ApplyEvents(fresh, restored []event.Event) {
	if len(fresh) == 0 && len(restored) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range restored {
		ev = s.locate(s.bound(ev))
		ev.Restored = true
		s.remember(ev)
		s.ring.Add(ev)
	}
	for _, ev := range fresh {
		s.applyEvent(ev)
	}
	s.publish()
}

// aerDedupWindow is how far apart the kernel log's and the eBPF
// tracepoint's reports of one AER may be: both come from the same kernel
// call, so a second is generous.
const aerDedupWindow = 2 * time.Second

// aerSeverityField is the field both sources put the AER severity in
// (xid.FieldAERSeverity; spelled here to keep State's imports small).
const aerSeverityField = "aer_severity"

type aerKey struct{ bus, severity string }

// xidDedupWindow is how far apart the kernel log's and NVML's reports of one
// Xid on one GPU may be. NVML's are read once per sampling round, so this
// must exceed the longest sampling interval worth running with.
const xidDedupWindow = 60 * time.Second

// applyEvent is ApplyEvent without the lock or the publish. It reports false
// for an Xid already seen from the other source (the same Xid on the same
// GPU from the kernel log and from NVML is one error, counted once).
func (s *State) applyEvent(ev event.Event) (event.Event, bool) {
	ev = s.locate(s.bound(ev))
	if ev.Kind == event.KindXid && ev.GPU.Index >= 0 {
		k := xidKey{gpu: ev.GPU.Index, xid: ev.Code}
		if last, ok := s.lastXid[k]; ok && last.source != ev.Source && absDuration(s.clock().Sub(last.at)) < xidDedupWindow {
			delete(s.lastXid, k) // matched: the next report is a new error
			s.joinedXid++
			return ev, false
		}
		s.lastXid[k] = xidSeen{at: s.clock(), source: ev.Source}
	}
	if ev.Kind == event.KindAER && ev.GPU.PCIBusID != "" {
		// The kernel log and the eBPF tracepoint report one AER each: the
		// same device and severity from the other source within
		// aerDedupWindow is that one error.
		k := aerKey{bus: gpu.ShortBusID(ev.GPU.PCIBusID), severity: ev.Fields[aerSeverityField]}
		if last, ok := s.lastAER[k]; ok && last.source != ev.Source && absDuration(ev.Time.Sub(last.at)) < aerDedupWindow {
			delete(s.lastAER, k)
			s.joinedAER++
			return ev, false
		}
		if len(s.lastAER) > 4096 {
			clear(s.lastAER) // bounded: a flood of distinct devices forgets, never grows
		}
		s.lastAER[k] = xidSeen{at: ev.Time, source: ev.Source}
	}
	ev = s.withOwners(ev)
	s.count(ev)
	s.remember(ev)
	s.ring.Add(ev)
	if !ev.Backlog {
		s.notify(Notice{Event: &ev})
	}
	return ev, true
}

// count adds ev to the counters. Every series is bounded whatever the log
// says: an Xid on a bus id that is no GPU of this host goes to one
// "unknown" bucket, and a code outside the catalog to code 0 ("other").
func (s *State) count(ev event.Event) {
	if ev.Source == "kmsg" || ev.Source == "replay" {
		s.kinds[ev.Kind]++
	}
	s.events[EventKey{ev.Kind, ev.Severity}]++
	if ev.Kind != event.KindXid {
		return
	}
	k := xidKey{gpu: -1, bus: UnknownBus, xid: ev.Code}
	if ev.GPU.Index >= 0 && ev.GPU.Index < len(s.gpus) {
		// One series per GPU and code whichever source spelled the bus
		// id: dcgm-exporter's spelling, as on the GPU's other series.
		k.gpu, k.bus = ev.GPU.Index, s.gpus[ev.GPU.Index].Info.PCIBusID
	}
	if !xid.Lookup(event.KindXid, ev.Code).Known {
		k.xid = OtherXid
	}
	c := s.xid[k]
	if c == nil {
		c = &XidCount{GPU: k.gpu, PCIBusID: k.bus, Xid: k.xid}
		if k.gpu >= 0 {
			c.UUID = s.gpus[k.gpu].Info.UUID
		}
		s.xid[k] = c
	}
	c.Count++
}

// UnknownBus is the pci_bus_id of the one gpuwarden_xid_errors_total
// bucket for Xids on bus ids that are no GPU of this host, and OtherXid
// the code of the bucket for codes outside the catalog (rendered "other").
const (
	UnknownBus = "unknown"
	OtherXid   = 0
)

// Limits on what one event may carry, whatever its source: a kernel record
// is at most about 1 KiB, so anything longer is not the driver speaking.
const (
	MaxEventText  = 8 << 10 // bytes of Raw
	MaxFieldValue = 1 << 10 // bytes of one field's value
	maxFields     = 32
)

// bound truncates an event's text and fields to the limits above, marking
// what it cut, and asks the catalog for an event whose source did not (kinds
// it has no row for stay unrated and weigh on nothing).
func (s *State) bound(ev event.Event) event.Event {
	if ev.HealthDuration == event.DurationUnset {
		xid.Enrich(&ev)
	}
	cut := false
	if len(ev.Raw) > MaxEventText {
		ev.Raw, cut = Truncate(ev.Raw, MaxEventText), true
	}
	if fieldsTooBig(ev.Fields) {
		// A new map: the caller's may be shared.
		fields := make(map[string]string, min(len(ev.Fields), maxFields))
		for k, v := range ev.Fields {
			if len(fields) < maxFields && len(k) <= MaxFieldValue {
				fields[k] = Truncate(v, MaxFieldValue)
			}
		}
		ev.Fields, cut = fields, true
	}
	if cut {
		s.truncated++
	}
	return ev
}

func fieldsTooBig(fields map[string]string) bool {
	if len(fields) > maxFields {
		return true
	}
	for k, v := range fields {
		if len(k) > MaxFieldValue || len(v) > MaxFieldValue {
			return true
		}
	}
	return false
}

// Truncate cuts s to at most n bytes on a UTF-8 boundary, with a marker:
// how event text is cut wherever it is kept.
func Truncate(s string, n int) string {
	const mark = "...[truncated]"
	if len(s) <= n {
		return s
	}
	i := n - len(mark)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + mark
}

// RestoreEvent is ApplyEvents with one restored event.
func (s *State) RestoreEvent(ev event.Event) { s.ApplyEvents(nil, []event.Event{ev}) }

// Locate fills in the GPU an event's bus id names, as applying it would.
func (s *State) Locate(ev event.Event) event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.locate(ev)
}

// locate fills in the GPU an event's bus id names, and its time.
func (s *State) locate(ev event.Event) event.Event {
	if ev.GPU.PCIBusID != "" && ev.GPU.Index < 0 {
		key := gpu.ShortBusID(ev.GPU.PCIBusID)
		for i := range s.gpus {
			if gpu.ShortBusID(s.gpus[i].Info.PCIBusID) == key {
				ev.GPU.Index = i
				ev.GPU.UUID = s.gpus[i].Info.UUID
				break
			}
		}
	}
	if ev.Time.IsZero() {
		ev.Time = s.clock()
	}
	return ev
}

// remember keeps what an event means for its GPU, or for the host: the
// last Xid and, for events the catalog says weigh on health, the event.
func (s *State) remember(ev event.Event) {
	weighs := ev.HealthDuration == event.DurationWindow || ev.HealthDuration == event.DurationBoot
	if !ev.PointsAtGPU {
		if weighs {
			s.hostSticky = keepSticky(s.hostSticky, ev)
		}
		return
	}
	if ev.GPU.Index < 0 || ev.GPU.Index >= len(s.gpus) {
		return
	}
	g := &s.gpus[ev.GPU.Index]
	if ev.Kind == event.KindXid {
		g.LastXid, g.LastXidMsg = ev.Code, ev.Mnemonic
	}
	if weighs {
		g.Sticky = keepSticky(g.Sticky, ev)
	}
}

// maxSticky bounds the events kept per GPU for health. The ones that last
// the boot are kept first: a flood of window events must not push out the
// Xid 79 that keeps a GPU critical.
const maxSticky = 32

func keepSticky(list []event.Event, ev event.Event) []event.Event {
	list = append(list, ev)
	if len(list) <= maxSticky {
		return list
	}
	for i := range list {
		if list[i].HealthDuration != event.DurationBoot {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list[1:]
}

type xidSeen struct {
	at     time.Time
	source string
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// publish builds and stores a new Snapshot. Callers hold mu.
func (s *State) publish() {
	now := s.clock()
	snap := &Snapshot{Built: now, Hostname: s.hostname, DriverVersion: s.driver,
		GPUs: make([]GPUState, len(s.gpus)), KindCounts: make(map[event.Kind]uint64, len(s.kinds)),
		EventCounts: make(map[EventKey]uint64, len(s.events))}
	snap.GPUsExpected = s.expected
	snap.ConfigReload = s.reload
	if snap.GPUsExpected == 0 {
		snap.GPUsExpected = s.firstCount
		if s.inventory != nil {
			snap.GPUsExpected = max(snap.GPUsExpected, len(s.inventory.GPUs))
		}
	}
	host := Health{Level: event.OK}
	for i := range s.gpus {
		g := s.gpus[i]
		g.Health = gpuHealth(&g, now, s.window)
		g.Unsupported = append([]string(nil), g.Unsupported...)
		if g.labels != nil {
			g.lt = g.labelText()
			s.gpus[i].lt = g.lt
		}
		snap.GPUs[i] = g
		if g.Health.Level != event.OK {
			host.merge(g.Health, fmt.Sprintf("GPU %d", i))
		}
	}
	names := make([]string, 0, len(s.collectors))
	for n := range s.collectors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := *s.collectors[n]
		snap.Collectors = append(snap.Collectors, c)
		if !c.Up && !c.Absent {
			host.merge(Health{Level: event.Unknown, Reasons: []string{fmt.Sprintf("collector %s is down: %s", n, c.Err)}, Fix: c.Fix}, "")
		}
	}
	if c := s.collectors["gpu"]; c != nil && c.Up && VisibleHealth(len(s.gpus), snap.GPUsExpected).Level != event.OK {
		h := VisibleHealth(len(s.gpus), snap.GPUsExpected)
		reasons := h.Reasons
		if s.inventory != nil {
			infos := make([]gpu.Info, len(s.gpus))
			for i := range s.gpus {
				infos[i] = s.gpus[i].Info
			}
			for _, m := range s.inventory.Missing(infos) {
				reasons = append(reasons, fmt.Sprintf("%s %s (%s) was on this host and is not visible now; if it was removed on purpose, delete it from %s",
					m.Name, m.UUID, m.PCIBusID, filepath.Join(s.invDir, InventoryFile)))
			}
		}
		h.Reasons = reasons
		host.merge(h, "")
	}
	for _, name := range sortedKeys(s.findings) {
		if f := s.findings[name]; f.Level != event.OK {
			host.merge(Health{Level: f.Level, Reasons: f.Reasons, Action: f.Action, Fix: f.Fix}, name)
		}
	}
	for _, name := range sortedKeys(s.stats) {
		snap.SourceStats = append(snap.SourceStats, SourceStats{Source: name, Metrics: s.stats[name]})
	}
	s.statsDirty = false
	if h := eventsHealth(s.hostSticky, now, s.window); h.Level != event.OK {
		host.merge(h, "host")
	}
	snap.Health = host
	snap.TruncatedEvents = s.truncated
	snap.JoinedXid, snap.JoinedAER = s.joinedXid, s.joinedAER
	snap.fieldMask = s.fieldMask
	s.transitions(snap)
	for _, sub := range s.subs {
		snap.Subscribers = append(snap.Subscribers, SubscriberStats{Name: sub.name, Delivered: sub.delivered.Load(), Dropped: sub.dropped.Load()})
	}
	for _, c := range s.xid {
		snap.XidCounts = append(snap.XidCounts, *c)
	}
	sort.Slice(snap.XidCounts, func(i, j int) bool {
		a, b := snap.XidCounts[i], snap.XidCounts[j]
		if a.GPU != b.GPU {
			return a.GPU < b.GPU
		}
		if a.PCIBusID != b.PCIBusID {
			return a.PCIBusID < b.PCIBusID
		}
		return a.Xid < b.Xid
	})
	for k, v := range s.kinds {
		snap.KindCounts[k] = v
	}
	for _, k := range alertedEventKeys {
		snap.EventCounts[k] = 0
	}
	for k, v := range s.events {
		snap.EventCounts[k] = v
	}
	snap.render.counter, snap.render.sizeHint = &s.compressions, &s.textSize
	s.snap.Store(snap)
	if s.gzipWanted.Load() {
		// Scrapes ask for gzip: render and compress the new snapshot now,
		// off the scrape path, so the next scrape is a copy.
		go snap.gzipped()
	}
}
