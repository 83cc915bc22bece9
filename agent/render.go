package agent

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// Build information, set by the linker (make build); a plain `go build`
// in a checkout gets the revision from the Go toolchain's VCS stamp.
var (
	Version  = "dev"
	Revision = ""
)

func init() {
	if Revision != "" {
		return
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			Revision = s.Value
			if len(Revision) > 12 {
				Revision = Revision[:12]
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && Revision != "" {
		Revision += "-dirty"
	}
}

// gpuLabelNames are dcgm-exporter's labels, so its dashboards and alerts work.
var gpuLabelNames = []string{"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"}

// The exposition is rendered straight from the Snapshot into Prometheus's
// text format. A Snapshot never changes, so its text is rendered once, on
// the first scrape that sees it or in the background after publish, and
// kept with it, with what a scrape needs to add the series that depend on
// the time of the scrape (sample ages): each GPU's line up to its value.
// A scrape is then copies: the snapshot's bytes, one number a GPU, and the
// process's own series (gathered at most once a second). Going through
// client_golang's const metrics instead costs ~13k allocations and 2.5 ms
// per scrape at 8 GPUs.
//
// When the client accepts gzip (Prometheus always does) the snapshot's text
// is compressed once, as one gzip member, and sent as it is by every scrape
// of that snapshot; the process's series are a second member, compressed
// when they are gathered; the ages a third, encoded from a plan made once per
// snapshot (agesgzip.go), so a scrape itself compresses nothing. Members one after another
// are one valid gzip stream (RFC 1952).

// rendered is a Snapshot's exposition text.
type rendered struct {
	once sync.Once
	text []byte
	// ages are the gpuwarden_gpu_sample_age_seconds lines, each up to its
	// value; agesHead is the family's header ("" without GPUs).
	ages     []ageLine
	agesHead string
	gzOnce   sync.Once
	gz       []byte // text as one gzip member, made once per snapshot
	planOnce sync.Once
	plans    *agePlans      // how the age lines are encoded (agesgzip.go)
	counter  *atomic.Uint64 // the State's compressions (nil: not counted)
	// sizeHint is the State's last text size, so the next is rendered into
	// one buffer of the right size, not regrown (nil: estimated).
	sizeHint *atomic.Int64
}

type ageLine struct {
	prefix string // "gpuwarden_gpu_sample_age_seconds{...} "
	at     time.Time
}

const ageName = "gpuwarden_gpu_sample_age_seconds"

func (s *Snapshot) text() []byte {
	s.render.once.Do(func() { s.render.text, s.render.ages, s.render.agesHead = s.renderText() })
	return s.render.text
}

// renderText renders the snapshot: its text and the age lines' prefixes.
func (s *Snapshot) renderText() (text []byte, ages []ageLine, agesHead string) {
	size := 4<<10 + len(s.GPUs)*len(gpu.Fields)*256 // about one series line per GPU and field
	if s.render.sizeHint != nil {
		if last := int(s.render.sizeHint.Load()); last > 0 {
			size = last + last/32 + 1<<10 // the last text's, with room to grow
		}
	}
	b := &textBuf{make([]byte, 0, size)}
	writeSnapshot(b, s)
	if s.render.sizeHint != nil {
		s.render.sizeHint.Store(int64(len(b.b)))
	}
	for i := range s.GPUs {
		g := &s.GPUs[i]
		if g.labels != nil {
			ages = append(ages, ageLine{prefix: g.labelText().age, at: g.SampleTime})
		}
	}
	if len(ages) > 0 {
		var h textBuf
		family(&h, ageName, "Age of the GPU's newest sample, from the GPU collector.", "gauge")
		agesHead = string(h.b)
	}
	return b.b, ages, agesHead
}

// gzipped is the snapshot's text compressed, once: every scrape of the
// same snapshot after the first sends these bytes as they are.
func (s *Snapshot) gzipped() []byte {
	s.render.gzOnce.Do(func() { s.render.gz = compress(s.text(), s.render.counter) })
	return s.render.gz
}

// compress is the one place the metrics path compresses: text as one gzip
// member. counter, if not nil, counts the calls (tests check that a scrape
// of an unchanged snapshot makes none).
func compress(text []byte, counter *atomic.Uint64) []byte {
	if counter != nil {
		counter.Add(1)
	}
	b := bytes.NewBuffer(make([]byte, 0, len(text)/8+64))
	zw := gzipWriters.Get().(*gzip.Writer)
	zw.Reset(b)
	zw.Write(text)
	zw.Close()
	gzipWriters.Put(zw)
	return b.Bytes()
}

// appendAges appends the sample ages at now.
func (s *Snapshot) appendAges(b []byte, now time.Time) []byte {
	s.text()
	if len(s.render.ages) == 0 {
		return b
	}
	b = append(b, s.render.agesHead...)
	for _, a := range s.render.ages {
		b = append(b, a.prefix...)
		b = appendFloat(b, now.Sub(a.at).Seconds())
		b = append(b, '\n')
	}
	return b
}

// family writes a metric family's HELP and TYPE lines.
func family(b *textBuf, name, help, typ string) {
	b.b = append(append(append(b.b, "# HELP "...), name...), ' ')
	b.b = append(append(b.b, escapeHelp(help)...), "\n# TYPE "...)
	b.b = append(append(append(append(b.b, name...), ' '), typ...), '\n')
}

// sample writes one series: name, the pre-rendered label set ("{...}" or
// ""), the value.
func sample(b *textBuf, name, labels string, v float64) {
	b.b = append(append(append(b.b, name...), labels...), ' ')
	b.b = append(appendFloat(b.b, v), '\n')
}

// textBuf is where the text is rendered, by plain appends the compiler
// inlines (a 64-GPU snapshot is ~3,300 lines).
type textBuf struct{ b []byte }

// appendFloat appends v as the text format writes it (Go's shortest 'g').
// Integers below 1e6, most of a GPU's values, take a shorter path that
// prints the same digits.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v > -1e6 && v < 1e6 && v == math.Trunc(v) && (v != 0 || !math.Signbit(v)):
		return strconv.AppendInt(b, int64(v), 10)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// labelSet renders {k1="v1",k2="v2"} with the text format's escaping.
func labelSet(kv ...string) string {
	if len(kv) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(kv[i])
		sb.WriteString(`="`)
		sb.WriteString(escapeLabel(kv[i+1]))
		sb.WriteByte('"')
	}
	sb.WriteByte('}')
	return sb.String()
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(s string) string { return labelEscaper.Replace(validUTF8(s)) }

// validUTF8 is the one place label values from outside (file names, kernel
// releases, GPU names) become valid UTF-8: each invalid byte is written as
// \xNN, so two values that differ only in invalid bytes stay two series.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, "\\x%02x", s[i])
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
func escapeHelp(s string) string { return helpEscaper.Replace(s) }

// gpuLabels renders a GPU's dcgm-exporter label set, with extra pairs
// appended (err_code, err_msg).
func gpuLabels(l []string, extra ...string) string {
	kv := make([]string, 0, 2*len(gpuLabelNames)+2+len(extra))
	for i, n := range gpuLabelNames {
		kv = append(kv, n, l[i])
	}
	kv = appendOptional(kv, l)
	return labelSet(append(kv, extra...)...)
}

// appendOptional adds the GPU's optional labels, the name and value pairs
// after dcgm-exporter's: hpc_job (collector.gpu.job-label), then container,
// namespace and pod (collector.gpu.kubernetes), as dcgm-exporter adds them.
func appendOptional(kv, l []string) []string {
	return append(kv, l[len(gpuLabelNames):]...)
}

// instanceLabels renders a MIG GPU instance's label set: the GPU's, with
// dcgm-exporter's GPU_I_PROFILE and GPU_I_ID after modelName, where it puts
// them.
func instanceLabels(l []string, in *gpu.Instance) string {
	kv := make([]string, 0, 2*len(gpuLabelNames)+4)
	for i, n := range gpuLabelNames {
		kv = append(kv, n, l[i])
		if n == "modelName" {
			kv = append(kv, "GPU_I_PROFILE", in.Profile, "GPU_I_ID", strconv.Itoa(in.ID))
		}
	}
	return labelSet(appendOptional(kv, l)...)
}

func shortGPULabels(l []string) string {
	return labelSet("gpu", l[0], "UUID", l[1], "pci_bus_id", l[2])
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// writeSnapshot renders everything in the Snapshot that does not depend on
// the time of the scrape.
func writeSnapshot(b *textBuf, s *Snapshot) {
	family(b, "gpuwarden_build_info", "gpuwarden's version, from the binary.", "gauge")
	sample(b, "gpuwarden_build_info", labelSet("version", Version, "revision", Revision, "goversion", runtime.Version()), 1)

	if len(s.Collectors) > 0 {
		family(b, "gpuwarden_collector_up", "Whether the collector's last run worked (1) or not (0).", "gauge")
		for _, c := range s.Collectors {
			sample(b, "gpuwarden_collector_up", labelSet("collector", c.Name), b2f(c.Up))
		}
		family(b, "gpuwarden_collector_duration_seconds", "How long the collector's last run took.", "gauge")
		for _, c := range s.Collectors {
			sample(b, "gpuwarden_collector_duration_seconds", labelSet("collector", c.Name), c.Duration.Seconds())
		}
		family(b, "gpuwarden_collector_errors_total", "Runs of the collector that failed.", "counter")
		for _, c := range s.Collectors {
			sample(b, "gpuwarden_collector_errors_total", labelSet("collector", c.Name), float64(c.Errors))
		}
		family(b, "gpuwarden_collector_last_success_timestamp_seconds", "When the collector last ran without error.", "gauge")
		for _, c := range s.Collectors {
			if !c.LastSuccess.IsZero() {
				sample(b, "gpuwarden_collector_last_success_timestamp_seconds", labelSet("collector", c.Name), float64(c.LastSuccess.UnixNano())/1e9)
			}
		}
	}
	if r := s.ConfigReload; !r.LastSuccess.IsZero() {
		family(b, "gpuwarden_config_last_reload_successful", "Whether the last attempt to load the configuration, at start or on SIGHUP, worked (1) or was refused (0).", "gauge")
		sample(b, "gpuwarden_config_last_reload_successful", "", b2f(r.Successful))
		family(b, "gpuwarden_config_last_reload_success_timestamp_seconds", "When the configuration was last loaded successfully, at start or on SIGHUP.", "gauge")
		sample(b, "gpuwarden_config_last_reload_success_timestamp_seconds", "", float64(r.LastSuccess.UnixNano())/1e9)
	}
	family(b, "gpuwarden_health", "Host health from gpuwarden's rules: 0 ok, 1 warning, 2 critical, 3 unknown.", "gauge")
	sample(b, "gpuwarden_health", "", float64(s.Health.Level))
	if gc := s.Collector("gpu"); gc != nil && gc.Up {
		family(b, "gpuwarden_gpus_visible", "GPUs NVML enumerates now.", "gauge")
		sample(b, "gpuwarden_gpus_visible", "", float64(len(s.GPUs)))
	}
	if s.GPUsExpected > 0 {
		family(b, "gpuwarden_gpus_expected", "GPUs this host should have: configured gpu.expected, else every GPU it has had.", "gauge")
		sample(b, "gpuwarden_gpus_expected", "", float64(s.GPUsExpected))
	}

	gpus := make([]*GPUState, 0, len(s.GPUs))
	for i := range s.GPUs {
		if s.GPUs[i].labels != nil {
			gpus = append(gpus, &s.GPUs[i])
		}
	}
	if len(gpus) > 0 {
		full := make([]string, len(gpus))
		short := make([]string, len(gpus))
		for i, g := range gpus {
			lt := g.labelText()
			full[i], short[i] = lt.full, lt.short
		}
		// MIG instances' label sets, made on first use: one a GPU instance
		// per snapshot, not one a field.
		inst := make([][]string, len(gpus))
		family(b, "gpuwarden_gpu_info", "One series per GPU NVML enumerates, with its identity in labels.", "gauge")
		for i := range gpus {
			sample(b, "gpuwarden_gpu_info", full[i], 1)
		}
		family(b, "gpuwarden_gpu_health", "GPU health from gpuwarden's rules: 0 ok, 1 warning, 2 critical, 3 unknown.", "gauge")
		for i, g := range gpus {
			sample(b, "gpuwarden_gpu_health", short[i], float64(g.Health.Level))
		}
		family(b, "gpuwarden_gpu_lost", "Whether NVML reports the GPU lost (GPU_IS_LOST).", "gauge")
		for i, g := range gpus {
			sample(b, "gpuwarden_gpu_lost", short[i], b2f(g.Lost))
		}
		family(b, "DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", "gauge")
		for _, g := range gpus {
			sample(b, "DCGM_FI_DEV_XID_ERRORS", g.labelText().xid, float64(g.LastXid))
		}
		for fi, f := range gpu.Fields {
			if s.fieldMask != nil && !s.fieldMask[fi] {
				continue // not in the counters file
			}
			typ := "gauge"
			if f.Type == gpu.Counter {
				typ = "counter"
			}
			headed := false
			for i, g := range gpus {
				// Not supported, lost or failed: absent, never 0.
				if g.Sample == nil {
					continue
				}
				if g.Sample.Status[fi] == gpu.StatusOK {
					if !headed {
						family(b, f.Name, f.Help, typ)
						headed = true
					}
					sample(b, f.Name, full[i], g.Sample.Values[fi])
				}
				for k := range g.Sample.Instances {
					in := &g.Sample.Instances[k]
					if v, ok := in.Value(fi); ok {
						if !headed {
							family(b, f.Name, f.Help, typ)
							headed = true
						}
						if inst[i] == nil {
							inst[i] = make([]string, len(g.Sample.Instances))
						}
						if inst[i][k] == "" {
							inst[i][k] = instanceLabels(g.labels, in)
						}
						sample(b, f.Name, inst[i][k], v)
					}
				}
			}
		}
	}
	writeProcesses(b, s)
	if len(s.XidCounts) > 0 {
		family(b, "gpuwarden_xid_errors_total", "Xid errors seen in the kernel log or from NVML, by GPU and code.", "counter")
		for _, x := range s.XidCounts {
			idx := ""
			if x.GPU >= 0 {
				idx = strconv.Itoa(x.GPU)
			}
			code := strconv.Itoa(x.Xid)
			if x.Xid == OtherXid {
				code = "other"
			}
			sample(b, "gpuwarden_xid_errors_total", labelSet("gpu", idx, "UUID", x.UUID, "pci_bus_id", x.PCIBusID, "xid", code), float64(x.Count))
		}
	}
	if len(s.KindCounts) > 0 {
		family(b, "gpuwarden_kernel_events_total", "NVIDIA-related kernel-log events, by kind.", "counter")
		kinds := make([]string, 0, len(s.KindCounts))
		for k := range s.KindCounts {
			kinds = append(kinds, string(k))
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			sample(b, "gpuwarden_kernel_events_total", labelSet("kind", k), float64(s.KindCounts[event.Kind(k)]))
		}
	}
	if len(s.EventCounts) > 0 {
		family(b, "gpuwarden_events_total", "Events from every source, by kind and the catalog's severity.", "counter")
		keys := make([]EventKey, 0, len(s.EventCounts))
		for k := range s.EventCounts {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].Kind != keys[j].Kind {
				return keys[i].Kind < keys[j].Kind
			}
			return keys[i].Severity < keys[j].Severity
		})
		for _, k := range keys {
			sample(b, "gpuwarden_events_total", labelSet("kind", string(k.Kind), "severity", k.Severity.String()), float64(s.EventCounts[k]))
		}
	}
	writeSourceStats(b, s.SourceStats)
	family(b, "gpuwarden_events_truncated_total", "Events whose text or fields were cut to gpuwarden's size limits (8 KiB of text, 1 KiB a field).", "counter")
	sample(b, "gpuwarden_events_truncated_total", "", float64(s.TruncatedEvents))
	family(b, "gpuwarden_events_joined_total", "Second reports of one error from another source, joined into the event of the first (an Xid from the kernel log and NVML, a PCIe AER from the kernel log and the eBPF tracepoint), by kind.", "counter")
	sample(b, "gpuwarden_events_joined_total", labelSet("kind", "aer"), float64(s.JoinedAER))
	sample(b, "gpuwarden_events_joined_total", labelSet("kind", "xid"), float64(s.JoinedXid))
	if len(s.Subscribers) > 0 {
		family(b, "gpuwarden_subscriber_notices_total", "Events and health changes queued for a subscriber (remediation), by subscriber.", "counter")
		for _, sub := range s.Subscribers {
			sample(b, "gpuwarden_subscriber_notices_total", labelSet("subscriber", sub.Name), float64(sub.Delivered))
		}
		family(b, "gpuwarden_subscriber_dropped_notices_total", "Events and health changes dropped because a subscriber's queue was full, by subscriber.", "counter")
		for _, sub := range s.Subscribers {
			sample(b, "gpuwarden_subscriber_dropped_notices_total", labelSet("subscriber", sub.Name), float64(sub.Dropped))
		}
	}
}

// labelText is a GPU's rendered label sets, kept across snapshots while
// its labels stay the same.
// It is never changed once made: snapshots share it.
type labelText struct {
	of          []string // the label values they were rendered from
	full, short string
	age         string // the sample age's line up to its value
	// xid is DCGM_FI_DEV_XID_ERRORS's label set for the last Xid and its
	// text (xidOf, xidMsgOf).
	xid      string
	xidOf    int
	xidMsgOf string
}

// labelText returns the GPU's rendered label sets: the ones it carries if
// they are of its labels and last Xid, else new ones (sharing what still
// holds).
func (g *GPUState) labelText() *labelText {
	lt := g.lt
	if lt == nil || !slices.Equal(lt.of, g.labels) {
		full := gpuLabels(g.labels)
		lt = &labelText{of: slices.Clone(g.labels), full: full, short: shortGPULabels(g.labels), age: ageName + full + " ", xidOf: -1}
	}
	if lt.xidOf != g.LastXid || lt.xidMsgOf != g.LastXidMsg {
		c := *lt
		c.xid, c.xidOf, c.xidMsgOf = gpuLabels(g.labels, "err_code", strconv.Itoa(g.LastXid), "err_msg", g.LastXidMsg), g.LastXid, g.LastXidMsg
		lt = &c
	}
	return lt
}

// MetricsHandler serves /metrics: the Snapshot's cached text, the sample
// ages, and what extra (the process, DKMS and kernel-log collectors) gathers.
func MetricsHandler(state *State, extra prometheus.Gatherer) http.Handler {
	proc := &gatherCache{g: extra, clock: state.clock, counter: &state.compressions}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		snap := state.Snapshot()
		now := state.clock()
		pt := proc.get(now)
		bp := scrapeBufs.Get().(*scrapeBuf)
		defer scrapeBufs.Put(bp)
		h := w.Header()
		h["Content-Type"] = textFormat
		if !acceptsGzip(r) {
			bp.ages = snap.appendAges(bp.ages[:0], now)
			text := snap.text()
			h["Content-Length"] = []string{strconv.Itoa(len(text) + len(bp.ages) + len(pt.text))}
			w.Write(text)
			w.Write(bp.ages)
			w.Write(pt.text)
			return
		}
		state.gzipWanted.Store(true)
		gz := snap.gzipped()
		bp.member, bp.ages = snap.appendAgesMember(bp.member[:0], bp.ages, now)
		h["Content-Encoding"] = gzipEncoding
		h["Vary"] = varyEncoding
		h["Content-Length"] = []string{strconv.Itoa(len(gz) + len(bp.member) + len(pt.gz))}
		w.Write(gz)
		w.Write(bp.member)
		w.Write(pt.gz)
	})
}

