package fleet

import (
	"github.com/gpuwarden/gpuwarden/internal/testenv"

	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// stub is a Guard with a fixed answer that records what happens to it.
type stub struct {
	name string
	d    Decision
	err  error
	log  *[]string
}

func (s *stub) Check(ctx context.Context, action string) (Decision, Release, error) {
	*s.log = append(*s.log, "check "+s.name)
	if !s.d.Allowed || s.err != nil {
		return s.d, nil, s.err
	}
	return s.d, func(context.Context) error { *s.log = append(*s.log, "release "+s.name); return nil }, nil
}

func TestAllGivesBackWhatEarlierGuardsTookWhenALaterOneHolds(t *testing.T) {
	var log []string
	g := All(
		&stub{name: "a", d: Decision{Allowed: true, Reason: "a ok"}, log: &log},
		&stub{name: "b", d: Decision{Allowed: true, Reason: "b ok"}, log: &log},
		&stub{name: "c", d: Decision{Reason: "c says no"}, log: &log},
		&stub{name: "d", d: Decision{Allowed: true}, log: &log},
	)
	d, rel, err := g.Check(context.Background(), "drain")
	if err != nil || d.Allowed || d.Reason != "c says no" || rel != nil {
		t.Fatalf("got %+v, %v, release %v", d, err, rel != nil)
	}
	want := []string{"check a", "check b", "check c", "release b", "release a"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
}

func TestAllOnAnErrorHoldsAndGivesBack(t *testing.T) {
	var log []string
	boom := errors.New("misconfigured")
	g := All(
		&stub{name: "a", d: Decision{Allowed: true}, log: &log},
		&stub{name: "b", d: Decision{Allowed: true, Reason: "b"}, err: boom, log: &log},
	)
	d, _, err := g.Check(context.Background(), "drain")
	if !errors.Is(err, boom) || d.Allowed {
		t.Fatalf("got %+v, %v", d, err)
	}
	if want := []string{"check a", "check b", "release a"}; !reflect.DeepEqual(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
}

func TestAllAllowsWhenEveryGuardDoesAndReleasesInReverse(t *testing.T) {
	var log []string
	g := All(
		&stub{name: "a", d: Decision{Allowed: true, Reason: "a ok"}, log: &log},
		&stub{name: "b", d: Decision{Allowed: true, Reason: "b failed open", FailedOpen: true}, log: &log},
	)
	d, rel, err := g.Check(context.Background(), "reboot")
	if err != nil || !d.Allowed || !d.FailedOpen || d.Reason != "a ok; b failed open" || rel == nil {
		t.Fatalf("got %+v, %v, release %v", d, err, rel != nil)
	}
	if err := rel(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"check a", "check b", "release b", "release a"}; !reflect.DeepEqual(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
}

// The Prometheus guard and a Lease together: the Lease slot taken first is
// given back when the query holds.
func TestAllWithALeaseAndAHoldingPrometheus(t *testing.T) {
	api := newFakeAPI(t)
	prom := &Prometheus{URL: "http://" + testenv.FreeAddr(t), Query: "up", Limit: 1}
	d, _, err := All(api.guard("node-a", 1), prom).Check(context.Background(), "drain")
	if err != nil || d.Allowed || !strings.Contains(d.Reason, "unreachable") {
		t.Fatalf("got %+v, %v", d, err)
	}
	if _, held := api.spec("gpuwarden-disruption-0")["holderIdentity"]; held {
		t.Fatal("the Lease slot was kept after Prometheus held the action")
	}
}

func TestAllWithNoGuardsAllowsSayingSo(t *testing.T) {
	d, rel, err := All().Check(context.Background(), "drain")
	if err != nil || !d.Allowed || rel != nil || d.Reason != "drain allowed: no fleet guard configured" {
		t.Fatalf("got %+v, %v, release %v", d, err, rel != nil)
	}
}
