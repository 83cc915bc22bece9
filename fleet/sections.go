package fleet

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
)

// Xids per GPU over the window; shared by the unhealthy and Xid sections.
const xidByGPU = "sum by (instance, gpu, xid) (increase(gpuwarden_xid_errors_total[{w}])) > 0"

func actionRank(a event.Action) int { return slices.Index(event.Actions, a) }

func buildUnhealthy(ctx context.Context, r *run, s *Section) error {
	if ok, err := r.scraped(ctx, "gpuwarden_health"); err != nil {
		return err
	} else if !ok {
		noData(s, "gpuwarden_health")
		return nil
	}
	hosts, err := r.query(ctx, "gpuwarden_health > 0")
	if err != nil {
		return err
	}
	gpus, err := r.query(ctx, "gpuwarden_gpu_health > 0")
	if err != nil {
		return err
	}
	lost, err := r.query(ctx, r.expr("max by (instance, gpu) (max_over_time(gpuwarden_gpu_lost[{w}])) > 0"))
	if err != nil {
		return err
	}
	xids, err := r.query(ctx, r.expr(xidByGPU))
	if err != nil {
		return err
	}
	type gpuKey struct{ instance, gpu string }
	type finding struct {
		level   event.Level
		reasons []string
		action  event.Action
	}
	found := map[gpuKey]*finding{}
	get := func(k gpuKey) *finding {
		if found[k] == nil {
			found[k] = &finding{action: event.ActionNone}
		}
		return found[k]
	}
	for _, x := range gpus {
		f := get(gpuKey{x.Labels["instance"], x.Labels["gpu"]})
		f.level = event.Worse(f.level, levelOf(x.Value))
	}
	for _, x := range lost {
		f := get(gpuKey{x.Labels["instance"], x.Labels["gpu"]})
		f.level = event.Critical
		f.reasons = append(f.reasons, "lost (fell off the bus) in the window")
		if e := xid.Lookup(event.KindXid, 79); actionRank(e.Action) > actionRank(f.action) {
			f.action = e.Action
		}
	}
	for _, x := range xids {
		k := gpuKey{x.Labels["instance"], x.Labels["gpu"]}
		f := found[k]
		if f == nil {
			continue // an Xid on a GPU that is healthy again: the Xid section has it
		}
		code, _ := strconv.Atoi(x.Labels["xid"])
		e := xid.Lookup(event.KindXid, code)
		f.reasons = append(f.reasons, fmt.Sprintf("Xid %s x%s (%s)", x.Labels["xid"], count(x.Value), meaning(e)))
		if actionRank(e.Action) > actionRank(f.action) {
			f.action = e.Action
		}
	}
	withGPU := map[string]bool{}
	for k, f := range found {
		withGPU[k.instance] = true
		if len(f.reasons) == 0 {
			f.reasons = []string{"GPU health " + f.level.String() + " (`gpuwarden check` on the node says why)"}
		}
		sort.Strings(f.reasons)
		s.Level = event.Worse(s.Level, f.level)
		s.Rows = append(s.Rows, Row{"node": r.node(k.instance), "instance": k.instance, "gpu": k.gpu, "health": f.level.String(),
			"reason": strings.Join(f.reasons, "; "), "action": string(f.action)})
	}
	for _, x := range hosts {
		inst := x.Labels["instance"]
		l := levelOf(x.Value)
		if l == event.Unknown {
			l = event.Warning // a host that cannot tell is worth a look, not a page
		}
		s.Level = event.Worse(s.Level, l)
		if withGPU[inst] {
			continue
		}
		s.Rows = append(s.Rows, Row{"node": r.node(inst), "instance": inst, "gpu": "-", "health": levelOf(x.Value).String(),
			"reason": "host health " + levelOf(x.Value).String() + " (`gpuwarden check` on the node says why)", "action": "see the node's report"})
	}
	sortRows(s.Rows, "node", "gpu")
	return nil
}

