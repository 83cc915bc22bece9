package dcgm

import (
	"context"
	"errors"
	"sync"
	"time"
)

// fake is a DCGM that answers from its fields and records every call.
type fake struct {
	mu       sync.Mutex
	initErr  error
	devices  []Device
	profErr  error
	prof     []uint16
	values   map[uint][]Value
	incident []Incident
	viol     chan Violation
	calls    []string
	watching bool
	watches  int
}

func (f *fake) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fake) Watching() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watching
}

func (f *fake) Init(string) error { f.record("Init"); return f.initErr }
func (f *fake) Shutdown() error   { f.record("Shutdown"); return nil }
func (f *fake) Devices() ([]Device, error) {
	f.record("Devices")
	return f.devices, nil
}

func (f *fake) ProfilingFields(uint) ([]uint16, error) {
	f.record("ProfilingFields")
	return f.prof, f.profErr
}

func (f *fake) WatchProfiling(gpus []uint, fields []uint16, every time.Duration) (Watch, error) {
	f.record("WatchProfiling")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.watching {
		return nil, errors.New("already watching")
	}
	f.watching = true
	f.watches++
	return fakeWatch{f}, nil
}

func (f *fake) WatchHealth([]uint) (HealthWatch, error) {
	f.record("WatchHealth")
	return fakeHealth{f}, nil
}

func (f *fake) Policies(ctx context.Context, _ []uint) (<-chan Violation, error) {
	f.record("Policies")
	out := make(chan Violation)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case v := <-f.viol:
				select {
				case out <- v:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

type fakeWatch struct{ f *fake }

func (w fakeWatch) Latest(gpu uint) ([]Value, error) {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	return w.f.values[gpu], nil
}

func (w fakeWatch) Close() error {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	w.f.watching = false
	return nil
}

type fakeHealth struct{ f *fake }

func (h fakeHealth) Check() ([]Incident, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	return h.f.incident, nil
}

func (h fakeHealth) Close() error { return nil }
