package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// demoWithStillClock is the demo node at 60 s with a clock the test moves
// without publishing a new snapshot.
func demoWithStillClock(t *testing.T) (*State, *time.Time) {
	t.Helper()
	tr, err := replay.Open("../collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	now := new(time.Time)
	*now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return *now }
	p := replay.NewPlayer(tr, replay.PlayerOptions{Clock: clock})
	t.Cleanup(func() { p.Close() })
	*now = now.Add(60 * time.Second)
	st := NewState("demo-dgx-h100", 0, time.Hour, clock)
	st.ApplyRound(gpu.New(p.Library(), gpu.Options{Clock: clock, Log: quiet}).Sample(context.Background()))
	return st, now
}

type scraped struct {
	body    []byte // as sent
	text    string // decompressed where it was gzip
	gzipped bool
}

func scrapeWith(t *testing.T, h http.Handler, enc string) scraped {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	if enc != "" {
		req.Header.Set("Accept-Encoding", enc)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("scrape: %d", rec.Code)
	}
	s := scraped{body: rec.Body.Bytes(), gzipped: rec.Header().Get("Content-Encoding") == "gzip"}
	if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(s.body)) {
		t.Errorf("Content-Length %q for a body of %d bytes", cl, len(s.body))
	}
	s.text = string(s.body)
	if s.gzipped {
		zr, err := gzip.NewReader(bytes.NewReader(s.body))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("the gzip body does not decompress: %v", err)
		}
		s.text = string(b)
	}
	return s
}

// A second scrape of the same snapshot with Accept-Encoding: gzip
// compresses nothing: it sends the snapshot's member made by the first,
// the process's series compressed when they were gathered, and the ages in
// stored blocks. Its body decompresses to exactly the identity body. A new
// snapshot is compressed once more, and only once.
func TestASecondGzipScrapeOfASnapshotCompressesNothing(t *testing.T) {
	st, now := demoWithStillClock(t)
	h := MetricsHandler(st, NewRegistry()) // the real process collector
	first := scrapeWith(t, h, "gzip")
	if !first.gzipped {
		t.Fatal("no gzip")
	}
	made := st.compressions.Load()
	if made == 0 {
		t.Fatal("the first gzip scrape compressed nothing: the counter does not count")
	}
	second := scrapeWith(t, h, "gzip")
	if got := st.compressions.Load(); got != made {
		t.Fatalf("the second gzip scrape of the same snapshot compressed %d times", got-made)
	}
	plain := scrapeWith(t, h, "")
	if plain.gzipped {
		t.Fatal("gzip without Accept-Encoding")
	}
	if second.text != plain.text {
		t.Fatalf("the gzip body decompresses to %d bytes that are not the identity body's %d", len(second.text), len(plain.text))
	}
	if !bytes.Equal(first.body, second.body) {
		t.Error("two gzip scrapes of one snapshot at one time sent different bytes")
	}
	if len(second.body) > len(plain.body)/8 {
		t.Errorf("gzip sends %d bytes of %d", len(second.body), len(plain.body))
	}

	// Time passes, the snapshot stays: the ages move, nothing is compressed.
	*now = now.Add(250 * time.Millisecond)
	later := scrapeWith(t, h, "gzip")
	if got := st.compressions.Load(); got != made {
		t.Fatalf("a gzip scrape of the same snapshot later compressed %d times", got-made)
	}
	age := fmt.Sprintf("%s%s %s\n", ageName, st.Snapshot().GPUs[0].labelText().full,
		strconv.FormatFloat(now.Sub(st.Snapshot().GPUs[0].SampleTime).Seconds(), 'g', -1, 64))
	if !strings.Contains(later.text, age) {
		t.Errorf("the later scrape lacks %q", age)
	}
	if later.text == second.text {
		t.Error("the ages did not move with the clock")
	}
	if plain := scrapeWith(t, h, ""); later.text != plain.text {
		t.Error("the later gzip body is not the identity body")
	}

	st.Refresh()
	scrapeWith(t, h, "gzip")
	if got := st.compressions.Load(); got != made+1 {
		t.Errorf("a new snapshot was compressed %d times, want once", got-made)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, c := range []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZip"}, true},
		{[]string{"deflate, gzip"}, true},
		{[]string{" gzip ; q=0.5 "}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.000"}, false},
		{[]string{"gzip;Q=0"}, false},
		{[]string{"gzip;q=nonsense"}, false},
		{[]string{"identity", "gzip"}, true}, // two header lines
		{[]string{"x-gzip, br"}, false},
		{[]string{"gzipped"}, false},
		{[]string{"*"}, false}, // identity is always acceptable: not worth a wildcard
	} {
		r := httptest.NewRequest("GET", "/metrics", nil)
		for _, v := range c.header {
			r.Header.Add("Accept-Encoding", v)
		}
		if got := acceptsGzip(r); got != c.want {
			t.Errorf("Accept-Encoding %q: gzip %v, want %v", c.header, got, c.want)
		}
	}
}

// FuzzAcceptsGzip: any header is an answer, never a panic, and the answer is
// the one a plain split-and-trim reading gives.
func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"gzip", "deflate, gzip;q=0.5", "gzip;q=0", "gzip;;q=1;q=0", ",,;", "gzip;q=1e999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.Header["Accept-Encoding"] = []string{v}
		want := false
		for _, part := range strings.Split(v, ",") {
			fields := strings.Split(part, ";")
			if !strings.EqualFold(strings.TrimSpace(fields[0]), "gzip") {
				continue
			}
			q, haveQ := 0.0, false
			for _, p := range fields[1:] {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(strings.TrimSpace(k), "q") {
					var err error
					q, err = strconv.ParseFloat(strings.TrimSpace(val), 64)
					if err != nil {
						q = 0
					}
					haveQ = true
					break
				}
			}
			if !haveQ || q > 0 {
				want = true
				break
			}
		}
		if got := acceptsGzip(r); got != want {
			t.Fatalf("Accept-Encoding %q: %v, want %v", v, got, want)
		}
	})
}

