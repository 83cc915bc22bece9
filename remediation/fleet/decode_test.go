package fleet

import (
	"context"
	"encoding/pem"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Answers in the shape of Prometheus's /api/v1/query (the documented HTTP
// API, docs/querying/api.md), with near misses beside the hits.
func TestDecodeQueryAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       float64
		err        string
	}{
		{"scalar", `{"status":"success","data":{"resultType":"scalar","result":[1764690000.123,"3"]}}`, 3, ""},
		{"one sample", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1764690000,"2"]}]}}`, 2, ""},
		{"empty vector is zero", `{"status":"success","data":{"resultType":"vector","result":[]}}`, 0, ""},
		{"fraction", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1,"0.25"]}]}}`, 0.25, ""},
		{"two samples", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"1"]}]}}`, 0, "2 samples"},
		{"NaN", `{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}`, 0, "finite"},
		{"+Inf", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}`, 0, "finite"},
		{"matrix", `{"status":"success","data":{"resultType":"matrix","result":[]}}`, 0, `"matrix"`},
		{"string", `{"status":"success","data":{"resultType":"string","result":[1,"x"]}}`, 0, `"string"`},
		{"histogram", `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1","sum":"1"}]}]}}`, 0, "histogram"},
		{"value not a string", `{"status":"success","data":{"resultType":"scalar","result":[1,2]}}`, 0, "sample value"},
		{"value not a number", `{"status":"success","data":{"resultType":"scalar","result":[1,"two"]}}`, 0, "not a number"},
		{"short sample", `{"status":"success","data":{"resultType":"scalar","result":[1]}}`, 0, "1 elements"},
		{"api error", `{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}`, 0, "bad_data: 1:5: parse error"},
		{"no status", `{"data":{}}`, 0, `status ""`},
		{"html", `<html>502 Bad Gateway</html>`, 0, "not a Prometheus API response"},
		{"null data", `{"status":"success","data":null}`, 0, `result type ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := decodeQuery([]byte(tc.body))
			if tc.err == "" {
				if err != nil || v != tc.want {
					t.Fatalf("got %v, %v; want %v", v, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, %v; want an error containing %q", v, err, tc.err)
			}
		})
	}
}

// Hostile answers never panic, and whatever decodes is a finite number.
func FuzzDecodeQuery(f *testing.F) {
	for _, s := range []string{
		`{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{}]}]}}`,
		`{"status":"error","errorType":"timeout","error":"query timed out"}`,
		`{"status":"success","data":{"resultType":"scalar","result":[1,"1e400"]}}`,
		`{"status":"success","data":{"resultType":"scalar","result":[1,"0x1p3"]}}`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := decodeQuery(body)
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			t.Fatalf("decoded %v without an error from %q", v, body)
		}
		if err != nil && len(err.Error()) > 2000 {
			t.Fatalf("error of %d bytes", len(err.Error()))
		}
	})
}

// The bearer token and basic auth reach Prometheus (here a stand-in behind
// TLS, to exercise CAFile too), read from their files.
func TestPrometheusSendsCredentialsFromFilesOverTLS(t *testing.T) {
	var got string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		if r.URL.Path != "/prom/api/v1/query" || r.URL.Query().Get("query") != "up" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusNotFound)
			return
		}
		w.Write([]byte(`{"status":"success","data":{"resultType":"scalar","result":[1,"0"]}}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "pw"), []byte("pa55"), 0o600)
	ctx := context.Background()

	p := &Prometheus{URL: srv.URL + "/prom", Query: "up", Limit: 1, CAFile: ca, BearerTokenFile: filepath.Join(dir, "token")}
	if d, _, err := p.Check(ctx, "drain"); err != nil || !d.Allowed || got != "Bearer s3cret" {
		t.Fatalf("bearer: %+v, %v, header %q", d, err, got)
	}
	p = &Prometheus{URL: srv.URL + "/prom", Query: "up", Limit: 1, CAFile: ca, BasicAuthUser: "agent", BasicAuthPasswordFile: filepath.Join(dir, "pw")}
	if d, _, err := p.Check(ctx, "drain"); err != nil || !d.Allowed || got != "Basic YWdlbnQ6cGE1NQ==" {
		t.Fatalf("basic: %+v, %v, header %q", d, err, got)
	}
	// Without the CA the certificate is not trusted: held, saying why.
	p = &Prometheus{URL: srv.URL + "/prom", Query: "up", Limit: 1}
	if d, _, err := p.Check(ctx, "drain"); err != nil || d.Allowed || !strings.Contains(d.Reason, "certificate") {
		t.Fatalf("no CA: %+v, %v", d, err)
	}
	// A token file that is missing holds; it is not sent empty.
	p = &Prometheus{URL: srv.URL + "/prom", Query: "up", Limit: 1, CAFile: ca, BearerTokenFile: filepath.Join(dir, "absent")}
	if d, _, err := p.Check(ctx, "drain"); err != nil || d.Allowed || !strings.Contains(d.Reason, "bearer token") {
		t.Fatalf("missing token: %+v, %v", d, err)
	}
}

func TestPrometheusValidateNamesTheField(t *testing.T) {
	ok := Prometheus{URL: "http://prometheus:9090", Query: "up", Limit: 1}
	for _, tc := range []struct {
		field string
		edit  func(*Prometheus)
	}{
		{"url", func(p *Prometheus) { p.URL = "" }},
		{"url", func(p *Prometheus) { p.URL = "prometheus:9090" }},
		{"url", func(p *Prometheus) { p.URL = "http://p:9090/api/v1/query?query=up" }},
		{"query", func(p *Prometheus) { p.Query = " " }},
		{"limit", func(p *Prometheus) { p.Limit = 0 }},
		{"limit", func(p *Prometheus) { p.Limit = math.NaN() }},
		{"timeout", func(p *Prometheus) { p.Timeout = -1 }},
		{"bearer_token_file", func(p *Prometheus) { p.BearerTokenFile, p.BasicAuthUser = "t", "u" }},
		{"basic_auth_password_file", func(p *Prometheus) { p.BasicAuthUser = "u" }},
		{"basic_auth_user", func(p *Prometheus) { p.BasicAuthPasswordFile = "f" }},
	} {
		p := ok
		tc.edit(&p)
		err := p.Validate()
		fe, isField := err.(*FieldError)
		if !isField || fe.Field != tc.field {
			t.Errorf("%+v: got %v, want a FieldError for %s", p, err, tc.field)
		}
		if _, _, cerr := p.Check(context.Background(), "drain"); cerr == nil {
			t.Errorf("%+v: Check did not report the configuration error", p)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
