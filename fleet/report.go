package fleet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// Options says what the report covers.
type Options struct {
	// Window is how far back counts, averages and "last seen" reach.
	Window time.Duration
	// Job is the scrape job of the agents, for up{job=...}.
	Job string
	// StaleAfter: an agent whose gpuwarden_build_info is older than this
	// is stale (about 3 scrape intervals).
	StaleAfter time.Duration
	// IdleBelow is the SM activity (0..1) under which a GPU is idle;
	// GPU_UTIL, where profiling is absent, is compared with 100 times it.
	IdleBelow float64
	// Top bounds the Xid and idle rows.
	Top int
	// Now is the evaluation time of every query (one instant for all).
	Now time.Time
}

// Row is one line of a section, by column name.
type Row map[string]string

// Section is one part of the report. It stands on its own: a query that
// fails there is reported there (Error, level unknown) and the other
// sections are still answered.
type Section struct {
	Name    string      `json:"name"`
	Title   string      `json:"title"`
	Level   event.Level `json:"level"`
	Error   string      `json:"error,omitempty"`
	NoData  []string    `json:"no_data,omitempty"`
	Notes   []string    `json:"notes,omitempty"`
	Columns []string    `json:"columns"`
	Rows    []Row       `json:"rows"`
}

// Report is the whole answer.
type Report struct {
	Prometheus string      `json:"prometheus"`
	Window     string      `json:"window"`
	Time       time.Time   `json:"time"`
	Level      event.Level `json:"level"`
	// Error is set when the server could not be asked at all (level unknown).
	Error    string    `json:"error,omitempty"`
	Sections []Section `json:"sections"`
}

// section is one entry of the report's table of sections.
type section struct {
	name, title string
	columns     []string
	build       func(ctx context.Context, r *run, s *Section) error
}

// sections is the report, in order. A new section is one row here and
// one build function.
var sections = []section{
	{"unhealthy", "Unhealthy nodes and GPUs", []string{"node", "gpu", "health", "reason", "action"}, buildUnhealthy},
	{"xid", "Top Xid codes", []string{"xid", "count", "nodes", "severity", "meaning", "action"}, buildXid},
	{"idle", "Idle GPUs", []string{"node", "gpu", "source", "idle_gpu_hours", "avg_activity"}, buildIdle},
	{"next_boot_module", "Next boot kernel has no NVIDIA module", []string{"node", "instance"}, buildNextBoot},
	{"driver_library_mismatch", "Driver and library versions differ", []string{"node", "instance"}, buildMismatch},
	{"reboot_pending", "Reboot pending", []string{"node", "instance"}, buildRebootPending},
	{"agents", "Agents down or stale", []string{"node", "instance", "state", "last_seen"}, buildAgents},
	{"remediation", "Remediation", []string{"node", "ran", "would_run", "failed", "held", "breaker"}, buildRemediation},
}

// run is one report in the making: the options, the querier and the
// answers so far (a query two sections share is asked once).
type run struct {
	q     Querier
	opt   Options
	win   string // the window in PromQL duration syntax
	cache map[string]answer
	nodes map[string]string // instance -> Hostname
}

type answer struct {
	s   []Sample
	err error
}

func (r *run) query(ctx context.Context, expr string) ([]Sample, error) {
	if a, ok := r.cache[expr]; ok {
		return a.s, a.err
	}
	s, err := r.q.Query(ctx, expr, r.opt.Now)
	if err != nil {
		err = fmt.Errorf("%s: %w", expr, err)
	}
	r.cache[expr] = answer{s, err}
	return s, err
}

// expr fills {w} (the window) and {step} (a subquery step) in a template.
func (r *run) expr(tmpl string) string {
	return strings.NewReplacer("{w}", r.win, "{step}", r.step(), "{job}", jobMatcher(r.opt.Job)).Replace(tmpl)
}

// step is the subquery resolution: 1/120 of the window, at least 1s.
func (r *run) step() string {
	s := max(r.opt.Window/120, time.Second).Truncate(time.Second)
	return model.Duration(s).String()
}

func jobMatcher(job string) string { return strconv.Quote(job) }

// scraped reports whether any series matches selector within the window, so
// an empty answer can say "not scraped" rather than "none".
func (r *run) scraped(ctx context.Context, selector string) (bool, error) {
	s, err := r.query(ctx, r.expr("count(last_over_time("+selector+"[{w}]))"))
	return len(s) > 0, err
}

// noData records a missing metric in the section.
func noData(s *Section, metric string) {
	s.NoData = append(s.NoData, "no data: "+metric+" not scraped")
}

// node names an instance by the Hostname its GPUs carry, else by itself.
func (r *run) node(instance string) string {
	if h := r.nodes[instance]; h != "" {
		return h
	}
	return instance
}

// Build asks q for every section. When the server cannot be asked at all
// (the vector(1) probe fails) the report carries that error at level unknown
// and no sections; otherwise each section carries its own error, if any.
func Build(ctx context.Context, q Querier, opt Options, server string) *Report {
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	if opt.Top <= 0 {
		opt.Top = 10
	}
	rep := &Report{Prometheus: server, Window: model.Duration(opt.Window).String(), Time: opt.Now.UTC(), Sections: []Section{}}
	r := &run{q: q, opt: opt, win: rep.Window, cache: map[string]answer{}, nodes: map[string]string{}}
	if _, err := q.Query(ctx, "vector(1)", opt.Now); err != nil {
		rep.Level = event.Unknown
		rep.Error = err.Error()
		return rep
	}
	// Host names for the node column; without them rows name the instance.
	if s, err := r.query(ctx, r.expr("max by (instance, Hostname) (last_over_time(gpuwarden_gpu_info[{w}]))")); err == nil {
		for _, x := range s {
			r.nodes[x.Labels["instance"]] = x.Labels["Hostname"]
		}
	}
	for _, def := range sections {
		s := Section{Name: def.name, Title: def.title, Columns: def.columns, Rows: []Row{}}
		if err := def.build(ctx, r, &s); err != nil {
			s.Level, s.Error, s.Rows = event.Unknown, err.Error(), []Row{}
			var ue *UnreachableError
			if errors.As(err, &ue) {
				s.Error = "could not ask: " + err.Error()
			}
		}
		rep.Level = event.Worse(rep.Level, s.Level)
		rep.Sections = append(rep.Sections, s)
	}
	return rep
}

func levelOf(v float64) event.Level {
	switch int(v) {
	case 0:
		return event.OK
	case 1:
		return event.Warning
	case 2:
		return event.Critical
	default:
		return event.Unknown
	}
}

// count formats an increase() result, which extrapolates, as a whole count.
func count(v float64) string {
	return strconv.FormatFloat(math.Max(1, math.Round(v)), 'f', 0, 64)
}

func sortRows(rows []Row, keys ...string) {
	sort.SliceStable(rows, func(i, j int) bool {
		for _, k := range keys {
			a, b := rows[i][k], rows[j][k]
			if a == b {
				continue
			}
			// Numbers (GPU indexes) in numeric order.
			if x, err1 := strconv.Atoi(a); err1 == nil {
				if y, err2 := strconv.Atoi(b); err2 == nil {
					return x < y
				}
			}
			return a < b
		}
		return false
	})
}
