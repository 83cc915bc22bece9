package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
)

// kmsgSource runs the one kernel-log reader and applies its NVIDIA events.
// Without /dev/kmsg or the permission to read it, it reports the collector
// down with the fix and tries again on a backoff; the rest keeps running.
type kmsgSource struct {
	path, stateDir, procfs string
	log                    *slog.Logger
	reader                 atomic.Pointer[kmsg.Reader]
	// rejected counts records refused by the trust rules, by reason: text
	// that looks like a driver line but that a user could have written.
	rejectedName, rejectedMalformed atomic.Uint64
}

func (s *kmsgSource) Name() string { return "kmsg" }

func (s *kmsgSource) Run(ctx context.Context, state *agent.State) error {
	// The ring buffer holds what happened since boot, read in a burst at
	// start: wait for the first GPU round so those events find their GPU
	// (an Xid 79 from before the agent started must still mark it).
	waitForFirstRound(ctx, state, 15*time.Second)
	backoff := 5 * time.Second
	lastErr := ""
	for ctx.Err() == nil {
		r, err := kmsg.Open(kmsg.Config{Path: s.path, StateDir: s.stateDir, RereadSeen: true, Logger: s.log})
		if err != nil {
			state.SetCollector("kmsg", false, err, "", 0)
			if err.Error() != lastErr {
				lastErr = err.Error()
				s.log.Error("kernel-log collector down; retrying on a backoff", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Minute)
			continue
		}
		if err := r.StateError(); err != nil {
			s.log.Warn("kernel-log cursor was corrupt and was moved aside", "err", err)
		}
		s.reader.Store(r)
		lastErr, backoff = "", 5*time.Second
		state.SetCollector("kmsg", true, nil, "", 0)
		boot := bootTime(s.procfs)
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		for batch := range r.Batches() {
			start := time.Now()
			for _, rec := range batch.Records {
				// Classified once here: almost every record is unrelated
				// and ends at this check; only the rest become events.
				if c := kmsg.Classify(rec.Message); c.Kind == event.KindUnrelated {
					if !rec.Seen {
						switch c.Rejected {
						case kmsg.RejectProcessName:
							s.rejectedName.Add(1)
						case kmsg.RejectMalformed:
							s.rejectedMalformed.Add(1)
						}
					}
					continue
				}
				ev, ok := recordEvent(rec, "kmsg", r.BootID(), boot)
				switch {
				case !ok:
				case rec.Seen:
					state.RestoreEvent(ev) // applied before a restart: health back, no count
				default:
					state.ApplyEvent(ev)
				}
			}
			batch.Ack() // applied: a restart resumes after it
			state.SetCollector("kmsg", true, nil, "", time.Since(start))
		}
		r.Close() // writes the last acknowledged cursor
		if err := <-done; err != nil && ctx.Err() == nil {
			state.SetCollector("kmsg", false, err, "", 0)
			s.log.Error("kernel-log reader stopped; reopening", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
		}
	}
	return nil
}

// waitForFirstRound returns once the GPU collector has reported a round
// (with GPUs or with the reason it has none), or after limit.
func waitForFirstRound(ctx context.Context, state *agent.State, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil && state.Snapshot().Collector("gpu") == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// bootTime is the wall-clock time of boot: now less the uptime. Kernel
// records carry time since boot.
func bootTime(procfs string) time.Time {
	b, err := os.ReadFile(filepath.Join(procfs, "uptime"))
	if err != nil {
		return time.Now()
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return time.Now()
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(up * float64(time.Second)))
}

// readerCounters are the reader's counters as series, one per Stats field.
var readerCounters = []struct {
	desc *prometheus.Desc
	get  func(kmsg.Stats) uint64
}{
	{prometheus.NewDesc("gpuwarden_kmsg_lost_records_total",
		"Kernel-log records the kernel overwrote before gpuwarden read them (SEQ gaps after EPIPE).", nil, nil),
		func(s kmsg.Stats) uint64 { return s.Lost }},
	{prometheus.NewDesc("gpuwarden_kmsg_records_total",
		"Kernel-log records gpuwarden read, NVIDIA-related or not.", nil, nil),
		func(s kmsg.Stats) uint64 { return s.Records }},
	{prometheus.NewDesc("gpuwarden_kmsg_overruns_total",
		"Times the kernel log overran gpuwarden's reader (read returned EPIPE).", nil, nil),
		func(s kmsg.Stats) uint64 { return s.Overruns }},
	{prometheus.NewDesc("gpuwarden_kmsg_dropped_records_total",
		"Kernel-log records read but dropped because the consumer's queue was full.", nil, nil),
		func(s kmsg.Stats) uint64 { return s.Dropped }},
	{prometheus.NewDesc("gpuwarden_kmsg_malformed_records_total",
		"Kernel-log records that did not parse as /dev/kmsg records.", nil, nil),
		func(s kmsg.Stats) uint64 { return s.Malformed }},
	{prometheus.NewDesc("gpuwarden_kmsg_skipped_records_total",
		"Kernel-log records at or before the saved cursor, not counted again.", nil, nil),
		func(s kmsg.Stats) uint64 { return s.Skipped }},
	{prometheus.NewDesc("gpuwarden_kmsg_cursor_save_failures_total",
		"Kernel-log cursor writes that failed.", nil, nil),
		func(s kmsg.Stats) uint64 { return s.SaveFails }},
}

var descKmsgRejected = prometheus.NewDesc("gpuwarden_kmsg_rejected_records_total",
	"Kernel-log records that look like NVIDIA driver lines but fail the trust rules (a process name first, or the driver's grammar broken), by reason.",
	[]string{"reason"}, nil)

func (s *kmsgSource) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range readerCounters {
		ch <- c.desc
	}
	ch <- descKmsgRejected
}

func (s *kmsgSource) Collect(ch chan<- prometheus.Metric) {
	var st kmsg.Stats
	if r := s.reader.Load(); r != nil {
		st = r.Stats()
	}
	for _, c := range readerCounters {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.get(st)))
	}
	ch <- prometheus.MustNewConstMetric(descKmsgRejected, prometheus.CounterValue, float64(s.rejectedName.Load()), kmsg.RejectProcessName)
	ch <- prometheus.MustNewConstMetric(descKmsgRejected, prometheus.CounterValue, float64(s.rejectedMalformed.Load()), kmsg.RejectMalformed)
}