// appendFloat's short path for integers prints what strconv's shortest 'g'
// prints.
func TestAppendFloatIsStrconvG(t *testing.T) {
	for _, v := range []float64{0, math.Copysign(0, -1), 1, -1, 42, 999999, -999999, 1e6, -1e6, 1234567, 0.5, -0.25,
		1e-7, 123456.5, 1e21, math.MaxFloat64, math.SmallestNonzeroFloat64, math.Inf(1), math.Inf(-1), math.NaN(), 80 << 30} {
		if got, want := string(appendFloat(nil, v)), strconv.FormatFloat(v, 'g', -1, 64); got != want && !(math.IsInf(v, 1) && got == "+Inf") {
			t.Errorf("%v: %q, want %q", v, got, want)
		}
	}
}

func FuzzAppendFloat(f *testing.F) {
	f.Add(0.0)
	f.Add(999999.0)
	f.Add(-0.5)
	f.Fuzz(func(t *testing.T, v float64) {
		got, want := string(appendFloat(nil, v)), strconv.FormatFloat(v, 'g', -1, 64)
		if math.IsInf(v, 1) {
			want = "+Inf"
		}
		if got != want {
			t.Fatalf("%v: %q, want %q", v, got, want)
		}
	})
}

// A stored member is a gzip member: alone, after a compressed one, empty,
// and longer than one stored block.
func TestAStoredMemberIsGzip(t *testing.T) {
	for _, n := range []int{0, 1, 65535, 65536, 200001} {
		data := bytes.Repeat([]byte("gpuwarden "), n/10+1)[:n]
		stream := append(compress([]byte("head\n"), nil), appendStoredMember(nil, data)...)
		zr, err := gzip.NewReader(bytes.NewReader(stream))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if string(got) != "head\n"+string(data) {
			t.Fatalf("%d bytes: got %d back", n, len(got))
		}
	}
}