func meaning(e xid.Entry) string {
	if !e.Known {
		return "not in the catalog"
	}
	if e.Mnemonic != "" {
		return e.Mnemonic
	}
	return e.Meaning
}

func buildXid(ctx context.Context, r *run, s *Section) error {
	if ok, err := r.scraped(ctx, "gpuwarden_xid_errors_total"); err != nil {
		return err
	} else if !ok {
		// The counter appears with the first Xid of a boot: none anywhere
		// is most likely a quiet fleet, but say what is known.
		noData(s, "gpuwarden_xid_errors_total")
		s.Notes = append(s.Notes, "the counter appears with a node's first Xid; none in the window on any node")
		return nil
	}
	per, err := r.query(ctx, r.expr(xidByGPU))
	if err != nil {
		return err
	}
	type agg struct {
		n     float64
		nodes map[string]bool
	}
	by := map[string]*agg{}
	for _, x := range per {
		a := by[x.Labels["xid"]]
		if a == nil {
			a = &agg{nodes: map[string]bool{}}
			by[x.Labels["xid"]] = a
		}
		a.n += x.Value
		a.nodes[x.Labels["instance"]] = true
	}
	codes := make([]string, 0, len(by))
	for c := range by {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool {
		if by[codes[i]].n != by[codes[j]].n {
			return by[codes[i]].n > by[codes[j]].n
		}
		return codes[i] < codes[j]
	})
	if len(codes) > r.opt.Top {
		s.Notes = append(s.Notes, fmt.Sprintf("%d more codes not shown (--top)", len(codes)-r.opt.Top))
		codes = codes[:r.opt.Top]
	}
	for _, c := range codes {
		code, err := strconv.Atoi(c)
		e := xid.Entry{}
		if err == nil {
			e = xid.Lookup(event.KindXid, code)
		}
		row := Row{"xid": c, "count": count(by[c].n), "nodes": strconv.Itoa(len(by[c].nodes)), "meaning": meaning(e)}
		if e.Known {
			row["severity"], row["action"] = e.Severity.String(), string(e.Action)
		} else {
			row["severity"], row["action"] = "unknown", "see the node's report"
		}
		s.Rows = append(s.Rows, row)
	}
	return nil
}

// idleSource is one way to tell an idle GPU, in order of preference.
type idleSource struct {
	metric string
	scale  float64 // threshold multiplier: SM_ACTIVE is 0..1, GPU_UTIL 0..100
	unless string  // GPUs judged by an earlier source are left out
}

var idleSources = []idleSource{
	{"DCGM_FI_PROF_SM_ACTIVE", 1, ""},
	{"DCGM_FI_DEV_GPU_UTIL", 100, " unless on (instance, gpu) last_over_time(DCGM_FI_PROF_SM_ACTIVE[{w}])"},
}