// The response headers, made once: a scrape assigns them, never builds them.
var (
	textFormat   = []string{string(expfmt.NewFormat(expfmt.TypeTextPlain))}
	gzipEncoding = []string{"gzip"}
	varyEncoding = []string{"Accept-Encoding"}
)

// scrapeBuf is a scrape's own bytes: the ages, and their gzip member.
type scrapeBuf struct{ ages, member []byte }

var scrapeBufs = sync.Pool{New: func() any { return &scrapeBuf{} }}

var gzipWriters = sync.Pool{New: func() any { zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed); return zw }}

// acceptsGzip says whether the request's Accept-Encoding lists gzip with a
// weight above zero. It allocates nothing: it runs on every scrape.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header["Accept-Encoding"] {
		for v != "" {
			var part string
			part, v, _ = strings.Cut(v, ",")
			enc, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(enc), "gzip") {
				continue
			}
			if q, ok := qValue(params); !ok || q > 0 {
				return true
			}
		}
	}
	return false
}

// qValue finds the q parameter among an encoding's parameters ("q=0.5").
func qValue(params string) (float64, bool) {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, true // an unreadable weight: not a request for gzip
			}
			return q, true
		}
	}
	return 0, false
}

// gatherCache renders the process's own metrics (CPU, memory, descriptors)
// at most once a second, as text and as a gzip member: reading them costs
// more than the rest of a scrape of an unchanged snapshot, and a second is
// far below any scrape interval.
type gatherCache struct {
	g       prometheus.Gatherer
	clock   func() time.Time
	counter *atomic.Uint64
	mu      sync.Mutex
	at      time.Time
	last    *gathered
}

