// Package explain is the logic of `gpuwarden explain`: it reads kernel-log
// text in any common wrapper (raw /dev/kmsg records, dmesg in its various
// formats, kern.log/syslog, journalctl -k, talosctl, and
// nvidia-bug-report.log, gzipped or not) and says, per GPU, what happened,
// what it means and what to do.
//
// Three outputs share one classifier, the agent's (kmsg.ClassifyLine), read
// leniently in one respect only: an Xid or SXid whose address was redacted
// by whoever pasted the log ("PCI:0000:xx:00") is still reported, without a
// bus id, marked accepted_leniently in JSON and "accepted leniently" in the
// report (kmsg.ClassifyLineLenient). Lines the agent refuses for any other
// reason (see the kmsg package's Trust rules) are unrelated here too.
//
//   - Lines: one JSON object per input line, in order, each line classified
//     on its own, with the keys line, kind, pci_bus_id, xid, pid and
//     process_name. Extra line classifiers can be registered (see Register):
//     they are tried first, in registration order, so other parts of
//     gpuwarden (driver-version and `dkms status` parsers) can make explain
//     understand their lines too.
//   - Events: the kernel events found, as event.Event values with the XID
//     catalog's advice (--output json prints them as JSON Lines).
//   - WriteReport: the human summary, grouped by PCI bus id.
//
// Input text is data: it is kept verbatim in JSON and escaped in the human
// report, so a process name carrying terminal escapes or shell syntax
// cannot act on the reader's terminal.
package explain

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
)

// LineClassifier recognizes one kind of line. It returns the fields of its
// JSON object (at least "kind"; "line" is added by explain, and any of the
// six standard keys it leaves out are written as "" or null) and ok true, or
// ok false to let the next classifier try. It must be safe to call
// concurrently and must not keep the line.
type LineClassifier func(line string) (fields map[string]any, ok bool)

type namedClassifier struct {
	name string
	fn   LineClassifier
}

var (
	registryMu sync.Mutex
	registry   []namedClassifier
)

// Register adds a line classifier that `explain --lines` tries before the
// kernel classifier, e.g. from the dkms package:
//
//	explain.Register("dkms-status", dkms.ClassifyStatusLine)
//
// Call it from package initialization or main before explain runs. A name
// registered twice panics: it is a wiring mistake.
func Register(name string, fn LineClassifier) {
	registryMu.Lock()
	defer registryMu.Unlock()
	for _, c := range registry {
		if c.name == name {
			panic("explain: line classifier " + name + " registered twice")
		}
	}
	registry = append(registry, namedClassifier{name, fn})
}

// EventClassifier turns a line the kernel classifier finds unrelated into
// an event for the report: a user-space tool's message that says as much
// about the node as a kernel line (NVML's version mismatch, a dkms error).
type EventClassifier func(line string) (event.Event, bool)

var eventClassifiers []EventClassifier

// RegisterEvents adds an EventClassifier for the report and --output json.
// Call it from package initialization or main before explain runs.
func RegisterEvents(fn EventClassifier) {
	registryMu.Lock()
	defer registryMu.Unlock()
	eventClassifiers = append(eventClassifiers, fn)
}

func eventClassifiersNow() []EventClassifier {
	registryMu.Lock()
	defer registryMu.Unlock()
	return append([]EventClassifier(nil), eventClassifiers...)
}

func registered() []namedClassifier {
	registryMu.Lock()
	defer registryMu.Unlock()
	return append([]namedClassifier(nil), registry...)
}

// MaxLineBytes bounds one input line; the rest of a longer line is read and
// discarded, so hostile input cannot make explain hold unbounded memory.
const MaxLineBytes = 1 << 20

// Open opens the input: "-" or "" is stdin. Gzip is recognized by its magic
// bytes, not by the file name.
func Open(path string, stdin io.Reader) (io.ReadCloser, error) {
	var rc io.ReadCloser
	if path == "" || path == "-" {
		rc = io.NopCloser(stdin)
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		rc = f
	}
	br := bufio.NewReaderSize(rc, 64<<10)
	magic, _ := br.Peek(2)
	if bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("%s: gzip: %w", displayName(path), err)
		}
		return readCloser{zr, func() error { zr.Close(); return rc.Close() }}, nil
	}
	return readCloser{br, rc.Close}, nil
}

