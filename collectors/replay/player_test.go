package replay

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Run sleeps until the next record is due instead of polling: records
// arrive no earlier than their time, and an idle stretch of the trace costs
// no wake-ups beyond one a record (a 50 ms ticker woke 12 times here).
func TestRunWakesOnlyWhenARecordIsDue(t *testing.T) {
	trace := goodHeader + "\n" +
		`{"t":0.2,"kmsg":"6,1,200000,-;first"}` + "\n" +
		`{"t":0.6,"kmsg":"6,2,600000,-;second"}` + "\n"
	tr, err := Read(strings.NewReader(trace), "t")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	var at []time.Duration
	arrived := make(chan struct{}, 2)
	var p *Player
	p = NewPlayer(tr, PlayerOptions{Kmsg: func(raw string) {
		mu.Lock()
		got = append(got, raw)
		at = append(at, time.Since(p.start))
		mu.Unlock()
		arrived <- struct{}{}
	}})
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the records did not arrive")
		}
	}
	mu.Lock()
	if len(got) != 2 || !strings.HasSuffix(got[0], "first") || !strings.HasSuffix(got[1], "second") {
		t.Errorf("records %q", got)
	}
	if at[0] < 200*time.Millisecond || at[1] < 600*time.Millisecond {
		t.Errorf("records arrived early: at %v", at)
	}
	mu.Unlock()
	// The trace has nothing more and does not loop: Run sleeps.
	if w := p.wakes.Load(); w > 2 {
		t.Errorf("Run woke %d times for 2 records", w)
	}
	cancel()
	<-done
}

// A looping trace's idle player wakes for its records and at each loop's
// end, not more.
func TestALoopingRunWakesAtTheLoopsEnd(t *testing.T) {
	header := strings.Replace(goodHeader, `"duration_s":10`, `"duration_s":0.3`, 1)
	tr, err := Read(strings.NewReader(header+"\n"+`{"t":0.1,"kmsg":"6,1,100000,-;tick"}`+"\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	arrived := make(chan struct{}, 16)
	p := NewPlayer(tr, PlayerOptions{Loop: true, Kmsg: func(string) { arrived <- struct{}{} }})
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for range 3 { // three loops
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the record did not come round again")
		}
	}
	cancel()
	<-done
	// Three records and two loop ends (a third at most): a wake-up each.
	if w := p.wakes.Load(); w > 6 {
		t.Errorf("Run woke %d times for 3 loops of one record", w)
	}
}

// A call in a replayed hang returns when the hang's time has passed,
// not before, under the real clock.
func TestAHangEndsAtItsTime(t *testing.T) {
	tr, err := Read(strings.NewReader(goodHeader+"\n"+`{"t":0,"hang_s":0.3}`+"\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	p := NewPlayer(tr, PlayerOptions{})
	defer p.Close()
	start := time.Now()
	if !p.wait(0) {
		t.Fatal("wait failed")
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("the hang ended after %v, want 300ms", el)
	}
}