func buildIdle(ctx context.Context, r *run, s *Section) error {
	hours := r.opt.Window.Hours()
	total, judged := 0.0, 0
	for i, src := range idleSources {
		ok, err := r.scraped(ctx, src.metric)
		if err != nil {
			return err
		}
		if !ok {
			noData(s, src.metric)
			continue
		}
		thr := strconv.FormatFloat(r.opt.IdleBelow*src.scale, 'g', -1, 64)
		// Idle GPU-hours: the fraction of the window below the threshold
		// times the window's hours.
		frac, err := r.query(ctx, r.expr(fmt.Sprintf("avg_over_time((%s < bool %s)[{w}:{step}])%s", src.metric, thr, src.unless)))
		if err != nil {
			return err
		}
		avg, err := r.query(ctx, r.expr(fmt.Sprintf("avg_over_time(%s[{w}])%s", src.metric, src.unless)))
		if err != nil {
			return err
		}
		avgBy := map[string]float64{}
		for _, x := range avg {
			avgBy[x.Labels["instance"]+"\x00"+x.Labels["gpu"]] = x.Value
		}
		judged += len(frac)
		if i > 0 && len(frac) > 0 {
			s.Notes = append(s.Notes, fmt.Sprintf("%d GPUs have no %s (no profiling): judged by %s below %s %%", len(frac), idleSources[0].metric, src.metric, thr))
		}
		for _, x := range frac {
			if x.Value == 0 {
				continue
			}
			h := x.Value * hours
			total += h
			a := avgBy[x.Labels["instance"]+"\x00"+x.Labels["gpu"]]
			act := strconv.FormatFloat(a*100/src.scale, 'f', 1, 64) + " %"
			s.Rows = append(s.Rows, Row{"node": r.node(x.Labels["instance"]), "instance": x.Labels["instance"], "gpu": x.Labels["gpu"],
				"source": src.metric, "idle_gpu_hours": strconv.FormatFloat(h, 'f', 2, 64), "avg_activity": act})
		}
	}
	if judged == 0 {
		return nil
	}
	sort.SliceStable(s.Rows, func(i, j int) bool {
		a, _ := strconv.ParseFloat(s.Rows[i]["idle_gpu_hours"], 64)
		b, _ := strconv.ParseFloat(s.Rows[j]["idle_gpu_hours"], 64)
		return a > b
	})
	s.Notes = append(s.Notes, fmt.Sprintf("%.2f idle GPU-hours in %s over %d GPUs (below %g SM activity)", total, r.win, judged, r.opt.IdleBelow))
	if len(s.Rows) > r.opt.Top {
		s.Notes = append(s.Notes, fmt.Sprintf("%d more GPUs not shown (--top)", len(s.Rows)-r.opt.Top))
		s.Rows = s.Rows[:r.opt.Top]
	}
	return nil
}

// nodeFlag is a section listing the nodes where one 0/1 (or check) series
// has a value.
func nodeFlag(ctx context.Context, r *run, s *Section, selector, cond string, level event.Level) error {
	ok, err := r.scraped(ctx, selector)
	if err != nil {
		return err
	}
	if !ok {
		noData(s, selector)
		return nil
	}
	xs, err := r.query(ctx, selector+" "+cond)
	if err != nil {
		return err
	}
	for _, x := range xs {
		s.Rows = append(s.Rows, Row{"node": r.node(x.Labels["instance"]), "instance": x.Labels["instance"]})
		s.Level = level
	}
	sortRows(s.Rows, "node")
	return nil
}

func buildNextBoot(ctx context.Context, r *run, s *Section) error {
	return nodeFlag(ctx, r, s, `gpuwarden_check_status{check="next_boot_module"}`, "== 2", event.Warning)
}

func buildMismatch(ctx context.Context, r *run, s *Section) error {
	return nodeFlag(ctx, r, s, "gpuwarden_driver_library_mismatch", "== 1", event.Critical)
}

func buildRebootPending(ctx context.Context, r *run, s *Section) error {
	return nodeFlag(ctx, r, s, "gpuwarden_reboot_pending", "== 1", event.Warning)
}

