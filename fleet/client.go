// Package fleet builds a report on many gpuwarden nodes from what Prometheus
// (or anything that answers its HTTP query API: a federating Prometheus,
// Thanos, Mimir, VictoriaMetrics) has scraped from their agents. It reads only
// through instant queries, so it needs no access to the nodes themselves.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Sample is one series of an instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Querier answers PromQL instant queries at a given time.
type Querier interface {
	Query(ctx context.Context, expr string, at time.Time) ([]Sample, error)
}

// Client is a Querier over the Prometheus HTTP API (/api/v1/query).
type Client struct {
	// Base is the server's URL; the API path is added to it, so a path
	// prefix (a reverse proxy, Mimir's /prometheus) is kept.
	Base *url.URL
	// HTTP carries authentication and TLS (prometheus/common/config).
	HTTP *http.Client
	// Timeout bounds each query, here and, as the API's timeout
	// parameter, on the server.
	Timeout time.Duration
}

// NewClient parses base and returns a Client; a URL without a scheme means http.
func NewClient(base string, hc *http.Client, timeout time.Duration) (*Client, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("--prometheus %q: %w", base, err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("--prometheus %q: no host", base)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{Base: u, HTTP: hc, Timeout: timeout}, nil
}

// apiResponse is the API's envelope; only vectors and scalars are read.
type apiResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// Query runs one instant query. An error names the expression's server
// answer (bad_data, timeout, ...) or the transport failure.
func (c *Client) Query(ctx context.Context, expr string, at time.Time) ([]Sample, error) {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	form := url.Values{"query": {expr}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	if c.Timeout > 0 {
		form.Set("timeout", c.Timeout.String())
	}
	u := c.Base.JoinPath("api", "v1", "query")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("query timed out after %s", c.Timeout)
		}
		return nil, &UnreachableError{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s %s: not a query API answer (%s)", u.Redacted(), resp.Status, snippet(body))
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	return decodeResult(r.Data.ResultType, r.Data.Result)
}

// UnreachableError is a query that got no HTTP answer at all.
type UnreachableError struct{ Err error }

func (e *UnreachableError) Error() string { return "unreachable: " + e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

func decodeResult(kind string, raw json.RawMessage) ([]Sample, error) {
	switch kind {
	case "vector":
		var v []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoding vector: %w", err)
		}
		out := make([]Sample, 0, len(v))
		for _, s := range v {
			f, err := parseValue(s.Value[1])
			if err != nil {
				return nil, err
			}
			out = append(out, Sample{Labels: s.Metric, Value: f})
		}
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoding scalar: %w", err)
		}
		f, err := parseValue(v[1])
		if err != nil {
			return nil, err
		}
		return []Sample{{Labels: map[string]string{}, Value: f}}, nil
	default:
		return nil, fmt.Errorf("result type %q: want an instant vector", kind)
	}
}

func parseValue(v any) (float64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", v)
	}
	return strconv.ParseFloat(s, 64)
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return strconv.Quote(s)
}