type gathered struct{ text, gz []byte }

var nothingGathered = &gathered{}

func (c *gatherCache) get(now time.Time) *gathered {
	if c.g == nil {
		return nothingGathered
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && now.Sub(c.at) < time.Second && !now.Before(c.at) {
		return c.last
	}
	var b bytes.Buffer
	mfs, err := c.g.Gather()
	if err != nil {
		slog.Warn("gathering the process metrics", "err", err)
	}
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		enc.Encode(mf)
	}
	c.last, c.at = &gathered{text: b.Bytes(), gz: compress(b.Bytes(), c.counter)}, now
	return c.last
}

// Collector returns the named source's state, or nil before it reported.
func (s *Snapshot) Collector(name string) *CollectorState {
	for i := range s.Collectors {
		if s.Collectors[i].Name == name {
			return &s.Collectors[i]
		}
	}
	return nil
}

// writeSourceStats renders the sources' own series, each family's samples
// together under one header whichever source wrote them, and a series
// (name and labels) at most once.
func writeSourceStats(b *textBuf, stats []SourceStats) {
	var order []string
	byName := map[string][]source.Metric{}
	for _, st := range stats {
		for _, m := range st.Metrics {
			if _, ok := byName[m.Name]; !ok {
				order = append(order, m.Name)
			}
			byName[m.Name] = append(byName[m.Name], m)
		}
	}
	for _, name := range order {
		ms := byName[name]
		typ := "gauge"
		if ms[0].Counter {
			typ = "counter"
		}
		family(b, name, ms[0].Help, typ)
		seen := make(map[string]bool, len(ms))
		for _, m := range ms {
			labels := labelSet(m.Labels...)
			if seen[labels] {
				continue
			}
			seen[labels] = true
			sample(b, name, labels, m.Value)
		}
	}
}

