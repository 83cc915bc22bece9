package agent

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// The ring holds the newest events that fit, newest first, the same as a
// list that drops its oldest, while its slots grow as events come (with
// the oldest anywhere in them when it grows); an idle ring holds no slots.
func TestTheRingKeepsTheNewestInOrderAsItGrows(t *testing.T) {
	const max, maxBytes = 100, 40_000
	r := NewEventRing(max, maxBytes)
	if len(r.buf) != 0 {
		t.Fatalf("a new ring has %d slots", len(r.buf))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var want []event.Event
	wantBytes := 0
	for i := range 2000 {
		// Long events for a while (the bytes bound the ring, the oldest
		// moves on), then short ones (the count does, and the ring grows).
		long := 0
		if i/150%2 == 0 {
			long = 1000
		}
		ev := event.Event{Raw: strconv.Itoa(i) + strings.Repeat("x", long+rng.IntN(200))}
		w := eventBytes(&ev)
		for len(want) > 0 && (len(want) == max || wantBytes+w > maxBytes) {
			wantBytes -= eventBytes(&want[0])
			want = want[1:]
		}
		want = append(want, ev)
		wantBytes += w
		r.Add(ev)
		got := r.Recent(max+1, nil)
		if len(got) != len(want) || r.Bytes() != wantBytes {
			t.Fatalf("after %d events: %d held (%d bytes), want %d (%d bytes)", i+1, len(got), r.Bytes(), len(want), wantBytes)
		}
		for j := range got {
			if got[j].Raw != want[len(want)-1-j].Raw {
				t.Fatalf("after %d events: the %d-th newest is %.8q, want %.8q", i+1, j, got[j].Raw, want[len(want)-1-j].Raw)
			}
		}
		if i == 5 && len(r.buf) > 16 {
			t.Fatalf("%d slots for 6 events", len(r.buf))
		}
	}
	if len(r.buf) > max {
		t.Fatalf("%d slots, more than %d", len(r.buf), max)
	}
}
