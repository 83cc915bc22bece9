// Package xid is the XID and SXID catalog: for each code NVIDIA's mnemonic,
// what it means in plain words, how bad it is (an event.Level), what an
// operator should do about it from a small fixed vocabulary, and whether the
// GPU is likely bad.
//
// The catalog is data (catalog.tsv, embedded and parsed once on first use)
// so that updating it for a new driver release is an edit to one table, not to
// code. Its header names the NVIDIA documents the facts come from and a
// version string that the agent can export.
//
// Enrich fills an event.Event's Severity, Mnemonic, Explanation and Action for
// every kernel-log kind, not only Xids, so that every reader of the event
// stream (metrics, /v1/events, explain, remediation) gives the same advice.
package xid

import (
	_ "embed"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// BadGPU says how strongly a code points at faulty GPU hardware.
type BadGPU string

const (
	BadYes        BadGPU = "yes"         // hardware fault even on first sight
	BadIfRepeated BadGPU = "if_repeated" // reset first; recurrence on the same GPU means hardware
	BadNo         BadGPU = "no"          // application, driver, configuration or information
	BadPlatform   BadGPU = "platform"    // cabling, power, PCIe or cooling rather than the GPU
	BadUnknown    BadGPU = "unknown"
)

// Entry is one catalog row.
type Entry struct {
	Kind     event.Kind // event.KindXid, event.KindSXid, or another kernel-event kind
	Code     int        // the Xid or SXid number; 0 for other kinds
	Variant  string     // for other kinds: "" for the kind as a whole, or the severity the line states
	Mnemonic string
	Meaning  string
	Severity event.Level
	Action   event.Action
	// Health is how long one occurrence weighs on health: none, the
	// agent's event window, or the rest of the boot.
	Health event.HealthDuration
	// PointsAtGPU is true when the event weighs on the GPU at its bus id,
	// false when it weighs on the host (an NVSwitch, the CPU, the driver).
	PointsAtGPU bool
	BadGPU      BadGPU
	Sources     string // source keys, primary first
	Known       bool   // false for the default returned for a code not in the catalog
}

// LikelyBadGPU reports whether one occurrence is enough to suspect the GPU.
func (e Entry) LikelyBadGPU() bool { return e.BadGPU == BadYes }

// Catalog is the loaded table.
type Catalog struct {
	Version string   // the catalog-version line of the embedded file
	Source  []string // the source lines of the embedded file
	entries map[key]Entry
}

type key struct {
	kind    event.Kind
	code    int
	variant string
}

//go:embed catalog.tsv
var catalogTSV string

var (
	loadOnce sync.Once
	loaded   *Catalog
)

// Default returns the embedded catalog, parsed on first use. The embedded file
// is checked by the package tests, so a parse failure here is a build defect
// and panics.
func Default() *Catalog {
	loadOnce.Do(func() {
		c, err := Parse(catalogTSV)
		if err != nil {
			panic(fmt.Sprintf("xid: embedded catalog.tsv: %v", err))
		}
		loaded = c
	})
	return loaded
}

// columns is the header row catalog.tsv must start with.
var columns = []string{"kind", "code", "mnemonic", "severity", "action", "health", "points_at_gpu", "bad_gpu", "sources", "meaning"}

// Parse reads a catalog in the format of catalog.tsv. An error names the
// line and the column that is wrong.
func Parse(text string) (*Catalog, error) {
	c := &Catalog{entries: make(map[key]Entry, 300)}
	header := false
	for n, line := range strings.Split(text, "\n") {
		lineNo := n + 1
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			body := strings.TrimSpace(strings.TrimPrefix(line, "#"))
			if v, ok := strings.CutPrefix(body, "catalog-version:"); ok {
				c.Version = strings.TrimSpace(v)
			} else if v, ok := strings.CutPrefix(body, "source:"); ok {
				c.Source = append(c.Source, strings.TrimSpace(v))
			}
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != len(columns) {
			return nil, fmt.Errorf("line %d: %d columns, want %d (%s)", lineNo, len(f), len(columns), strings.Join(columns, ", "))
		}
		if !header {
			header = true
			if strings.Join(f, "\t") != strings.Join(columns, "\t") {
				return nil, fmt.Errorf("line %d: want the header row %q first, got %q", lineNo, strings.Join(columns, " "), strings.Join(f, " "))
			}
			continue
		}
		e, err := parseRow(f)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNo, err)
		}
		k := key{e.Kind, e.Code, e.Variant}
		if _, dup := c.entries[k]; dup {
			return nil, fmt.Errorf("line %d: %s %s listed twice", lineNo, f[0], f[1])
		}
		c.entries[k] = e
	}
	if c.Version == "" {
		return nil, fmt.Errorf("no '# catalog-version:' line")
	}
	if len(c.entries) == 0 {
		return nil, fmt.Errorf("no rows")
	}
	return c, nil
}

