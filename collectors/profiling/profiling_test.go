package profiling

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/source"
)

func TestOnlyOneSourceOwnsTheCounters(t *testing.T) {
	var r Registry
	if !r.Claim(OwnerDCGM) {
		t.Fatal("the first claim failed")
	}
	if !r.Claim(OwnerDCGM) {
		t.Fatal("the owner's second claim failed")
	}
	if r.Claim(OwnerGPM) {
		t.Fatal("a second owner's claim succeeded")
	}
	r.Release(OwnerGPM) // not the owner: no effect
	if got := r.Owner(); got != OwnerDCGM {
		t.Fatalf("owner %q after another's release, want dcgm", got)
	}
	r.Release(OwnerDCGM)
	if got := r.Owner(); got != "" {
		t.Fatalf("owner %q after release, want none", got)
	}
	if !r.Claim(OwnerGPM) {
		t.Fatal("a claim after release failed")
	}
	if r.Claim("") {
		t.Fatal("an empty owner claimed the counters")
	}
}

func TestAPauseRunsOutByItself(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	r := Registry{Now: func() time.Time { return now }}
	until, err := r.PauseFor(time.Hour, "uid 0 pid 7")
	if err != nil {
		t.Fatal(err)
	}
	if p, u := r.Paused(); !p || !u.Equal(until) {
		t.Fatalf("paused %v until %v, want true until %v", p, u, until)
	}
	if st := r.Status(); st.By != "uid 0 pid 7" {
		t.Fatalf("paused by %q", st.By)
	}
	now = now.Add(time.Hour)
	if p, _ := r.Paused(); p {
		t.Fatal("still paused when the pause ran out")
	}
	if st := r.Status(); st.By != "" {
		t.Fatalf("a run-out pause still names %q", st.By)
	}
}

func TestAPauseOverTheLimitIsRefusedNotShortened(t *testing.T) {
	var r Registry
	for _, d := range []time.Duration{0, -time.Second, MaxPause + time.Second} {
		if _, err := r.PauseFor(d, "x"); err == nil {
			t.Errorf("PauseFor(%s) accepted", d)
		}
	}
	if p, _ := r.Paused(); p {
		t.Fatal("a refused pause paused")
	}
	if _, err := r.PauseFor(MaxPause, "x"); err != nil {
		t.Fatalf("PauseFor(MaxPause): %v", err)
	}
	r.Resume()
	if p, _ := r.Paused(); p {
		t.Fatal("paused after resume")
	}
}

func TestThePausedGaugeFollowsPauseResumeAndExpiry(t *testing.T) {
	var r Registry
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var last []float64
	go r.Publish(ctx, func(m []source.Metric) {
		mu.Lock()
		defer mu.Unlock()
		if len(m) != 1 || m[0].Name != PausedMetricName {
			t.Errorf("series %+v", m)
			return
		}
		last = append(last, m[0].Value)
	})
	wait := func(want float64, n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			ok := len(last) >= n && last[len(last)-1] == want
			mu.Unlock()
			if ok {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("gauge history %v, want %d values ending in %v", last, n, want)
	}
	wait(0, 1)
	r.PauseFor(time.Hour, "a")
	wait(1, 2)
	r.Resume()
	wait(0, 3)
	r.PauseFor(50*time.Millisecond, "b")
	wait(1, 4)
	wait(0, 5) // ran out, without a call
}

func TestWhoPausedAndForHowLongIsInTheLog(t *testing.T) {
	var buf strings.Builder
	c := Control{Registry: &Registry{}, Log: slog.New(slog.NewTextHandler(&buf, nil))}
	if _, err := c.PauseProfiling(25*time.Hour, "uid 0 pid 9"); err == nil {
		t.Fatal("a 25h pause was accepted")
	}
	res, err := c.PauseProfiling(2*time.Hour, "uid 0 pid 10")
	if err != nil {
		t.Fatal(err)
	}
	if st := res.(Status); !st.Paused || st.By != "uid 0 pid 10" {
		t.Fatalf("status after pause %+v", st)
	}
	res, _ = c.ResumeProfiling("uid 0 pid 11")
	if st := res.(Status); st.Paused {
		t.Fatalf("status after resume %+v", st)
	}
	log := buf.String()
	for _, want := range []string{`msg="profiling pause refused" who="uid 0 pid 9"`, `msg="profiling paused: the profiling counters are released for a profiler" who="uid 0 pid 10" duration=2h0m0s`,
		`msg="profiling resumed" who="uid 0 pid 11" was_paused=true paused_by="uid 0 pid 10"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}
