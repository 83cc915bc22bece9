package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Defaults of the Lease guard.
const (
	DefaultLeaseDuration = time.Hour
	DefaultLeaseTimeout  = 5 * time.Second
	// The service account files a pod gets, used when Server is empty
	// (TokenFile: also when it is set but TokenFile is not).
	InClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	InClusterCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	// MaxLeaseLimit bounds the slots, each of which a Check reads.
	MaxLeaseLimit = 64
)

// microTime is the API server's MicroTime, always written in UTC.
const microTime = "2006-01-02T15:04:05.000000Z07:00"

// Lease is a counting semaphore of Kubernetes coordination.k8s.io/v1
// Leases: at most Limit nodes hold one of the slots <Prefix>-0 ..
// <Prefix>-(Limit-1) in Namespace at a time.
//
// A Check takes the slot this Holder already holds (a node that rebooted
// while holding one finds it again, renews it and gets its Release), else
// the first free one (absent, without a holder, or lapsed: renewTime, or
// acquireTime, plus leaseDurationSeconds is past), with an optimistic
// update: POST when the Lease is absent, PUT with the resourceVersion read
// otherwise. A 409 (someone else got there first) moves on to the next
// slot. When no slot is free the action is held, naming the holders. The
// API server being unreachable or refusing holds the action (fail closed).
//
// Release clears holderIdentity of the slot if it is still ours. A holder
// that dies keeps its slot for Duration, after which any node may take it:
// Duration is the longest a drain plus reboot may take before another node
// is let in.
//
// The service account needs get, create and update on leases in Namespace.
type Lease struct {
	// Server is the API server's https URL; empty uses the in-cluster
	// service (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT) with
	// the service account's token and CA.
	Server string `yaml:"server"`
	// TokenFile holds the bearer token, read for each request;
	// InClusterTokenFile when empty.
	TokenFile string `yaml:"token_file"`
	// CAFile verifies the server: InClusterCAFile when Server is empty,
	// the system roots when Server is set and CAFile is not.
	CAFile    string `yaml:"ca_file"`
	Namespace string `yaml:"namespace"`
	Prefix    string `yaml:"prefix"`
	// Holder is this node's name, written as holderIdentity.
	Holder string `yaml:"holder"`
	Limit  int    `yaml:"limit"`
	// Duration is leaseDurationSeconds (whole seconds, rounded up);
	// DefaultLeaseDuration when zero.
	Duration time.Duration `yaml:"duration"`
	// Timeout bounds each request; DefaultLeaseTimeout when zero.
	Timeout time.Duration `yaml:"timeout"`
	// Now is the clock; time.Now when nil.
	Now func() time.Time `yaml:"-"`
}

var (
	dnsLabel    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// Validate reports the first field that cannot work, as a *FieldError.
// Whether the in-cluster environment is there is known only at Check.
func (l *Lease) Validate() error {
	if l.Server != "" {
		u, err := url.Parse(l.Server)
		switch {
		case err != nil:
			return &FieldError{Field: "server", Err: err}
		case u.Scheme != "https":
			return fieldErr("server", fmt.Sprintf("scheme %q, want https", u.Scheme))
		case u.Host == "":
			return fieldErr("server", "no host")
		case u.RawQuery != "" || u.Fragment != "":
			return fieldErr("server", "must not have a query or fragment")
		}
	}
	switch {
	case l.Namespace == "":
		return fieldErr("namespace", "required")
	case len(l.Namespace) > 63 || !dnsLabel.MatchString(l.Namespace):
		return fieldErr("namespace", fmt.Sprintf("%q is not a DNS label (lower case letters, digits and '-', at most 63)", l.Namespace))
	case l.Prefix == "":
		return fieldErr("prefix", "required")
	case len(l.Prefix) > 240 || !dnsSubLabel.MatchString(l.Prefix):
		return fieldErr("prefix", fmt.Sprintf("%q: <prefix>-<n> must be a DNS subdomain (lower case letters, digits, '-' and '.')", l.Prefix))
	case strings.TrimSpace(l.Holder) == "":
		return fieldErr("holder", "required (this node's name)")
	case l.Limit < 1 || l.Limit > MaxLeaseLimit:
		return fieldErr("limit", fmt.Sprintf("%d, want 1 to %d", l.Limit, MaxLeaseLimit))
	case l.Duration < 0:
		return fieldErr("duration", "negative")
	case l.Duration > 0 && l.Duration > time.Duration(1<<31-1)*time.Second:
		return fieldErr("duration", "too long for leaseDurationSeconds")
	case l.Timeout < 0:
		return fieldErr("timeout", "negative")
	}
	return nil
}

func (l *Lease) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Lease) durationSeconds() int32 {
	d := l.Duration
	if d == 0 {
		d = DefaultLeaseDuration
	}
	return int32((d + time.Second - 1) / time.Second)
}