func displayName(path string) string {
	if path == "" || path == "-" {
		return "stdin"
	}
	return path
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// eachLine calls fn with every line (1-based number, text without the line
// ending). Lines longer than MaxLineBytes are cut.
func eachLine(r io.Reader, fn func(n int, line string) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for n := 1; ; n++ {
		chunk, err := br.ReadSlice('\n')
		line := chunk
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], chunk...)
			for errors.Is(err, bufio.ErrBufferFull) {
				chunk, err = br.ReadSlice('\n')
				if room := MaxLineBytes - len(long); room > 0 {
					long = append(long, chunk[:min(room, len(chunk))]...)
				}
			}
			line = long
		}
		if len(line) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		line = bytes.TrimSuffix(line, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if ferr := fn(n, string(line)); ferr != nil {
			return ferr
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// LineResult is one line of `explain --lines`.
type LineResult struct {
	Line        int        `json:"line"`
	Kind        event.Kind `json:"kind"`
	PCIBusID    string     `json:"pci_bus_id"`
	Xid         *int       `json:"xid"`
	PID         *int       `json:"pid"`
	ProcessName string     `json:"process_name"`
	// Lenient is set when the line was only accepted because explain reads
	// pasted logs leniently (a redacted Xid address); the agent would
	// refuse it.
	Lenient bool `json:"accepted_leniently,omitempty"`
}

// ClassifyLine is the kernel classifier's verdict on one line, in the shape
// `explain --lines` prints.
func ClassifyLine(n int, line string) LineResult {
	c, lenient := kmsg.ClassifyLineLenient(line)
	res := LineResult{Line: n, Kind: c.Kind, PCIBusID: c.PCIBusID, ProcessName: c.ProcessName, Lenient: lenient}
	if c.HasCode {
		res.Xid = &c.Code
	}
	if c.HasPID {
		res.PID = &c.PID
	}
	return res
}

// Lines writes one JSON object per input line, in order.
func Lines(r io.Reader, w io.Writer) error {
	extra := registered()
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	err := eachLine(r, func(n int, line string) error {
		for _, c := range extra {
			if fields, ok := c.fn(line); ok {
				return enc.Encode(standardize(n, fields))
			}
		}
		return enc.Encode(ClassifyLine(n, line))
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}

// standardize gives a registered classifier's object the six standard keys.
func standardize(n int, fields map[string]any) map[string]any {
	out := make(map[string]any, len(fields)+6)
	for k, v := range fields {
		out[k] = v
	}
	out["line"] = n
	for _, k := range [...]string{"kind", "pci_bus_id", "process_name"} {
		if _, ok := out[k]; !ok {
			out[k] = ""
		}
	}
	for _, k := range [...]string{"xid", "pid"} {
		if _, ok := out[k]; !ok {
			out[k] = nil
		}
	}
	return out
}

// FieldLine is the event field holding the input line number.
const FieldLine = "line"

// FieldLenient is "true" on an event explain only accepted by reading the
// pasted line leniently (a redacted Xid address); the agent would refuse
// the line.
const FieldLenient = "accepted_leniently"

// Events reads the input and returns its kernel events (everything but
// unrelated lines), in input order, with the catalog's advice, and the number
// of lines read.
//
// The one place where lines are read together: the 570+ driver prints
// "The NVIDIA GPU 0000:3b:00.0 / (PCI ID: ...) installed in this system has
// / fallen off the bus ..." over three lines, and only the first names the
// GPU; a fallen_off_bus line without a bus id takes the address of such a
// line at most three lines before it.
func Events(r io.Reader) (evs []event.Event, lines int, err error) {
	lines, err = Each(r, func(ev event.Event) error {
		evs = append(evs, ev)
		return nil
	})
	return evs, lines, err
}

// Each is Events as a stream: fn gets each event as its line is read, so
// a log of millions of lines is explained in bounded memory. lines is how
// many lines were read, also when err says the input ended early.
func Each(r io.Reader, fn func(event.Event) error) (lines int, err error) {
	var (
		gpuLineAddr string
		gpuLineNo   int
	)
	others := eventClassifiersNow()
	err = eachLine(r, func(n int, line string) error {
		lines = n
		c, lenient := kmsg.ClassifyLineLenient(line)
		switch c.Kind {
		case event.KindUnrelated:
			for _, classify := range others {
				if ev, ok := classify(line); ok {
					if ev.Fields == nil {
						ev.Fields = make(map[string]string, 1)
					}
					ev.Fields[FieldLine] = fmt.Sprint(n)
					return fn(ev)
				}
			}
			return nil
		case event.KindOtherNVRM:
			if c.PCIBusID != "" && strings.Contains(line, "NVRM: The NVIDIA GPU ") {
				gpuLineAddr, gpuLineNo = c.PCIBusID, n
			}
		case event.KindFallenOffBus:
			if c.PCIBusID == "" && gpuLineAddr != "" && n-gpuLineNo <= 3 {
				c.PCIBusID = gpuLineAddr
			}
		}
		ev := kmsg.NewEvent(c, line)
		if ev.Fields == nil {
			ev.Fields = make(map[string]string, 1)
		}
		ev.Fields[FieldLine] = fmt.Sprint(n)
		if lenient {
			ev.Fields[FieldLenient] = "true"
		}
		return fn(ev)
	})
	return lines, err
}

// WriteJSON writes events as JSON Lines.
func WriteJSON(w io.Writer, evs []event.Event) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range evs {
		if err := enc.Encode(&evs[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}
