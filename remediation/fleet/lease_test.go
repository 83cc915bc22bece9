package fleet

import (
	"github.com/gpuwarden/gpuwarden/internal/testenv"

	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func mustAllow(t *testing.T, g Guard, action string) (Decision, Release) {
	t.Helper()
	d, rel, err := g.Check(context.Background(), action)
	if err != nil || !d.Allowed {
		t.Fatalf("got %+v, err %v; want allowed", d, err)
	}
	return d, rel
}

func mustHold(t *testing.T, g Guard, action string) Decision {
	t.Helper()
	d, rel, err := g.Check(context.Background(), action)
	if err != nil || d.Allowed || rel != nil {
		t.Fatalf("got %+v, release %v, err %v; want held", d, rel != nil, err)
	}
	return d
}

func TestASecondHolderWaitsUntilTheFirstReleases(t *testing.T) {
	api := newFakeAPI(t)
	a, b := api.guard("node-a", 1), api.guard("node-b", 1)

	d, rel := mustAllow(t, a, "drain")
	if rel == nil || !strings.Contains(d.Reason, `gpu-ops/gpuwarden-disruption-0 (slot 1 of 1) as "node-a"`) {
		t.Fatalf("reason %q, release %v", d.Reason, rel != nil)
	}
	spec := api.spec("gpuwarden-disruption-0")
	if spec["holderIdentity"] != "node-a" || spec["leaseDurationSeconds"] != float64(600) || spec["acquireTime"] == nil || spec["renewTime"] == nil {
		t.Fatalf("stored spec %v", spec)
	}

	d = mustHold(t, b, "reboot")
	for _, want := range []string{"reboot held", "all 1 slots", `gpuwarden-disruption-0 held by "node-a" until`} {
		if !strings.Contains(d.Reason, want) {
			t.Errorf("reason %q lacks %q", d.Reason, want)
		}
	}

	if err := rel(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h, ok := api.spec("gpuwarden-disruption-0")["holderIdentity"]; ok {
		t.Fatalf("holderIdentity %v after release", h)
	}
	_, relB := mustAllow(t, b, "reboot")
	if got := api.spec("gpuwarden-disruption-0"); got["holderIdentity"] != "node-b" || got["leaseTransitions"] != float64(1) {
		t.Fatalf("stored spec %v", got)
	}
	// Releasing twice is harmless.
	if err := relB(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := relB(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestALapsedSlotIsTakenOver(t *testing.T) {
	api := newFakeAPI(t)
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	api.put("gpuwarden-disruption-0", "node-dead", start, 60)

	now := start.Add(30 * time.Second)
	b := api.guard("node-b", 1)
	b.Now = func() time.Time { return now }
	d := mustHold(t, b, "drain")
	if !strings.Contains(d.Reason, `held by "node-dead" until 2026-12-02T10:01:00Z`) {
		t.Fatalf("reason %q", d.Reason)
	}

	now = start.Add(61 * time.Second)
	d, _ = mustAllow(t, b, "drain")
	if !strings.Contains(d.Reason, `took over Lease gpu-ops/gpuwarden-disruption-0 from "node-dead" (lapsed)`) {
		t.Fatalf("reason %q", d.Reason)
	}
	spec := api.spec("gpuwarden-disruption-0")
	if spec["holderIdentity"] != "node-b" || spec["acquireTime"] != "2026-12-02T10:01:01.000000Z" || spec["leaseTransitions"] != float64(1) {
		t.Fatalf("stored spec %v", spec)
	}
	// The other writer's labels survived our PUT.
	api.mu.Lock()
	labels := api.leases["gpu-ops/gpuwarden-disruption-0"]["metadata"].(map[string]any)["labels"]
	api.mu.Unlock()
	if labels.(map[string]any)["owner"] != "someone-else" {
		t.Fatalf("labels %v", labels)
	}
}

func TestAConflictMovesOnToTheNextSlot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		present bool // slot 0 exists, free, before the race (PUT), or is absent (POST)
	}{{"create", false}, {"update", true}} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t)
			if tc.present {
				api.put("gpuwarden-disruption-0", "", time.Now(), 60)
			}
			raced := false
			api.beforeWrite = func(method, name string) {
				if name == "gpuwarden-disruption-0" && !raced {
					raced = true
					api.put(name, "node-racer", time.Now(), 600)
				}
			}
			d, rel := mustAllow(t, api.guard("node-a", 2), "drain")
			if !raced || !strings.Contains(d.Reason, "gpuwarden-disruption-1 (slot 2 of 2)") {
				t.Fatalf("raced %v, reason %q", raced, d.Reason)
			}
			if api.spec("gpuwarden-disruption-0")["holderIdentity"] != "node-racer" || api.spec("gpuwarden-disruption-1")["holderIdentity"] != "node-a" {
				t.Fatalf("slots %v, %v", api.spec("gpuwarden-disruption-0"), api.spec("gpuwarden-disruption-1"))
			}
			rel(context.Background())
			if _, ok := api.spec("gpuwarden-disruption-1")["holderIdentity"]; ok {
				t.Fatal("slot 1 still held after release")
			}
		})
	}
	t.Run("the last slot", func(t *testing.T) {
		api := newFakeAPI(t)
		api.beforeWrite = func(method, name string) { api.put(name, "node-racer", time.Now(), 600) }
		d := mustHold(t, api.guard("node-a", 1), "drain")
		if !strings.Contains(d.Reason, "gpuwarden-disruption-0 taken by a concurrent update (409)") {
			t.Fatalf("reason %q", d.Reason)
		}
	})
}