func (l *Lease) slotName(i int) string { return l.Prefix + "-" + strconv.Itoa(i) }

// where names the semaphore in reasons.
func (l *Lease) where() string {
	return fmt.Sprintf("Leases %s/%s-0..%d", l.Namespace, l.Prefix, l.Limit-1)
}

// Check takes a slot or says who holds them all.
func (l *Lease) Check(ctx context.Context, action string) (Decision, Release, error) {
	if err := l.Validate(); err != nil {
		return Decision{Reason: "lease guard misconfigured: " + err.Error()}, nil, fmt.Errorf("lease guard: %w", err)
	}
	held := func(err error) (Decision, Release, error) {
		if ctx.Err() != nil {
			return Decision{Reason: fmt.Sprintf("%s held: asking the Kubernetes API was cancelled: %v", action, err)}, nil, ctx.Err()
		}
		return Decision{Reason: fmt.Sprintf("%s held (fail closed): %s: %v", action, l.where(), err)}, nil, nil
	}
	k, err := l.connect()
	if err != nil {
		return held(err)
	}
	defer k.http.CloseIdleConnections()

	slots := make([]*leaseObject, l.Limit)
	for i := range slots {
		if slots[i], err = k.get(ctx, l.slotName(i)); err != nil {
			return held(err)
		}
	}
	now := l.now()
	// Ours first, then free ones in order; the rest are why we are held.
	var order []int
	for i, s := range slots {
		if s != nil && s.holder() == l.Holder {
			order = append(order, i)
		}
	}
	busy := map[int]string{}
	for i, s := range slots {
		switch {
		case s != nil && s.holder() == l.Holder:
		case s == nil || s.holder() == "":
			order = append(order, i)
		default:
			if until, ok := s.expiry(); !ok {
				busy[i] = fmt.Sprintf("%s held by %q (no renewTime or leaseDurationSeconds: never lapses)", l.slotName(i), s.holder())
			} else if now.After(until) {
				order = append(order, i)
			} else {
				busy[i] = fmt.Sprintf("%s held by %q until %s", l.slotName(i), s.holder(), until.UTC().Format(time.RFC3339))
			}
		}
	}
	for _, i := range order {
		name, prev := l.slotName(i), slots[i]
		var code int
		if prev == nil {
			code, err = k.create(ctx, newLease(name, l.Namespace), l.Holder, l.durationSeconds(), now)
		} else {
			code, err = k.update(ctx, prev, l.Holder, l.durationSeconds(), now)
		}
		if err != nil {
			return held(err)
		}
		if code == http.StatusConflict {
			busy[i] = name + " taken by a concurrent update (409)"
			continue
		}
		until := now.Add(time.Duration(l.durationSeconds()) * time.Second).UTC().Format(time.RFC3339)
		how, from := "took", ""
		switch {
		case prev == nil:
		case prev.holder() == l.Holder:
			how = "renewed"
		case prev.holder() != "":
			how, from = "took over", fmt.Sprintf(" from %q (lapsed)", prev.holder())
		}
		reason := fmt.Sprintf("%s allowed: %s Lease %s/%s%s (slot %d of %d) as %q until %s",
			action, how, l.Namespace, name, from, i+1, l.Limit, l.Holder, until)
		cfg := *l // the Release must not see later edits of l
		return Decision{Allowed: true, Reason: reason}, func(ctx context.Context) error { return cfg.release(ctx, name) }, nil
	}
	var why []string
	for i := range slots {
		if s, ok := busy[i]; ok {
			why = append(why, s)
		}
	}
	return Decision{Reason: fmt.Sprintf("%s held: all %d slots of %s are taken: %s",
		action, l.Limit, l.where(), strings.Join(why, "; "))}, nil, nil
}

