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
	Kind     event.Kind // event.KindXid or event.KindSXid
	Code     int
	Mnemonic string
	Meaning  string
	Severity event.Level
	Action   event.Action
	BadGPU   BadGPU
	Sources  string // source keys, primary first
	Known    bool   // false for the default returned for a code not in the catalog
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
	kind event.Kind
	code int
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

// Parse reads a catalog in the format of catalog.tsv.
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
		if len(f) != 8 {
			return nil, fmt.Errorf("line %d: %d columns, want 8", lineNo, len(f))
		}
		if !header {
			header = true
			if f[0] != "kind" {
				return nil, fmt.Errorf("line %d: want the header row first, got %q", lineNo, f[0])
			}
			continue
		}
		var e Entry
		switch f[0] {
		case "XID":
			e.Kind = event.KindXid
		case "SXID":
			e.Kind = event.KindSXid
		default:
			return nil, fmt.Errorf("line %d: kind %q, want XID or SXID", lineNo, f[0])
		}
		code, err := strconv.Atoi(f[1])
		if err != nil || code <= 0 {
			return nil, fmt.Errorf("line %d: code %q is not a positive number", lineNo, f[1])
		}
		e.Code = code
		e.Mnemonic = f[2]
		if e.Severity, err = event.ParseLevel(f[3]); err != nil || e.Severity == event.Unknown {
			return nil, fmt.Errorf("line %d: severity %q, want ok, warning or critical", lineNo, f[3])
		}
		e.Action = event.Action(f[4])
		if !e.Action.Valid() {
			return nil, fmt.Errorf("line %d: action %q is not in the vocabulary %q", lineNo, f[4], event.Actions)
		}
		switch b := BadGPU(f[5]); b {
		case BadYes, BadIfRepeated, BadNo, BadPlatform, BadUnknown:
			e.BadGPU = b
		default:
			return nil, fmt.Errorf("line %d: bad_gpu %q, want yes, if_repeated, no, platform or unknown", lineNo, f[5])
		}
		e.Sources = f[6]
		e.Meaning = f[7]
		if e.Meaning == "" {
			return nil, fmt.Errorf("line %d: %s %d has no meaning", lineNo, f[0], code)
		}
		e.Known = true
		k := key{e.Kind, code}
		if _, dup := c.entries[k]; dup {
			return nil, fmt.Errorf("line %d: %s %d listed twice", lineNo, f[0], code)
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

// Len is the number of codes in the catalog.
func (c *Catalog) Len() int { return len(c.entries) }

// Lookup returns the entry for an Xid (kind event.KindXid) or SXid
// (event.KindSXid) code. A code the catalog does not know gets a safe
// default: warning, contact support, Known false and a meaning that says so,
// so that a new driver's new code is never silently treated as harmless.
func (c *Catalog) Lookup(kind event.Kind, code int) Entry {
	if e, ok := c.entries[key{kind, code}]; ok {
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
		Severity: event.Warning,
		Action:   event.ActionContactSupport,
		BadGPU:   BadUnknown,
	}
}

// Lookup is Default().Lookup.
func Lookup(kind event.Kind, code int) Entry { return Default().Lookup(kind, code) }