// A node that rebooted while holding a slot finds it again rather than
// taking a second one, and can release it.
func TestAHolderThatAlreadyHoldsASlotRenewsIt(t *testing.T) {
	api := newFakeAPI(t)
	api.put("gpuwarden-disruption-0", "node-b", time.Now(), 600)
	api.put("gpuwarden-disruption-1", "node-a", time.Now().Add(-time.Minute), 600)
	a := api.guard("node-a", 3)
	d, rel := mustAllow(t, a, "reboot")
	if !strings.Contains(d.Reason, "renewed Lease gpu-ops/gpuwarden-disruption-1") {
		t.Fatalf("reason %q", d.Reason)
	}
	if api.spec("gpuwarden-disruption-2") != nil {
		t.Fatal("a second slot was taken")
	}
	if err := rel(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := api.spec("gpuwarden-disruption-1")["holderIdentity"]; ok {
		t.Fatal("still held after release")
	}
}

func TestReleasingASlotThatLapsedToAnotherNodeSaysSo(t *testing.T) {
	api := newFakeAPI(t)
	_, rel := mustAllow(t, api.guard("node-a", 1), "drain")
	api.mu.Lock()
	api.put("gpuwarden-disruption-0", "node-b", time.Now(), 600)
	api.mu.Unlock()
	err := rel(context.Background())
	if err == nil || !strings.Contains(err.Error(), `held by "node-b"`) {
		t.Fatalf("got %v", err)
	}
	if api.spec("gpuwarden-disruption-0")["holderIdentity"] != "node-b" {
		t.Fatal("release cleared another node's slot")
	}
}

func TestInClusterConfigFromTheEnvironment(t *testing.T) {
	api := newFakeAPI(t)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(api.srv.URL, "https://"))
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	g := api.guard("node-a", 1)
	g.Server = ""
	mustAllow(t, g, "drain")

	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	g = api.guard("node-b", 1)
	g.Server = ""
	if d := mustHold(t, g, "drain"); !strings.Contains(d.Reason, "not in a cluster") {
		t.Fatalf("reason %q", d.Reason)
	}
}

func TestTheAPIServerFailingHoldsTheAction(t *testing.T) {
	api := newFakeAPI(t)
	ctx := context.Background()

	g := api.guard("node-a", 1)
	g.Server = "https://" + testenv.FreeAddr(t)
	if d := mustHold(t, g, "drain"); !strings.Contains(d.Reason, "fail closed") || !strings.Contains(d.Reason, "unreachable") || !strings.Contains(d.Reason, g.Server) {
		t.Fatalf("reason %q", d.Reason)
	}

	api.token = "rotated"
	if d := mustHold(t, api.guard("node-a", 1), "drain"); !strings.Contains(d.Reason, "HTTP 401 Unauthorized") {
		t.Fatalf("reason %q", d.Reason)
	}
	api.token = "sa-token"

	g = api.guard("node-a", 1)
	g.CAFile = ""
	if d := mustHold(t, g, "drain"); !strings.Contains(d.Reason, "certificate") {
		t.Fatalf("reason %q", d.Reason)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if d, _, err := api.guard("node-a", 1).Check(cancelled, "drain"); !errors.Is(err, context.Canceled) || d.Allowed {
		t.Fatalf("cancelled: %+v, %v", d, err)
	}
}

func TestLeaseValidateNamesTheField(t *testing.T) {
	ok := Lease{Namespace: "gpu-ops", Prefix: "gpuwarden", Holder: "node-a", Limit: 2}
	for _, tc := range []struct {
		field string
		edit  func(*Lease)
	}{
		{"server", func(l *Lease) { l.Server = "http://api:6443" }},
		{"server", func(l *Lease) { l.Server = "https://" }},
		{"namespace", func(l *Lease) { l.Namespace = "" }},
		{"namespace", func(l *Lease) { l.Namespace = "GPU_ops" }},
		{"prefix", func(l *Lease) { l.Prefix = "" }},
		{"prefix", func(l *Lease) { l.Prefix = "a/b" }},
		{"holder", func(l *Lease) { l.Holder = "" }},
		{"limit", func(l *Lease) { l.Limit = 0 }},
		{"limit", func(l *Lease) { l.Limit = MaxLeaseLimit + 1 }},
		{"duration", func(l *Lease) { l.Duration = -time.Second }},
		{"timeout", func(l *Lease) { l.Timeout = -time.Second }},
	} {
		l := ok
		tc.edit(&l)
		err := l.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: got %v, want a FieldError for %s", l, err, tc.field)
		}
		if _, _, cerr := l.Check(context.Background(), "drain"); cerr == nil {
			t.Errorf("%+v: Check did not report the configuration error", l)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Whatever an API server answers for a Lease, reading it and writing it
// back held or released never panics and stays valid JSON.
func FuzzLeaseAnswer(f *testing.F) {
	for _, s := range []string{
		`{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"p-0","resourceVersion":"7"},"spec":{"holderIdentity":"node-a","leaseDurationSeconds":600,"acquireTime":"2026-12-02T10:00:00.000000Z","renewTime":"2026-12-02T10:00:00.000000Z","leaseTransitions":3}}`,
		`{"metadata":{},"spec":{"holderIdentity":"","leaseDurationSeconds":-5,"renewTime":"yesterday"}}`,
		`{"metadata":{"name":7},"spec":{"leaseDurationSeconds":2147483647,"renewTime":"9999-12-31T23:59:59.999999Z"}}`,
		`{"metadata":null,"spec":null}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		var s leaseObject
		if json.Unmarshal(body, &s) != nil {
			return
		}
		_, _ = s.expiry()
		_ = s.name()
		for _, h := range []string{s.holder(), "node-z", ""} {
			c := s
			c.hold(h, 600, now)
			if _, err := json.Marshal(&c); err != nil {
				t.Fatalf("re-encoding after hold(%q): %v", h, err)
			}
		}
	})
}