// buildAgents finds agents down (their target's up is 0) and stale (no
// fresh gpuwarden_build_info for StaleAfter, although the window has one).
// The two overlap on purpose: up needs the target to be scraped (and, at a
// global level, up to be federated); staleness also catches a shard that is
// gone and a target dropped from service discovery. An agent silent for the
// whole window is not seen by staleness: up, or the shard's own alert, has it.
func buildAgents(ctx context.Context, r *run, s *Section) error {
	type st struct {
		down, stale bool
		ago         float64
	}
	by := map[string]*st{}
	get := func(i string) *st {
		if by[i] == nil {
			by[i] = &st{ago: -1}
		}
		return by[i]
	}
	upScraped, err := r.scraped(ctx, "up{job="+jobMatcher(r.opt.Job)+"}")
	if err != nil {
		return err
	}
	if !upScraped {
		noData(s, "up{job="+jobMatcher(r.opt.Job)+"}")
		s.Notes = append(s.Notes, "down is judged by staleness alone (federate up{job=...} too, or set --job)")
	} else {
		down, err := r.query(ctx, r.expr("up{job={job}} == 0"))
		if err != nil {
			return err
		}
		for _, x := range down {
			get(x.Labels["instance"]).down = true
		}
	}
	if ok, err := r.scraped(ctx, "gpuwarden_build_info"); err != nil {
		return err
	} else if !ok {
		noData(s, "gpuwarden_build_info")
	} else {
		// The newest sample of each agent, by subquery: timestamp() sees
		// only samples that are not stale.
		stepS := max(r.opt.StaleAfter/3, time.Second).Truncate(time.Second)
		age, err := r.query(ctx, fmt.Sprintf("time() - max by (instance) (max_over_time(timestamp(gpuwarden_build_info)[%s:%s]))",
			r.win, strconv.Itoa(int(stepS.Seconds()))+"s"))
		if err != nil {
			return err
		}
		for _, x := range age {
			if x.Value > r.opt.StaleAfter.Seconds() {
				a := get(x.Labels["instance"])
				a.stale, a.ago = true, x.Value
			} else if a := by[x.Labels["instance"]]; a != nil {
				a.ago = x.Value
			}
		}
	}
	for inst, a := range by {
		state := []string{}
		if a.down {
			state = append(state, "down (up == 0)")
		}
		if a.stale {
			state = append(state, "stale")
		}
		seen := "not in the window"
		if a.ago >= 0 {
			seen = (time.Duration(a.ago) * time.Second).String() + " ago"
		}
		s.Rows = append(s.Rows, Row{"node": r.node(inst), "instance": inst, "state": strings.Join(state, ", "), "last_seen": seen})
		s.Level = event.Critical
	}
	sortRows(s.Rows, "node")
	return nil
}

func buildRemediation(ctx context.Context, r *run, s *Section) error {
	if ok, err := r.scraped(ctx, "gpuwarden_remediation_breaker_open"); err != nil {
		return err
	} else if !ok {
		noData(s, "gpuwarden_remediation_breaker_open")
		s.Notes = append(s.Notes, "remediation is not enabled on any node")
		return nil
	}
	acts, err := r.query(ctx, r.expr("sum by (instance, outcome) (increase(gpuwarden_remediation_actions_total[{w}])) > 0"))
	if err != nil {
		return err
	}
	held, err := r.query(ctx, r.expr("sum by (instance, reason) (increase(gpuwarden_remediation_suppressed_total[{w}])) > 0"))
	if err != nil {
		return err
	}
	open, err := r.query(ctx, "gpuwarden_remediation_breaker_open == 1")
	if err != nil {
		return err
	}
	rows := map[string]Row{}
	get := func(inst string) Row {
		if rows[inst] == nil {
			rows[inst] = Row{"node": r.node(inst), "instance": inst, "ran": "0", "would_run": "0", "failed": "0", "held": "0", "breaker": "closed"}
		}
		return rows[inst]
	}
	for _, x := range acts {
		if o := x.Labels["outcome"]; o == "ran" || o == "would_run" || o == "failed" {
			get(x.Labels["instance"])[o] = count(x.Value)
			if o == "failed" {
				s.Level = event.Worse(s.Level, event.Warning)
			}
		}
	}
	heldBy := map[string][]string{}
	heldN := map[string]float64{}
	for _, x := range held {
		inst := x.Labels["instance"]
		heldN[inst] += x.Value
		heldBy[inst] = append(heldBy[inst], x.Labels["reason"]+" "+count(x.Value))
	}
	for inst, n := range heldN {
		sort.Strings(heldBy[inst])
		get(inst)["held"] = count(n) + " (" + strings.Join(heldBy[inst], ", ") + ")"
	}
	for _, x := range open {
		get(x.Labels["instance"])["breaker"] = "open"
		s.Level = event.Worse(s.Level, event.Warning)
	}
	for _, row := range rows {
		s.Rows = append(s.Rows, row)
	}
	sortRows(s.Rows, "node")
	return nil
}
