package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// syntheticState is a host with n GPUs whose every field has a value.
func syntheticState(n int) *State {
	st := NewState("bench-host", 0, time.Hour, time.Now)
	r := gpu.Round{Time: time.Now(), DriverVersion: "550.54.15"}
	for i := 0; i < n; i++ {
		s := &gpu.Sample{GPU: gpu.Info{Index: i, Minor: i, UUID: fmt.Sprintf("GPU-%08x-0000-0000-0000-000000000000", i),
			Name: "NVIDIA H100 80GB HBM3", PCIBusID: fmt.Sprintf("00000000:%02X:00.0", i)}, Time: time.Now(),
			Values: make([]float64, len(gpu.Fields)), Status: make([]gpu.Status, len(gpu.Fields))}
		for f := range s.Values {
			s.Values[f] = float64(i*100 + f)
		}
		r.Samples = append(r.Samples, s)
	}
	st.ApplyRound(r)
	return st
}

// BenchmarkScrape is one full /metrics request as Prometheus makes it
// (gzip accepted), process metrics included; NVML is not involved. "new"
// publishes a new Snapshot before every scrape, so each one renders the text
// afresh (the worst case: a scrape interval longer than the sampling
// interval); "same" scrapes one Snapshot again (scrapes faster than samples).
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{8, 64} {
		for _, fresh := range []bool{true, false} {
			name := fmt.Sprintf("gpus=%d/snapshot=same", n)
			if fresh {
				name = fmt.Sprintf("gpus=%d/snapshot=new", n)
			}
			b.Run(name, func(b *testing.B) {
				st := syntheticState(n)
				h := MetricsHandler(st, NewRegistry())
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.Header.Set("Accept-Encoding", "gzip")
				b.ReportAllocs()
				w := &discard{header: http.Header{}}
				for b.Loop() {
					if fresh {
						b.StopTimer() // publishing is the sampler's cost, not the scrape's
						st.Refresh()
						b.StartTimer()
					}
					h.ServeHTTP(w, req)
				}
				b.ReportMetric(float64(w.n)/float64(b.N), "bytes/scrape")
			})
		}
	}
}

// BenchmarkScrapeEncoding is a scrape of an unchanged snapshot with and
// without Accept-Encoding: gzip: bytes/scrape is what goes on the wire,
// ns/op the CPU a scrape costs (one goroutine, nothing waits).
func BenchmarkScrapeEncoding(b *testing.B) {
	for _, n := range []int{8, 64} {
		for _, enc := range []string{"identity", "gzip"} {
			b.Run(fmt.Sprintf("gpus=%d/enc=%s", n, enc), func(b *testing.B) {
				st := syntheticState(n)
				h := MetricsHandler(st, NewRegistry())
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.Header.Set("Accept-Encoding", enc)
				w := &discard{header: http.Header{}}
				h.ServeHTTP(w, req) // the snapshot's one render (and compression)
				w.n = 0
				b.ReportAllocs()
				for b.Loop() {
					h.ServeHTTP(w, req)
				}
				b.ReportMetric(float64(w.n)/float64(b.N), "bytes/scrape")
			})
		}
	}
}

// BenchmarkRenderSnapshot is the text of a new Snapshot rendered, as the
// first scrape after a publish (or the publish's own background render)
// does it once: every op renders the whole text again. Compression is not
// part of it. Goal: under 1 ms at 64 GPUs.
func BenchmarkRenderSnapshot(b *testing.B) {
	for _, n := range []int{8, 64} {
		b.Run(fmt.Sprintf("gpus=%d", n), func(b *testing.B) {
			snap := syntheticState(n).Snapshot()
			b.ReportAllocs()
			size := 0
			for b.Loop() {
				text, _, _ := snap.renderText()
				size = len(text)
			}
			b.ReportMetric(float64(size), "bytes")
		})
	}
}

// BenchmarkSampleRound is one sampling round of the 8-GPU demo through the
// collector and the replay backend; ns/GPU is the cost per GPU per interval
// on our side (on a live host NVML's own time adds to it).
func BenchmarkSampleRound(b *testing.B) {
	tr, err := replay.Open("../collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		b.Fatal(err)
	}
	p := replay.NewPlayer(tr, replay.PlayerOptions{})
	defer p.Close()
	col := gpu.New(p.Library(), gpu.Options{Log: quiet})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r := col.Sample(ctx); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/8, "ns/GPU")
}

// BenchmarkScrapeDuringNVMLHang scrapes while the sampler is stuck in a
// replayed NVML hang: the figure to compare with BenchmarkScrape/gpus=8.
func BenchmarkScrapeDuringNVMLHang(b *testing.B) {
	tr, err := replay.Open("../collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		b.Fatal(err)
	}
	tr.Records = append(tr.Records, replay.Record{T: 0.001, HangS: -1})
	p := replay.NewPlayer(tr, replay.PlayerOptions{})
	defer p.Close()
	st := NewState("h", 0, time.Hour, time.Now)
	col := gpu.New(p.Library(), gpu.Options{Log: quiet, Timeout: time.Second})
	st.ApplyRound(col.Sample(context.Background()))
	stuck := make(chan struct{})
	go func() { close(stuck); col.Sample(context.Background()) }() // blocks in the hang
	<-stuck
	h := MetricsHandler(st, NewRegistry())
	req := httptest.NewRequest("GET", "/metrics", nil)
	w := &discard{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

// discard is the network: the scrape's cost without a test recorder's copy.
type discard struct {
	header http.Header
	n      int
}

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

// BenchmarkApplyEvents is the cost of a kernel-log flood in State: batches
// of 512 distinct unknown-device Xid lines (about the kernel reader's batch size),
// one publish a batch, on the 8-GPU demo. ns/event is what one record costs
// the consumer; the series stay bounded however many lines come.
func BenchmarkApplyEvents(b *testing.B) {
	tr, err := replay.Open("../collectors/replay/demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		b.Fatal(err)
	}
	p := replay.NewPlayer(tr, replay.PlayerOptions{})
	defer p.Close()
	st := NewState("h", 0, time.Hour, time.Now)
	st.ApplyRound(gpu.New(p.Library(), gpu.Options{Log: quiet}).Sample(context.Background()))
	batch := make([]event.Event, 512)
	for i := range batch {
		batch[i] = kernelEvent(b, fmt.Sprintf("NVRM: Xid (PCI:%04x:%02x:00): %d, pid=%d, name=flood, distinct", 0xe000+i, i%256, []int{13, 31, 5000 + i}[i%3], i))
	}
	b.ReportAllocs()
	for b.Loop() {
		st.ApplyEvents(batch, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(batch)), "ns/event")
	b.ReportMetric(float64(len(st.Snapshot().XidCounts)), "series")
}