// release clears holderIdentity of slot name if we still hold it. A
// conflicting write is retried on a fresh read a few times.
func (l *Lease) release(ctx context.Context, name string) error {
	k, err := l.connect()
	if err != nil {
		return fmt.Errorf("releasing Lease %s/%s: %w", l.Namespace, name, err)
	}
	defer k.http.CloseIdleConnections()
	for range 3 {
		s, err := k.get(ctx, name)
		switch {
		case err != nil:
			return fmt.Errorf("releasing Lease %s/%s: %w", l.Namespace, name, err)
		case s == nil || s.holder() == "":
			return nil
		case s.holder() != l.Holder:
			return fmt.Errorf("releasing Lease %s/%s: it lapsed and is held by %q now", l.Namespace, name, s.holder())
		}
		code, err := k.update(ctx, s, "", l.durationSeconds(), l.now())
		if err != nil {
			return fmt.Errorf("releasing Lease %s/%s: %w", l.Namespace, name, err)
		}
		if code != http.StatusConflict {
			return nil
		}
	}
	return fmt.Errorf("releasing Lease %s/%s: every update conflicted (409)", l.Namespace, name)
}

// kubeClient makes the few Lease calls the guard needs.
type kubeClient struct {
	base, namespace, token string
	http                   *http.Client
}

func (l *Lease) connect() (*kubeClient, error) {
	server, caFile, tokenFile := l.Server, l.CAFile, l.TokenFile
	if server == "" {
		host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return nil, errors.New("no server configured and not in a cluster (KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT unset)")
		}
		server = "https://" + net.JoinHostPort(host, port)
		if caFile == "" {
			caFile = InClusterCAFile
		}
	}
	if tokenFile == "" {
		tokenFile = InClusterTokenFile
	}
	tok, err := readSecret(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("API server %s not asked: token: %w", server, err)
	}
	timeout := l.Timeout
	if timeout == 0 {
		timeout = DefaultLeaseTimeout
	}
	c, err := newClient(caFile, timeout)
	if err != nil {
		return nil, fmt.Errorf("API server %s not asked: %w", server, err)
	}
	return &kubeClient{base: strings.TrimSuffix(server, "/"), namespace: l.Namespace, token: tok, http: c}, nil
}

func (k *kubeClient) path(name string) string {
	p := k.base + "/apis/coordination.k8s.io/v1/namespaces/" + url.PathEscape(k.namespace) + "/leases"
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

// do sends one request. 404 and 409 are answers, not errors: it returns
// the code with a nil error. Any other non-2xx is an error with the
// server's message.
func (k *kubeClient) do(ctx context.Context, method, name string, in, out any) (int, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, err
		}
	}
	target := k.path(name)
	if method == http.MethodPost {
		target = k.path("")
	}
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("API server %s unreachable: %w", k.base, err)
	}
	defer resp.Body.Close()
	b, err := readBody(resp)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, target, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusConflict:
		return resp.StatusCode, nil
	case resp.StatusCode/100 != 2:
		var st struct {
			Message string `json:"message"`
			Reason  string `json:"reason"`
		}
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			return 0, fmt.Errorf("%s %s: HTTP %d %s: %s", method, target, resp.StatusCode, st.Reason, st.Message)
		}
		return 0, fmt.Errorf("%s %s: HTTP %d: %s", method, target, resp.StatusCode, snippet(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return 0, fmt.Errorf("%s %s: answer is not a Lease: %w", method, target, err)
		}
	}
	return resp.StatusCode, nil
}

// get returns nil, nil when the Lease is absent.
func (k *kubeClient) get(ctx context.Context, name string) (*leaseObject, error) {
	var s leaseObject
	code, err := k.do(ctx, http.MethodGet, name, nil, &s)
	switch {
	case err != nil:
		return nil, err
	case code == http.StatusNotFound:
		return nil, nil
	case code == http.StatusConflict:
		return nil, fmt.Errorf("GET %s: HTTP 409", k.path(name))
	}
	if s.Metadata == nil {
		return nil, fmt.Errorf("GET %s: answer has no metadata", k.path(name))
	}
	return &s, nil
}

