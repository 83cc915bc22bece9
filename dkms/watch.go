package dkms

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// Watcher keeps a Report current: a pass at start, on every Interval, and
// soon after anything changes in the watched trees (inotify, through
// fsnotify) or the trigger file is touched.
type Watcher struct {
	cfg     Config
	checker *Checker
	log     *slog.Logger
	latest  atomic.Pointer[Report]
	kick    chan struct{}
	every   chan time.Duration // a new Interval, from SetInterval

	mu      sync.Mutex
	fsw     *fsnotify.Watcher
	watched map[string]watchRule // host dir -> the rule it was added under
}

// watchRule says which names in a watched directory matter and whether its
// subdirectories are watched too.
type watchRule struct {
	root    string              // the watched tree, inside the root ("/lib/modules")
	names   func(string) bool   // nil: every name
	descend func([]string) bool // given the path below root split on "/", watch it?
}

// NewWatcher returns a Watcher; nothing happens until Run.
func NewWatcher(cfg Config) *Watcher {
	cfg = cfg.withDefaults()
	return &Watcher{
		cfg:     cfg,
		checker: NewChecker(cfg),
		log:     cfg.Logger.With("collector", "dkms"),
		kick:    make(chan struct{}, 1),
		every:   make(chan time.Duration, 1),
		watched: map[string]watchRule{},
	}
}

// Latest returns the newest Report; ok is false before the first pass ends.
func (w *Watcher) Latest() (Report, bool) {
	r := w.latest.Load()
	if r == nil {
		return Report{}, false
	}
	return *r, true
}

// Health returns the health summary of the newest Report; Unknown with a
// reason before the first pass ends.
func (w *Watcher) Health() Health {
	r, ok := w.Latest()
	if !ok {
		return Health{Level: event.Unknown, Reasons: []string{"dkms: first check not finished"}}
	}
	return r.Health()
}

// TriggerFile returns the host path of the trigger file the hooks touch.
func (w *Watcher) TriggerFile() string { return w.cfg.Paths.Root(w.cfg.TriggerFile) }

// CheckNow asks for a pass as soon as possible (coalesced with a pending one).
func (w *Watcher) CheckNow() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// SetInterval changes how often the checks run besides on change, from the
// next tick on (a configuration reload). The latest call wins.
func (w *Watcher) SetInterval(d time.Duration) {
	if d <= 0 {
		return // a ticker cannot run at that: keep the current interval
	}
	for {
		select {
		case w.every <- d:
			return
		default:
		}
		select {
		case <-w.every: // drop the older pending value
		default:
		}
	}
}

