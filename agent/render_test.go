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
// the process's series compressed when they were gathered, and the ages
// encoded from the snapshot's plan. Its body decompresses to exactly the identity body. A new
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

// agesSnapshot is a Snapshot whose age lines are prefixes, sampled ago[i]
// nanoseconds before now.
func agesSnapshot(head string, prefixes []string, now time.Time, ago []int64) *Snapshot {
	s := &Snapshot{}
	s.render.once.Do(func() {})
	s.render.agesHead = head
	for i, p := range prefixes {
		s.render.ages = append(s.render.ages, ageLine{prefix: p, at: now.Add(-time.Duration(ago[i%len(ago)]))})
	}
	return s
}

// checkAgesMember decompresses the ages member, after a compressed member
// as a scrape sends it, and compares it with the plain text.
func checkAgesMember(t *testing.T, s *Snapshot, now time.Time) int {
	t.Helper()
	member, text := s.appendAgesMember(nil, nil, now)
	if want := s.appendAges(nil, now); string(text) != string(want) {
		t.Fatalf("the member's text is not the plain ages")
	}
	if len(text) == 0 {
		if len(member) != 0 {
			t.Fatal("a member without ages")
		}
		return 0
	}
	zr, err := gzip.NewReader(bytes.NewReader(append(compress([]byte("head\n"), nil), member...)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("the ages member does not decompress: %v", err)
	}
	if string(got) != "head\n"+string(text) {
		t.Fatalf("the ages member decompresses to\n%q\nwant\n%q", got, "head\n"+string(text))
	}
	return len(member)
}

// The ages member is the ages, for label sets that differ in length (index
// 9 to 10), in their middle, not at all, or wholly, and for values of any
// length; and it is smaller than the text.
func TestTheAgesMemberIsTheAges(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var prefixes []string
	for i := range 12 {
		prefixes = append(prefixes, fmt.Sprintf(`%s{gpu="%d",UUID="GPU-%08x-1111-2222-3333-444444444444",pci_bus_id="00000000:%02X:00.0",device="nvidia%d",modelName="NVIDIA H100 80GB HBM3",Hostname="node-%d",DCGM_FI_DRIVER_VERSION="550.54.15"} `, ageName, i, i*7919, i+0x18, i, i/5))
	}
	prefixes = append(prefixes, prefixes[11], "x ", strings.Repeat("y", 300)+" ", "ab ", "abc ", prefixes[0])
	ago := []int64{0, 1, 1500000000, 123456789012, 999, 7e15, 250e6}
	size := checkAgesMember(t, agesSnapshot("# HELP a b\n# TYPE a gauge\n", prefixes, now, ago), now)
	if text := agesSnapshot("# HELP a b\n# TYPE a gauge\n", prefixes, now, ago).appendAges(nil, now); size*3 > len(text)*2 {
		t.Errorf("the ages member is %d bytes for %d of text", size, len(text))
	}
	checkAgesMember(t, agesSnapshot("", nil, now, ago), now)
	checkAgesMember(t, agesSnapshot("h\n", []string{"only "}, now, ago), now)
}

// FuzzAgesMember: any two label sets and ages decompress to their text.
func FuzzAgesMember(f *testing.F) {
	f.Add(`a{gpu="9"} `, `a{gpu="10"} `, `a{gpu="11"} `, int64(5), int64(1e9))
	f.Add("", "", "x", int64(0), int64(-1))
	f.Add(strings.Repeat("ab", 200), strings.Repeat("ab", 201), "b", int64(1), int64(2))
	f.Fuzz(func(t *testing.T, p0, p1, p2 string, a0, a1 int64) {
		now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		checkAgesMember(t, agesSnapshot("# h\n", []string{p0 + " ", p1 + " ", p2 + " ", p1 + " "}, now, []int64{a0, a1}), now)
	})
}

// The match tables agree with deflate's: every length and distance maps to
// the symbol whose range holds it.
func TestMatchCodes(t *testing.T) {
	for n := minMatch; n <= maxMatch; n++ {
		i := lengthCode[n]
		if n < int(lengthBase[i]) || n >= int(lengthBase[i])+1<<lengthExtra[i] && n != maxMatch {
			t.Fatalf("length %d: symbol %d", n, 257+int(i))
		}
	}
	for d := 1; d <= maxDist; d++ {
		c := distCode(d)
		if d < int(distBase[c]) || d >= int(distBase[c])+1<<distExtra[c] {
			t.Fatalf("distance %d: code %d", d, c)
		}
	}
}
