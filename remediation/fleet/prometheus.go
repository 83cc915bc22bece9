package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultPrometheusTimeout bounds one query when Timeout is zero.
const DefaultPrometheusTimeout = 5 * time.Second

// Prometheus holds an action while a PromQL query's value is at or above
// Limit, for example
//
//	count(gpuwarden_remediation_in_progress == 1) or vector(0)
//	count(kube_node_spec_unschedulable == 1)
//
// The query must answer a scalar or a vector of at most one sample; an
// empty vector counts as 0 (so the second example needs no "or vector(0)"),
// more than one sample is an error. It is asked with an instant query,
// GET <URL>/api/v1/query.
type Prometheus struct {
	// URL is Prometheus's base URL, such as http://prometheus:9090 or
	// https://host/prometheus; /api/v1/query is appended.
	URL   string  `yaml:"url"`
	Query string  `yaml:"query"`
	Limit float64 `yaml:"limit"`
	// FailOpen allows the action when Prometheus cannot be asked or its
	// answer cannot be used; the Decision then says FailedOpen. The
	// default holds it.
	FailOpen bool `yaml:"fail_open"`
	// Timeout bounds the whole query; DefaultPrometheusTimeout when zero.
	Timeout time.Duration `yaml:"timeout"`

	// At most one of bearer token and basic auth. Files are read for each
	// query, so rotated secrets are picked up.
	BearerTokenFile       string `yaml:"bearer_token_file"`
	BasicAuthUser         string `yaml:"basic_auth_user"`
	BasicAuthPasswordFile string `yaml:"basic_auth_password_file"`
	// CAFile verifies an https URL; the system roots when empty.
	CAFile string `yaml:"ca_file"`
}

// Validate reports the first field that cannot work, as a *FieldError.
func (p *Prometheus) Validate() error {
	u, err := url.Parse(p.URL)
	switch {
	case p.URL == "":
		return fieldErr("url", "required")
	case err != nil:
		return &FieldError{Field: "url", Err: err}
	case u.Scheme != "http" && u.Scheme != "https":
		return fieldErr("url", fmt.Sprintf("scheme %q, want http or https", u.Scheme))
	case u.Host == "":
		return fieldErr("url", "no host")
	case u.RawQuery != "" || u.Fragment != "":
		return fieldErr("url", "must not have a query or fragment; the guard adds /api/v1/query?query=...")
	case strings.TrimSpace(p.Query) == "":
		return fieldErr("query", "required")
	case math.IsNaN(p.Limit) || math.IsInf(p.Limit, 0) || p.Limit <= 0:
		return fieldErr("limit", fmt.Sprintf("%v, want a number above 0 (the action is held while the query's value is >= limit)", p.Limit))
	case p.Timeout < 0:
		return fieldErr("timeout", "negative")
	case p.BearerTokenFile != "" && (p.BasicAuthUser != "" || p.BasicAuthPasswordFile != ""):
		return fieldErr("bearer_token_file", "set together with basic auth; use one")
	case p.BasicAuthUser == "" && p.BasicAuthPasswordFile != "":
		return fieldErr("basic_auth_user", "required with basic_auth_password_file")
	case p.BasicAuthUser != "" && p.BasicAuthPasswordFile == "":
		return fieldErr("basic_auth_password_file", "required with basic_auth_user")
	}
	return nil
}