// parseRow reads one row's columns, in the order of columns.
func parseRow(f []string) (Entry, error) {
	var e Entry
	switch f[0] {
	case "XID":
		e.Kind = event.KindXid
	case "SXID":
		e.Kind = event.KindSXid
	default:
		// Any other kind the classifier emits has rows of its own; a new
		// kind is one classifier rule and its rows here.
		if f[0] == "" || strings.ContainsFunc(f[0], func(r rune) bool { return (r < 'a' || r > 'z') && r != '_' }) {
			return e, fmt.Errorf("kind %q, want XID, SXID or a kernel-event kind in lower case (%s)", f[0], kindList())
		}
		e.Kind = event.Kind(f[0])
	}
	if e.Kind == event.KindXid || e.Kind == event.KindSXid {
		code, err := strconv.Atoi(f[1])
		if err != nil || code <= 0 {
			return e, fmt.Errorf("code %q is not a positive number", f[1])
		}
		e.Code = code
	} else if f[1] != "-" {
		if f[1] == "" || strings.ContainsFunc(f[1], func(r rune) bool { return r < 'a' || r > 'z' }) {
			return e, fmt.Errorf("code %q: a %s row's code is - or a lower-case variant", f[1], f[0])
		}
		e.Variant = f[1]
	}
	e.Mnemonic = f[2]
	var err error
	if e.Severity, err = event.ParseLevel(f[3]); err != nil || e.Severity == event.Unknown {
		return e, fmt.Errorf("severity %q, want ok, warning or critical", f[3])
	}
	e.Action = event.Action(f[4])
	if !e.Action.Valid() {
		return e, fmt.Errorf("action %q is not in the vocabulary %q", f[4], event.Actions)
	}
	if e.Health, err = event.ParseHealthDuration(f[5]); err != nil {
		return e, fmt.Errorf("health: %w", err)
	}
	switch f[6] {
	case "yes":
		e.PointsAtGPU = true
	case "no":
	default:
		return e, fmt.Errorf("points_at_gpu %q, want yes or no", f[6])
	}
	switch b := BadGPU(f[7]); b {
	case BadYes, BadIfRepeated, BadNo, BadPlatform, BadUnknown:
		e.BadGPU = b
	default:
		return e, fmt.Errorf("bad_gpu %q, want yes, if_repeated, no, platform or unknown", f[7])
	}
	e.Sources = f[8]
	e.Meaning = f[9]
	if e.Meaning == "" {
		return e, fmt.Errorf("%s %s has no meaning", f[0], f[1])
	}
	if e.Severity == event.OK && e.Health != event.DurationNone {
		return e, fmt.Errorf("health %q for severity ok: an ok event weighs on nothing (want none)", f[5])
	}
	e.Known = true
	return e, nil
}

// rowKinds are the kernel-event kinds, besides Xid and SXid, that have rows.
var rowKinds = map[event.Kind]bool{
	event.KindFallenOffBus: true, event.KindRmInitFailed: true, event.KindAPIMismatch: true,
	event.KindGPUIdentity: true, event.KindDriverLoaded: true, event.KindOtherNVRM: true,
	event.KindAER: true, event.KindMCE: true,
}

func kindList() string {
	var ks []string
	for k := range rowKinds {
		ks = append(ks, string(k))
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// Len is the number of Xid and SXid codes in the catalog.
func (c *Catalog) Len() int { return len(c.Codes(event.KindXid)) + len(c.Codes(event.KindSXid)) }

// Codes returns the catalog's codes of kind (Xid or SXid), in order.
func (c *Catalog) Codes(kind event.Kind) []int {
	var codes []int
	for k := range c.entries {
		if k.kind == kind && k.code > 0 {
			codes = append(codes, k.code)
		}
	}
	sort.Ints(codes)
	return codes
}

// Lookup returns the entry for an Xid (kind event.KindXid) or SXid
// (event.KindSXid) code. A code the catalog does not know gets a safe
// default: warning, contact support, Known false and a meaning that says so,
// so that a new driver's new code is never silently treated as harmless.
func (c *Catalog) Lookup(kind event.Kind, code int) Entry {
	if e, ok := c.entries[key{kind, code, ""}]; ok {
		return e
	}
	name := "Xid"
	if kind == event.KindSXid {
		name = "SXid"
	}
	return Entry{
		Kind:     kind,
		Code:     code,
		Mnemonic: "UNKNOWN",
		Meaning: fmt.Sprintf("%s %d is not in gpuwarden's catalog (version %s); it may be new in this driver. "+
			"Look it up in NVIDIA's Xid documentation.", name, code, c.Version),
		Severity:    event.Warning,
		Action:      event.ActionContactSupport,
		Health:      event.DurationWindow,
		PointsAtGPU: kind == event.KindXid,
		BadGPU:      BadUnknown,
	}
}

// LookupKind returns the row for a kernel-event kind other than Xid and
// SXid: the variant's row when there is one, else the kind's own ("-").
// ok is false for a kind the catalog has no row for.
func (c *Catalog) LookupKind(kind event.Kind, variant string) (Entry, bool) {
	if variant != "" {
		if e, ok := c.entries[key{kind, 0, variant}]; ok {
			return e, true
		}
	}
	e, ok := c.entries[key{kind, 0, ""}]
	return e, ok
}

// Lookup is Default().Lookup.
func Lookup(kind event.Kind, code int) Entry { return Default().Lookup(kind, code) }