// writeProcesses renders gpuwarden_gpu_process_memory_bytes: one series per
// process on a GPU (at most gpu.MaxProcesses a GPU, so GPUs x 16 in all),
// with whose it is where that is known. Every label value has a strict
// shape (digits, a UUID, hex, a DNS-1123 name checked by package kubelet):
// nothing a workload names itself. namespace and pod appear only where the
// kubelet's answer names the process's pod UID without doubt.
func writeProcesses(b *textBuf, s *Snapshot) {
	headed := false
	for i := range s.GPUs {
		g := &s.GPUs[i]
		if g.labels == nil {
			continue
		}
		for _, p := range g.Processes {
			if !headed {
				family(b, "gpuwarden_gpu_process_memory_bytes", "GPU memory used by a process, with the Slurm job or Kubernetes pod it belongs to (up to 16 processes a GPU, most memory first).", "gauge")
				headed = true
			}
			o := p.Owner
			kv := []string{"gpu", g.labels[0], "UUID", g.labels[1], "pci_bus_id", g.labels[2],
				"pid", strconv.FormatUint(uint64(p.PID), 10), "hpc_job", o.SlurmJob, "pod_uid", o.PodUID, "container_id", o.ContainerID}
			if o.PodName != "" {
				// Names from the kubelet, checked to be DNS-1123 names there.
				kv = append(kv, "namespace", o.PodNamespace, "pod", o.PodName)
			}
			sample(b, "gpuwarden_gpu_process_memory_bytes", labelSet(kv...), float64(p.UsedMemory))
		}
	}
}
