package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// fakeQuerier answers by the first rule whose substring the expression
// contains; an expression no rule matches has an empty answer.
type fakeQuerier []struct {
	contains string
	samples  []Sample
	err      error
}

func (f fakeQuerier) Query(_ context.Context, expr string, _ time.Time) ([]Sample, error) {
	for _, r := range f {
		if strings.Contains(expr, r.contains) {
			return r.samples, r.err
		}
	}
	return nil, nil
}

func one(labels ...string) []Sample {
	l := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	return []Sample{{Labels: l, Value: 1}}
}

var opts = Options{Window: time.Hour, Job: "gpuwarden", StaleAfter: 3 * time.Minute, IdleBelow: 0.05, Now: time.Unix(1e9, 0)}

func sectionNamed(rep *Report, name string) Section {
	for _, s := range rep.Sections {
		if s.Name == name {
			return s
		}
	}
	return Section{}
}

func TestIdleFallsBackToGPUUtilWhereProfilingIsAbsent(t *testing.T) {
	q := fakeQuerier{
		{"count(last_over_time(DCGM_FI_DEV_GPU_UTIL[1h]))", one(), nil},
		{"avg_over_time((DCGM_FI_DEV_GPU_UTIL < bool 5)[1h:30s]) unless", one("instance", "n1:9400", "gpu", "2"), nil},
	}
	s := sectionNamed(Build(context.Background(), q, opts, "x"), "idle")
	if len(s.NoData) != 1 || s.NoData[0] != "no data: DCGM_FI_PROF_SM_ACTIVE not scraped" {
		t.Errorf("no_data %v", s.NoData)
	}
	if len(s.Rows) != 1 || s.Rows[0]["source"] != "DCGM_FI_DEV_GPU_UTIL" || s.Rows[0]["idle_gpu_hours"] != "1.00" {
		t.Errorf("rows %v", s.Rows)
	}
	if !strings.Contains(strings.Join(s.Notes, "\n"), "no profiling") {
		t.Errorf("the fallback is not said: %v", s.Notes)
	}
}

func TestAFailingQueryDegradesOnlyItsSection(t *testing.T) {
	q := fakeQuerier{
		{"gpuwarden_driver_library_mismatch", nil, errors.New("timeout: query timed out")},
		{"count(last_over_time(gpuwarden_reboot_pending[1h]))", one(), nil},
		{"gpuwarden_reboot_pending == 1", one("instance", "n1:9400"), nil},
	}
	rep := Build(context.Background(), q, opts, "x")
	if s := sectionNamed(rep, "driver_library_mismatch"); s.Level != event.Unknown || !strings.Contains(s.Error, "timed out") {
		t.Errorf("mismatch section: %+v", s)
	}
	if s := sectionNamed(rep, "reboot_pending"); s.Level != event.Warning || len(s.Rows) != 1 || s.Rows[0]["node"] != "n1:9400" {
		t.Errorf("reboot section: %+v", s)
	}
	if rep.Level != event.Warning {
		t.Errorf("report level %s, want warning (a warning outranks a section that could not tell)", rep.Level)
	}
}

func TestUnreachablePrometheusIsUnknown(t *testing.T) {
	q := fakeQuerier{{"vector(1)", nil, &UnreachableError{Err: errors.New("connection refused")}}}
	rep := Build(context.Background(), q, opts, "x")
	if rep.Level != event.Unknown || rep.Level.ExitCode() != 3 || !strings.Contains(rep.Error, "refused") {
		t.Errorf("%+v", rep)
	}
}

func TestTableEscapesLabelValues(t *testing.T) {
	q := fakeQuerier{
		{"count(last_over_time(gpuwarden_reboot_pending[1h]))", one(), nil},
		{"gpuwarden_reboot_pending == 1", one("instance", "evil\x1b[2J\n:9400"), nil},
	}
	var b strings.Builder
	if err := Build(context.Background(), q, opts, "x").WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "\x1b") || !strings.Contains(b.String(), "evil") {
		t.Errorf("label reached the terminal raw:\n%q", b.String())
	}
}

func TestAStaleAgentIsCritical(t *testing.T) {
	q := fakeQuerier{
		{"count(last_over_time(gpuwarden_build_info[1h]))", one(), nil},
		{"time() - max by (instance)", []Sample{{Labels: map[string]string{"instance": "n2:9400"}, Value: 600}, {Labels: map[string]string{"instance": "n1:9400"}, Value: 5}}, nil},
	}
	s := sectionNamed(Build(context.Background(), q, opts, "x"), "agents")
	if s.Level != event.Critical || len(s.Rows) != 1 || s.Rows[0]["state"] != "stale" || s.Rows[0]["last_seen"] != "10m0s ago" {
		t.Errorf("%+v", s)
	}
	if len(s.NoData) != 1 || !strings.Contains(s.NoData[0], `up{job="gpuwarden"}`) {
		t.Errorf("no_data %v", s.NoData)
	}
}