// create POSTs s held by holder; 409 when it exists by now.
func (k *kubeClient) create(ctx context.Context, s *leaseObject, holder string, seconds int32, now time.Time) (int, error) {
	s.hold(holder, seconds, now)
	code, err := k.do(ctx, http.MethodPost, s.name(), s, nil)
	if code == http.StatusNotFound {
		return 0, fmt.Errorf("POST %s: HTTP 404 (does namespace %q exist?)", k.path(""), k.namespace)
	}
	return code, err
}

// update PUTs prev, carrying its resourceVersion, held by holder ("" to
// release); 409 when it changed since it was read.
func (k *kubeClient) update(ctx context.Context, prev *leaseObject, holder string, seconds int32, now time.Time) (int, error) {
	s := *prev
	s.hold(holder, seconds, now)
	code, err := k.do(ctx, http.MethodPut, s.name(), &s, nil)
	if code == http.StatusNotFound {
		return http.StatusConflict, nil // deleted since read: someone else's move
	}
	return code, err
}

// leaseObject is a coordination.k8s.io/v1 Lease. Metadata is kept as it
// came (labels, annotations, managed fields go back unchanged on PUT);
// the spec has every v1 field so none is dropped.
type leaseObject struct {
	APIVersion string                     `json:"apiVersion"`
	Kind       string                     `json:"kind"`
	Metadata   map[string]json.RawMessage `json:"metadata"`
	Spec       leaseSpec                  `json:"spec"`
}

type leaseSpec struct {
	HolderIdentity       *string `json:"holderIdentity,omitempty"`
	LeaseDurationSeconds *int32  `json:"leaseDurationSeconds,omitempty"`
	AcquireTime          *string `json:"acquireTime,omitempty"`
	RenewTime            *string `json:"renewTime,omitempty"`
	LeaseTransitions     *int32  `json:"leaseTransitions,omitempty"`
	Strategy             *string `json:"strategy,omitempty"`
	PreferredHolder      *string `json:"preferredHolder,omitempty"`
}

func newLease(name, namespace string) *leaseObject {
	meta := map[string]json.RawMessage{}
	meta["name"], _ = json.Marshal(name)
	meta["namespace"], _ = json.Marshal(namespace)
	meta["labels"], _ = json.Marshal(map[string]string{"app.kubernetes.io/managed-by": "gpuwarden"})
	return &leaseObject{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Metadata: meta}
}

func (s *leaseObject) name() string {
	var n string
	json.Unmarshal(s.Metadata["name"], &n)
	return n
}

func (s *leaseObject) holder() string {
	if s.Spec.HolderIdentity == nil {
		return ""
	}
	return *s.Spec.HolderIdentity
}

// expiry is when the holder's claim lapses; false when it cannot be told.
func (s *leaseObject) expiry() (time.Time, bool) {
	if s.Spec.LeaseDurationSeconds == nil || *s.Spec.LeaseDurationSeconds <= 0 {
		return time.Time{}, false
	}
	last := s.Spec.RenewTime
	if last == nil {
		last = s.Spec.AcquireTime
	}
	if last == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, *last)
	if err != nil {
		return time.Time{}, false
	}
	return t.Add(time.Duration(*s.Spec.LeaseDurationSeconds) * time.Second), true
}

// hold sets the spec for holder at now: a new holder gets a new
// acquireTime and counts a transition; "" releases.
func (s *leaseObject) hold(holder string, seconds int32, now time.Time) {
	sp := s.Spec // a copy: pointer fields below are replaced, never written through
	ts := now.UTC().Format(microTime)
	prev := s.holder()
	switch {
	case holder == "":
		sp.HolderIdentity = nil
		sp.RenewTime = &ts
	case holder == prev:
		sp.RenewTime = &ts
		sp.LeaseDurationSeconds = &seconds
	default:
		h := holder
		sp.HolderIdentity = &h
		sp.AcquireTime, sp.RenewTime = &ts, &ts
		sp.LeaseDurationSeconds = &seconds
		n := int32(0)
		if sp.LeaseTransitions != nil {
			n = *sp.LeaseTransitions
		}
		if s.Spec.AcquireTime != nil { // held before, by someone else
			n++
		}
		sp.LeaseTransitions = &n
	}
	s.Spec = sp
}
