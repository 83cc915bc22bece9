package ebpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
	"github.com/gpuwarden/gpuwarden/collectors/source"
)

// The record kinds, for records written into traces (the scenario
// simulator's).
const (
	RecordOOM        = kindOOM
	RecordAER        = kindAER
	RecordModuleLoad = kindModuleLoad
	RecordModuleFree = kindModuleFree
)

// AERSeverityCode is the AER driver's severity number for the kmsg
// classifier's word (aerSeverity's inverse).
func AERSeverityCode(word string) (uint8, bool) {
	for s := uint8(0); s <= 2; s++ {
		if aerSeverity(s) == word {
			return s, true
		}
	}
	return 0, false
}

// Captured is one record as `gpuwarden record` keeps it in a trace.
type Captured struct {
	Raw []byte // EncodeTrace's layout
	// Memcg is an OOM victim's memory cgroup path on the recording host
	// ("" when not found): the replaying host cannot look it up.
	Memcg string
}

// Capture loads and attaches the programs, as the source does, and passes
// on every record they write, in a trace's layout, until ctx ends; then the
// channel is closed. A program that cannot attach is logged, as the source
// logs it, and the rest are captured; with none attached it is an error.
// A full channel drops: a storm keeps what fits.
func Capture(ctx context.Context, paths hostfs.Paths, log *slog.Logger) (<-chan Captured, error) {
	o, err := Load()
	if err != nil {
		return nil, source.WithFix(err, fixLoad)
	}
	(&Source{Log: log}).logStates(o.States)
	if len(o.Progs) == 0 {
		var errs []error
		for _, st := range o.States {
			errs = append(errs, st.Err)
		}
		o.Close()
		return nil, fmt.Errorf("no eBPF program could attach: %w", errors.Join(errs...))
	}
	rd, err := ringbuf.NewReader(o.Events)
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("read the BPF ring buffer: %w", err)
	}
	out := make(chan Captured, queueLen)
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	go func() {
		defer close(out)
		defer o.Close()
		eachRecord(rd, func(sample []byte) {
			r, err := Decode(sample)
			if err != nil {
				return
			}
			c := Captured{Raw: r.EncodeTrace()}
			if r.Kind == kindOOM && r.CgroupID != 0 {
				c.Memcg = memcgPath(paths, r.CgroupID)
			}
			select {
			case out <- c:
			default:
			}
		})
	}()
	return out, nil
}
