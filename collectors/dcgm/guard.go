package dcgm

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errNotUp answers every call made while DCGM is not initialised.
var errNotUp = errors.New("DCGM is not initialised")

// guard is the one owner of "is DCGM up": a call into DCGM after a failed
// Init (or after Shutdown) kills the process on an unresolved symbol, so
// every call goes through here and is answered errNotUp unless the last
// Init succeeded and no Shutdown followed. Watches handed out are wrapped
// the same way.
type guard struct {
	lib Library

	mu sync.Mutex
	up bool
}

func (g *guard) Init(address string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.up {
		return nil
	}
	if err := g.lib.Init(address); err != nil {
		return err
	}
	g.up = true
	return nil
}

func (g *guard) Shutdown() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.up {
		return nil
	}
	g.up = false
	return g.lib.Shutdown()
}

// call runs f while DCGM is up; f runs under the lock, so a Shutdown waits
// for a call in flight.
func (g *guard) call(f func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.up {
		return errNotUp
	}
	return f()
}

func (g *guard) Devices() (d []Device, err error) {
	err = g.call(func() error { d, err = g.lib.Devices(); return err })
	return d, err
}

func (g *guard) ProfilingFields(gpu uint) (f []uint16, err error) {
	err = g.call(func() error { f, err = g.lib.ProfilingFields(gpu); return err })
	return f, err
}

func (g *guard) WatchProfiling(gpus []uint, fields []uint16, every time.Duration) (Watch, error) {
	var w Watch
	err := g.call(func() (err error) { w, err = g.lib.WatchProfiling(gpus, fields, every); return err })
	if err != nil {
		return nil, err
	}
	return guardedWatch{g, w}, nil
}

func (g *guard) WatchHealth(gpus []uint) (HealthWatch, error) {
	var h HealthWatch
	err := g.call(func() (err error) { h, err = g.lib.WatchHealth(gpus); return err })
	if err != nil {
		return nil, err
	}
	return guardedHealth{g, h}, nil
}

func (g *guard) Policies(ctx context.Context, gpus []uint) (c <-chan Violation, err error) {
	err = g.call(func() error { c, err = g.lib.Policies(ctx, gpus); return err })
	return c, err
}

type guardedWatch struct {
	g *guard
	w Watch
}

func (w guardedWatch) Latest(gpu uint) (v []Value, err error) {
	err = w.g.call(func() error { v, err = w.w.Latest(gpu); return err })
	return v, err
}

func (w guardedWatch) Close() error { return w.g.call(w.w.Close) }

type guardedHealth struct {
	g *guard
	h HealthWatch
}

func (h guardedHealth) Check() (in []Incident, err error) {
	err = h.g.call(func() error { in, err = h.h.Check(); return err })
	return in, err
}

func (h guardedHealth) Close() error { return h.g.call(h.h.Close) }
