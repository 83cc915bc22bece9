package fleet

import (
	"github.com/gpuwarden/gpuwarden/internal/testenv"

	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// realPrometheus starts Debian's Prometheus scraping target every second
// and returns its base URL.
func realPrometheus(t *testing.T, target string) string {
	t.Helper()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fleet\n    static_configs:\n      - targets: [%q]\n", target)
	return "http://" + testenv.Prometheus(t, cfg)
}

// queryValue asks base for expr the way a person would with curl; "" until
// there is exactly one sample.
func queryValue(base, expr string) string {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) != 1 || len(r.Data.Result[0].Value) != 2 {
		return ""
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return s
}

func TestPrometheusGuardAgainstARealPrometheus(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# HELP test_nodes_draining Nodes draining, a fixed value for the test.\n# TYPE test_nodes_draining gauge\ntest_nodes_draining 2\n")
	}))
	defer target.Close()
	base := realPrometheus(t, strings.TrimPrefix(target.URL, "http://"))

	const query = "sum(test_nodes_draining)"
	deadline := time.Now().Add(60 * time.Second)
	for queryValue(base, query) != "2" {
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus at %s never answered 2 for %s", base, query)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctx := context.Background()

	t.Run("at the limit holds", func(t *testing.T) {
		d, rel, err := (&Prometheus{URL: base, Query: query, Limit: 2}).Check(ctx, "drain")
		if err != nil || d.Allowed || d.FailedOpen || rel != nil {
			t.Fatalf("got %+v, release %v, err %v; want held", d, rel != nil, err)
		}
		for _, want := range []string{"drain held", query, " is 2,", "limit 2"} {
			if !strings.Contains(d.Reason, want) {
				t.Errorf("reason %q lacks %q", d.Reason, want)
			}
		}
	})
	t.Run("below the limit allows", func(t *testing.T) {
		d, _, err := (&Prometheus{URL: base + "/", Query: query, Limit: 3}).Check(ctx, "reboot")
		if err != nil || !d.Allowed || d.FailedOpen {
			t.Fatalf("got %+v, err %v; want allowed", d, err)
		}
		if !strings.Contains(d.Reason, "is 2, below the limit 3") {
			t.Errorf("reason %q", d.Reason)
		}
	})
	t.Run("an absent series counts as zero", func(t *testing.T) {
		d, _, err := (&Prometheus{URL: base, Query: "count(no_such_metric == 1)", Limit: 1}).Check(ctx, "drain")
		if err != nil || !d.Allowed {
			t.Fatalf("got %+v, err %v; want allowed", d, err)
		}
	})
	t.Run("more than one sample holds naming the query", func(t *testing.T) {
		q := `label_replace(test_nodes_draining, "x", "a", "", "") or label_replace(test_nodes_draining, "x", "b", "", "")`
		d, _, err := (&Prometheus{URL: base, Query: q, Limit: 10}).Check(ctx, "drain")
		if err != nil || d.Allowed {
			t.Fatalf("got %+v, err %v; want held", d, err)
		}
		if !strings.Contains(d.Reason, fmt.Sprintf("%q", q)) || !strings.Contains(d.Reason, "2 samples") {
			t.Errorf("reason %q names neither the query nor the sample count", d.Reason)
		}
	})
	t.Run("a query Prometheus rejects holds with its error", func(t *testing.T) {
		d, _, err := (&Prometheus{URL: base, Query: "sum(", Limit: 1}).Check(ctx, "drain")
		if err != nil || d.Allowed {
			t.Fatalf("got %+v, err %v; want held", d, err)
		}
		if !strings.Contains(d.Reason, "HTTP 400") || !strings.Contains(d.Reason, "bad_data") {
			t.Errorf("reason %q", d.Reason)
		}
	})

	closed := "http://" + testenv.FreeAddr(t)
	t.Run("unreachable fails closed", func(t *testing.T) {
		d, _, err := (&Prometheus{URL: closed, Query: query, Limit: 3}).Check(ctx, "drain")
		if err != nil || d.Allowed || d.FailedOpen {
			t.Fatalf("got %+v, err %v; want held", d, err)
		}
		for _, want := range []string{"fail closed", "unreachable", closed, "connection refused"} {
			if !strings.Contains(d.Reason, want) {
				t.Errorf("reason %q lacks %q", d.Reason, want)
			}
		}
	})
	t.Run("unreachable with FailOpen allows and says so", func(t *testing.T) {
		d, _, err := (&Prometheus{URL: closed, Query: query, Limit: 3, FailOpen: true}).Check(ctx, "drain")
		if err != nil || !d.Allowed || !d.FailedOpen {
			t.Fatalf("got %+v, err %v; want allowed, failed open", d, err)
		}
		if !strings.Contains(d.Reason, "fail open") || !strings.Contains(d.Reason, "unreachable") {
			t.Errorf("reason %q", d.Reason)
		}
	})
}