// Run checks once, then keeps checking until ctx is done. Without inotify
// (no permission, watch limit reached) it logs why once and keeps the timer.
func (w *Watcher) Run(ctx context.Context) error {
	var fsw *fsnotify.Watcher
	var err error
	if w.cfg.Recorded == nil { // recorded facts: this host's files are not the node's
		fsw, err = fsnotify.NewWatcher()
	}
	if err != nil {
		w.log.Warn("file watch unavailable, checking on the timer only",
			"err", err, "interval", w.cfg.Interval, "fix", "raise fs.inotify.max_user_instances")
	} else if fsw != nil {
		w.fsw = fsw
		defer fsw.Close()
	}
	w.addRoots()
	w.pass(ctx)

	var events chan fsnotify.Event
	var errs chan error
	if w.fsw != nil {
		events, errs = w.fsw.Events, w.fsw.Errors
	}
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	// Trailing debounce: a pass once the burst has been quiet for Debounce,
	// and at least every 10 Debounces while it lasts.
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	limit := time.NewTimer(time.Hour)
	limit.Stop()
	pending := false
	schedule := func() {
		quiet.Reset(w.cfg.Debounce)
		if !pending {
			pending = true
			limit.Reset(10 * w.cfg.Debounce)
		}
	}
	run := func() {
		pending = false
		quiet.Stop()
		limit.Stop()
		w.addRoots() // a tree that did not exist at start may exist now
		w.pass(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			run()
		case d := <-w.every:
			tick.Reset(d)
		case <-w.kick:
			schedule()
		case <-quiet.C:
			run()
		case <-limit.C:
			run()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if w.relevant(ev) {
				schedule()
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Overflow (IN_Q_OVERFLOW) loses events: look again to be safe.
			w.log.Warn("file watch error, checking now", "err", err)
			schedule()
		}
	}
}

// pass runs the checks, publishes the report and logs what changed.
func (w *Watcher) pass(ctx context.Context) {
	r := w.checker.Check(ctx)
	prev := w.latest.Swap(&r)
	for _, f := range changes(prev, r) {
		if prev == nil && f.Level == event.OK {
			continue // the first pass logs only what is wrong
		}
		w.logFinding(f)
		if w.cfg.OnEvent != nil {
			w.cfg.OnEvent(findingEvent(r.Time, f))
		}
	}
	if w.cfg.OnReport != nil {
		w.cfg.OnReport(r)
	}
	if prev == nil || prev.Level != r.Level {
		w.log.Info("driver consistency", "level", r.Level.String(), "running", r.Facts.RunningKernel,
			"next_boot", r.Facts.NextBoot.Kernel, "findings", len(r.Findings()))
	}
}

func (w *Watcher) logFinding(f Finding) {
	attrs := []any{"check", f.Check, "level", f.Level.String(), "summary", f.Summary}
	if f.Fix != "" {
		attrs = append(attrs, "fix", f.Fix)
	}
	switch f.Level {
	case event.OK:
		w.log.Info("check ok", attrs...)
	case event.Critical:
		w.log.Error("check failed", attrs...)
	default:
		w.log.Warn("check not ok", attrs...)
	}
}

// roots are the trees watched, inside the root, with their rules.
func (w *Watcher) roots() []watchRule {
	trigger := path.Base(w.cfg.TriggerFile)
	return []watchRule{
		{root: "/lib/modules", descend: libModulesDir},
		{root: "/var/lib/dkms", descend: dkmsDir},
		{root: "/boot", descend: func(p []string) bool { return len(p) <= 3 }},
		// /var/run is a link to /run on every current system; resolve() follows it.
		{root: "/var/run", names: func(n string) bool { return strings.HasPrefix(n, "reboot-required") }},
		{root: path.Dir(w.cfg.TriggerFile), names: func(n string) bool { return n == trigger }},
	}
}

// libModulesDir picks, below /lib/modules, the kernel directories and the
// places an nvidia.ko can land (see moduleDirs), not the whole kernel tree
// (hundreds of directories per kernel).
func libModulesDir(p []string) bool {
	if len(p) <= 1 {
		return true // /lib/modules/K
	}
	switch p[1] {
	case "updates", "extra", "weak-updates":
		return len(p) <= 5
	case "kernel":
		switch {
		case len(p) == 2:
			return true
		case strings.HasPrefix(p[2], "nvidia"):
			return len(p) <= 4
		case p[2] == "drivers":
			return len(p) == 3 || (p[3] == "video" && len(p) <= 5)
		}
	}
	return false
}

// dkmsDir watches the whole DKMS tree except inside build/ (a compile
// creates thousands of files there; make.log appearing in build/ itself is
// still seen).
func dkmsDir(p []string) bool {
	return !(len(p) >= 4 && p[2] == "build") && len(p) <= 6
}

// addRoots adds a watch for every root that exists and is not watched yet.
func (w *Watcher) addRoots() {
	if w.fsw == nil {
		return
	}
	for _, rule := range w.roots() {
		if rule.root == path.Dir(w.cfg.TriggerFile) {
			// The agent owns this runtime directory; make it so the hooks'
			// touch lands in a watched place. A read-only root is fine.
			_ = os.MkdirAll(w.cfg.Paths.Root(rule.root), 0o755)
		}
		host, err := w.cfg.Paths.Resolve(rule.root)
		if err != nil {
			continue // not there (yet); retried after every pass
		}
		w.addTree(host, host, rule)
	}
}

// addTree watches dir and the subdirectories below it that the rule
// wants; top is the rule's root as a host path.
func (w *Watcher) addTree(top, dir string, rule watchRule) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != top && !wants(rule, top, p) {
			return filepath.SkipDir
		}
		w.mu.Lock()
		_, done := w.watched[p]
		w.mu.Unlock()
		if done {
			return nil
		}
		if err := w.fsw.Add(p); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // removed while walking
			}
			w.log.Warn("cannot watch directory", "dir", p, "err", err,
				"fix", "raise fs.inotify.max_user_watches; changes there are seen on the timer")
			return filepath.SkipDir
		}
		w.mu.Lock()
		w.watched[p] = rule
		w.mu.Unlock()
		return nil
	})
}

// wants applies the rule to a directory below its root.
func wants(rule watchRule, top, dir string) bool {
	if rule.descend == nil {
		return false
	}
	rel, err := filepath.Rel(top, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return false
	}
	return rule.descend(strings.Split(filepath.ToSlash(rel), "/"))
}

// relevant decides whether an event asks for a pass, and watches a new
// directory that its rule wants.
func (w *Watcher) relevant(ev fsnotify.Event) bool {
	dir := filepath.Dir(ev.Name)
	w.mu.Lock()
	rule, ok := w.watched[dir]
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		delete(w.watched, ev.Name) // inotify drops the watch of a removed directory
	}
	w.mu.Unlock()
	if !ok {
		return false
	}
	if rule.names != nil && !rule.names(filepath.Base(ev.Name)) {
		return false
	}
	if ev.Has(fsnotify.Create) && rule.descend != nil {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			if top, err := w.cfg.Paths.Resolve(rule.root); err == nil && wants(rule, top, ev.Name) {
				// Files made in the new directory before its watch existed
				// are missed by inotify; the pass this event asks for reads them.
				w.addTree(top, ev.Name, rule)
			}
		}
	}
	return true
}