// Check asks Prometheus once. It never returns a Release: the guard takes
// nothing.
func (p *Prometheus) Check(ctx context.Context, action string) (Decision, Release, error) {
	if err := p.Validate(); err != nil {
		return Decision{Reason: "prometheus guard misconfigured: " + err.Error()}, nil, fmt.Errorf("prometheus guard: %w", err)
	}
	v, err := p.value(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return Decision{Reason: fmt.Sprintf("%s held: asking Prometheus was cancelled: %v", action, err)}, nil, ctx.Err()
		}
		if p.FailOpen {
			return Decision{Allowed: true, FailedOpen: true,
				Reason: fmt.Sprintf("%s allowed (fail open): %v", action, err)}, nil, nil
		}
		return Decision{Reason: fmt.Sprintf("%s held (fail closed): %v", action, err)}, nil, nil
	}
	if v >= p.Limit {
		return Decision{Reason: fmt.Sprintf("%s held: Prometheus query %q is %s, at or above the limit %s",
			action, p.Query, num(v), num(p.Limit))}, nil, nil
	}
	return Decision{Allowed: true, Reason: fmt.Sprintf("%s allowed: Prometheus query %q is %s, below the limit %s",
		action, p.Query, num(v), num(p.Limit))}, nil, nil
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// value runs the query. Its errors say which Prometheus and which query.
func (p *Prometheus) value(ctx context.Context) (float64, error) {
	timeout := p.Timeout
	if timeout == 0 {
		timeout = DefaultPrometheusTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := newClient(p.CAFile, 0)
	if err != nil {
		return 0, fmt.Errorf("Prometheus at %s not asked: %w", p.URL, err)
	}
	defer c.CloseIdleConnections()
	endpoint := strings.TrimSuffix(p.URL, "/") + "/api/v1/query?" + url.Values{"query": {p.Query}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return 0, fmt.Errorf("Prometheus at %s not asked: %w", p.URL, err)
	}
	req.Header.Set("Accept", "application/json")
	switch {
	case p.BearerTokenFile != "":
		tok, err := readSecret(p.BearerTokenFile)
		if err != nil {
			return 0, fmt.Errorf("Prometheus at %s not asked: bearer token: %w", p.URL, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case p.BasicAuthUser != "":
		pw, err := readSecret(p.BasicAuthPasswordFile)
		if err != nil {
			return 0, fmt.Errorf("Prometheus at %s not asked: basic auth password: %w", p.URL, err)
		}
		req.SetBasicAuth(p.BasicAuthUser, pw)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("Prometheus at %s unreachable: %w", p.URL, err)
	}
	defer resp.Body.Close()
	body, err := readBody(resp)
	if err != nil {
		return 0, fmt.Errorf("Prometheus at %s, query %q: %w", p.URL, p.Query, err)
	}
	v, err := decodeQuery(body)
	switch {
	case err != nil && resp.StatusCode != http.StatusOK:
		// Prometheus's own errors (400 bad_data, 422 execution, 503
		// timeout) carry a JSON body that decodeQuery turns into a message;
		// anything else (a proxy's HTML page) is shown as it came.
		var api *apiError
		if errors.As(err, &api) {
			return 0, fmt.Errorf("Prometheus at %s, query %q: HTTP %d: %w", p.URL, p.Query, resp.StatusCode, err)
		}
		return 0, fmt.Errorf("Prometheus at %s, query %q: HTTP %d: %s", p.URL, p.Query, resp.StatusCode, snippet(body))
	case err != nil:
		return 0, fmt.Errorf("Prometheus at %s, query %q: %w", p.URL, p.Query, err)
	case resp.StatusCode != http.StatusOK:
		return 0, fmt.Errorf("Prometheus at %s, query %q: HTTP %d with a success body", p.URL, p.Query, resp.StatusCode)
	}
	return v, nil
}

// apiError is an answer with "status":"error".
type apiError struct{ Type, Msg string }

func (e *apiError) Error() string { return e.Type + ": " + e.Msg }

// decodeQuery turns an /api/v1/query answer into one finite number: a
// scalar, the value of a vector's only sample, or 0 for an empty vector.
// Every other shape is an error. It is the parser of outside input here
// (FuzzDecodeQuery).
func decodeQuery(body []byte) (float64, error) {
	var r struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("answer is not a Prometheus API response: %w (body %s)", err, snippet(body))
	}
	switch r.Status {
	case "success":
	case "error":
		return 0, &apiError{Type: r.ErrorType, Msg: r.Error}
	default:
		return 0, fmt.Errorf("answer has status %q, want success", r.Status)
	}
	var d struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return 0, fmt.Errorf("answer's data: %w", err)
	}
	switch d.ResultType {
	case "scalar":
		return decodeSample(d.Result)
	case "vector":
		var samples []struct {
			Metric    map[string]string `json:"metric"`
			Value     json.RawMessage   `json:"value"`
			Histogram json.RawMessage   `json:"histogram"`
		}
		if err := json.Unmarshal(d.Result, &samples); err != nil {
			return 0, fmt.Errorf("vector result: %w", err)
		}
		switch len(samples) {
		case 0:
			return 0, nil
		case 1:
		default:
			return 0, fmt.Errorf("vector of %d samples, want at most one (aggregate it, e.g. count(...) or sum(...))", len(samples))
		}
		if len(samples[0].Histogram) > 0 && string(samples[0].Histogram) != "null" {
			return 0, errors.New("sample is a native histogram, want a float")
		}
		return decodeSample(samples[0].Value)
	default:
		return 0, fmt.Errorf("result type %q, want scalar or vector", d.ResultType)
	}
}

// decodeSample reads [<unix time>, "<value>"].
func decodeSample(raw json.RawMessage) (float64, error) {
	var pair []json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil {
		return 0, fmt.Errorf("sample: %w", err)
	}
	if len(pair) != 2 {
		return 0, fmt.Errorf("sample has %d elements, want [time, value]", len(pair))
	}
	var s string
	if err := json.Unmarshal(pair[1], &s); err != nil {
		return 0, fmt.Errorf("sample value: %w", err)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("sample value %s: not a number", snippet([]byte(s)))
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("sample value %s, want a finite number", snippet([]byte(s)))
	}
	return v, nil
}
