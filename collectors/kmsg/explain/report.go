package explain

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
)

// finding is one kind of thing that happened to one device: events with the
// same kind and code, counted.
type finding struct {
	kind      event.Kind
	code      int
	mnemonic  string // findings of one kind are told apart by it (DKMS_STATUS, DKMS_ERROR)
	detail    string // and a finding (a DKMS entry) by what it says
	first     event.Event
	count     int
	lines     []string // first few line numbers
	processes []string // distinct "name (pid N)", first few
	owners    []string // distinct jobs and pods the events name, first few
	worst     event.Level
}

type device struct {
	busID    string
	uuid     string
	isGPU    bool
	findings []*finding
	others   int // other_nvrm lines, summarized
	unlisted int // events of findings past maxFindings, counted
	worst    event.Level
}

const (
	maxListedLines     = 5
	maxListedProcesses = 5
	maxListedOwners    = 5
	maxShownTextBytes  = 400
	maxShownNameBytes  = 64
	// maxFindings bounds the findings listed per device: a log of many
	// distinct DKMS entries is counted past it, not kept.
	maxFindings = 256
)

// fieldOwners is the field in which the agent names the Slurm jobs and
// Kubernetes pods an event hit (agent.FieldOwners), "; "-separated.
const fieldOwners = "owners"

// maxDevices bounds the devices a report tracks: a log naming more bus
// ids than a host can have is counted, not kept.
const maxDevices = 1024

// Report is the human summary built one event at a time, in memory that
// does not grow with the log: per device and finding it keeps a count,
// the first event and a few line numbers and processes.
type Report struct {
	// Colours paints the levels (for a terminal).
	Colours        Colours
	devs           map[string]*device
	order          []string
	driverVersions []string
	// libraryVersions are the user-space driver versions the input names:
	// NVML's "NVML library version:", the kernel's API mismatch "client".
	libraryVersions []string
	events          int
	dropped         int    // events of devices past maxDevices
	from            string // where the events came from, when not lines read
}

// From says where the events came from when they are not lines of a log
// ("the agent at http://..."): the report's first line names it instead
// of a count of lines read.
func (r *Report) From(where string) { r.from = where }

// NewReport returns an empty report.
func NewReport() *Report { return &Report{devs: map[string]*device{}} }

// WriteReport is a Report of evs, written.
func WriteReport(w io.Writer, evs []event.Event, linesRead int) error {
	r := NewReport()
	for _, ev := range evs {
		r.Add(ev)
	}
	return r.Write(w, linesRead, nil)
}

func (r *Report) device(bus string) *device {
	d, ok := r.devs[bus]
	if !ok {
		if len(r.devs) >= maxDevices && bus != "" {
			return nil
		}
		d = &device{busID: bus}
		r.devs[bus] = d
		r.order = append(r.order, bus)
	}
	return d
}

// Add counts one event.
func (r *Report) Add(ev event.Event) {
	r.events++
	d := r.device(ev.GPU.PCIBusID)
	if d == nil {
		r.dropped++
		return
	}
	// An event from the agent names the GPU it located (the kernel log's
	// name a bus id only).
	if ev.GPU.Index >= 0 && ev.GPU.PCIBusID != "" {
		d.isGPU = true
		if d.uuid == "" {
			d.uuid = ev.GPU.UUID
		}
	}
	// The versions any line names: the loaded module's (its load banner,
	// /proc/driver/nvidia/version, either half of an API mismatch) and the
	// user-space library's (NVML's, the mismatch's "client").
	r.driverVersions = addVersion(r.driverVersions, ev.Fields[kmsg.FieldDriverVersion])
	r.libraryVersions = addVersion(r.libraryVersions, ev.Fields[fieldNVMLVersion])
	r.libraryVersions = addVersion(r.libraryVersions, ev.Fields[kmsg.FieldClientVersion])
	switch ev.Kind {
	case event.KindGPUIdentity:
		d.isGPU = true
		if d.uuid == "" {
			d.uuid = ev.GPU.UUID
		}
		return
	case event.KindDriverLoaded:
		return
	case event.KindOtherNVRM:
		if ev.GPU.PCIBusID != "" {
			d.isGPU = true
		}
		d.others++
		return
	case event.KindXid, event.KindFallenOffBus, event.KindRmInitFailed:
		d.isGPU = true
	}
	d.worst = event.Worse(d.worst, ev.Severity)
	var f *finding
	for _, x := range d.findings {
		if x.kind == ev.Kind && x.code == ev.Code && x.mnemonic == ev.Mnemonic && x.detail == detailOf(ev) {
			f = x
			break
		}
	}
	if f == nil && len(d.findings) >= maxFindings {
		d.unlisted++
		return
	}
	if f == nil {
		// Only what the report shows of the first event is kept.
		first := ev
		first.Raw = truncate(strings.TrimSpace(ev.Raw), maxShownTextBytes)
		f = &finding{kind: ev.Kind, code: ev.Code, mnemonic: ev.Mnemonic, detail: detailOf(ev), first: first}
		d.findings = append(d.findings, f)
	}
	f.count++
	f.worst = event.Worse(f.worst, ev.Severity)
	if l := ev.Fields[FieldLine]; l != "" && len(f.lines) < maxListedLines {
		f.lines = append(f.lines, l)
	}
	if name := ev.Fields[kmsg.FieldProcessName]; name != "" || ev.Fields[kmsg.FieldPID] != "" {
		p := truncate(name, maxShownNameBytes)
		if pid := ev.Fields[kmsg.FieldPID]; pid != "" {
			p += " (pid " + pid + ")"
		}
		p = strings.TrimSpace(p)
		if !slices.Contains(f.processes, p) && len(f.processes) < maxListedProcesses {
			f.processes = append(f.processes, p)
		}
	}
	for _, o := range strings.Split(ev.Fields[fieldOwners], "; ") {
		if o = truncate(strings.TrimSpace(o), maxShownNameBytes); o != "" && !slices.Contains(f.owners, o) && len(f.owners) < maxListedOwners {
			f.owners = append(f.owners, o)
		}
	}
}

// Write writes the report: per device (grouped by PCI bus id), what
// happened, what it means and what to do; then what concerns the host as
// a whole. All text from the input is escaped. readErr, when the input
// ended early (a truncated .gz), is said after the header: the report is
// of everything before the cut.
func (r *Report) Write(w io.Writer, linesRead int, readErr error) error {
	order := slices.Clone(r.order)
	devs := r.devs
	slices.Sort(order)
	// The host section (no bus id) goes last.
	if i := slices.Index(order, ""); i >= 0 {
		order = append(slices.Delete(order, i, i+1), "")
	}

	b := &strings.Builder{}
	nDevices := len(order)
	if _, ok := devs[""]; ok {
		nDevices--
	}
	paint := r.Colours
	if r.from != "" {
		fmt.Fprintf(b, "gpuwarden explain: %d events from %s, %d devices named. Overall: %s.\n",
			r.events, Printable(r.from), nDevices, paint.Level(r.Level(), r.Level().String()))
	} else {
		fmt.Fprintf(b, "gpuwarden explain: %d lines read, %d events, %d devices named. Overall: %s.\n",
			linesRead, r.events, nDevices, paint.Level(r.Level(), r.Level().String()))
	}
	if readErr != nil {
		fmt.Fprintf(b, "The input ended early after line %d (%s): this report is of everything before that.\n", linesRead, Printable(readErr.Error()))
	}
	if r.dropped > 0 {
		fmt.Fprintf(b, "%d events of devices past the first %d were counted, not listed.\n", r.dropped, maxDevices)
	}
	if len(r.driverVersions) > 0 {
		fmt.Fprintf(b, "NVIDIA driver loaded: %s\n", Printable(strings.Join(r.driverVersions, ", ")))
	}
	if r.events == 0 {
		b.WriteString("\nNo NVIDIA, PCIe AER or machine-check lines found.\n")
	}
	for _, bus := range order {
		d := devs[bus]
		if len(d.findings) == 0 && d.others == 0 && d.uuid == "" {
			continue
		}
		b.WriteString("\n")
		switch {
		case bus == "" && r.from != "":
			b.WriteString("Host (events that name no device)")
		case bus == "":
			b.WriteString("Host (lines that name no device)")
		case d.isGPU:
			fmt.Fprintf(b, "GPU %s", Printable(bus))
		default:
			fmt.Fprintf(b, "PCI device %s", Printable(bus))
		}
		if d.uuid != "" {
			fmt.Fprintf(b, " (%s)", Printable(d.uuid))
		}
		fmt.Fprintf(b, ": %s\n", paint.Level(d.worst, d.worst.String()))
		if a := d.action(); a != "" && a != "none" {
			fmt.Fprintf(b, "  => what to do now: %s\n", a)
		}
		if len(d.findings) == 0 {
			b.WriteString("  nothing wrong reported\n")
		}
		for _, f := range d.findings {
			writeFinding(b, f, paint)
			if f.kind == event.KindAPIMismatch {
				if v := r.whichIsOlder(); v != "" {
					fmt.Fprintf(b, "    versions:      %s\n", Printable(v))
				}
			}
		}
		if d.unlisted > 0 {
			fmt.Fprintf(b, "  plus %d event(s) of findings past the first %d, counted in the level above\n", d.unlisted, maxFindings)
		}
		if d.others > 0 {
			fmt.Fprintf(b, "  plus %d other NVIDIA driver message(s); read them with the events above\n", d.others)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// addVersion adds v to a report's list of versions once, keeping at most 8.
func addVersion(list []string, v string) []string {
	if v == "" || slices.Contains(list, v) || len(list) >= 8 {
		return list
	}
	return append(list, v)
}

// detailOf tells findings of one mnemonic apart: each DKMS entry (module,
// version, kernel, state) is its own finding; kernel events of one code
// are counted together.
func detailOf(ev event.Event) string {
	if ev.Kind != event.KindFinding {
		return ""
	}
	return ev.Explanation
}

// fieldNVMLVersion is the key under which explain's NVML-mismatch lines
// carry "NVML library version: <v>".
const fieldNVMLVersion = "nvml_version"

// whichIsOlder says, for a version mismatch, which side the input shows to
// be older, when it names exactly one module and one library version.
func (r *Report) whichIsOlder() string {
	if len(r.driverVersions) != 1 || len(r.libraryVersions) != 1 {
		switch {
		case len(r.driverVersions) == 1:
			return "kernel module " + r.driverVersions[0] + "; the library's version is not in the input (NVML prints it as \"NVML library version:\")"
		case len(r.libraryVersions) == 1:
			return "user-space library " + r.libraryVersions[0] + "; the loaded module's version is not in the input (cat /proc/driver/nvidia/version)"
		}
		return ""
	}
	mod, lib := r.driverVersions[0], r.libraryVersions[0]
	s := "kernel module " + mod + ", user-space library " + lib + ": "
	switch c := compareVersions(mod, lib); {
	case c < 0:
		return s + "the module is older: the driver was upgraded and the old module is still loaded"
	case c > 0:
		return s + "the library is older: the libraries were downgraded, or a newer module was loaded by hand"
	}
	return s + "the same release by its leading numbers: a container mounting another host's libraries, or a partial upgrade"
}

// compareVersions compares dotted driver versions number by number
// ("570.124" against "570.124.06" compares the first two only).
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errX := strconv.Atoi(as[i])
		y, errY := strconv.Atoi(bs[i])
		if errX != nil || errY != nil {
			return strings.Compare(as[i], bs[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// Level is the report's overall verdict: the worst level of any device or
// of the host. explain exits with its code, as check does.
func (r *Report) Level() event.Level {
	l := event.OK
	for _, d := range r.devs {
		l = event.Worse(l, d.worst)
	}
	return l
}

// action is what to do about the device: the advice of its worst finding
// (the first one, in input order, at that level).
func (d *device) action() event.Action {
	for _, f := range d.findings {
		if f.worst == d.worst {
			return f.first.Action
		}
	}
	return ""
}

func writeFinding(b *strings.Builder, f *finding, paint Colours) {
	ev := f.first
	title := string(ev.Kind)
	switch ev.Kind {
	case event.KindXid:
		title = "Xid " + strconv.Itoa(ev.Code)
	case event.KindSXid:
		title = "SXid " + strconv.Itoa(ev.Code)
		if sw := ev.Fields[kmsg.FieldSwitch]; sw != "" {
			title += " on " + sw
		}
		if l := ev.Fields[kmsg.FieldLink]; l != "" {
			title += " link " + l
		}
	}
	switch {
	case ev.Kind == event.KindFinding && ev.Mnemonic != "":
		title = ev.Mnemonic
	case ev.Mnemonic != "":
		title += " " + ev.Mnemonic
	}
	times := "once"
	if f.count > 1 {
		times = strconv.Itoa(f.count) + " times"
	}
	where := ""
	if len(f.lines) > 0 {
		where = " (line " + strings.Join(f.lines, ", ") + ")"
	}
	fmt.Fprintf(b, "  - %s [%s], %s%s\n", Printable(title), paint.Level(f.worst, f.worst.String()), times, where)
	fmt.Fprintf(b, "    what happened: %s\n", Printable(truncate(strings.TrimSpace(ev.Raw), maxShownTextBytes)))
	if ev.Fields[FieldLenient] == "true" {
		fmt.Fprintf(b, "    note:          accepted leniently: the address is redacted; the agent would refuse this line\n")
	}
	if len(f.processes) > 0 {
		fmt.Fprintf(b, "    processes:     %s\n", Printable(strings.Join(f.processes, ", ")))
	}
	if len(f.owners) > 0 {
		fmt.Fprintf(b, "    owners:        %s\n", Printable(strings.Join(f.owners, "; ")))
	}
	if ev.Explanation != "" {
		fmt.Fprintf(b, "    what it means: %s\n", ev.Explanation)
	}
	if ev.Action != "" {
		fmt.Fprintf(b, "    what to do:    %s\n", ev.Action)
	}
	if ev.Fix != "" {
		fmt.Fprintf(b, "    fix:           %s\n", Printable(ev.Fix))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Printable escapes what a terminal would act on: control characters (C0,
// DEL, C1, including ESC, CR and newline), Unicode format characters such as
// bidirectional overrides, and invalid UTF-8, as \xNN or \u{NNNN}. Other text
// is kept as it is.
func Printable(s string) string {
	safe := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0, unicode.Is(unicode.Cf, r), r == 0x2028, r == 0x2029:
			fmt.Fprintf(&b, `\u{%04x}`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Terminal wraps w so that everything written through it is printable:
// each line is passed through Printable, newlines and tabs kept. Commands
// that print text from outside (a trace, an agent, the host's files) write
// through it, so no escape sequence reaches a terminal whichever field
// carried it.
func Terminal(w io.Writer) io.Writer { return terminal{w} }

type terminal struct{ w io.Writer }

func (t terminal) Write(p []byte) (int, error) {
	n := len(p)
	var b strings.Builder
	for len(p) > 0 {
		i := strings.IndexAny(string(p), "\n\t")
		if i < 0 {
			b.WriteString(Printable(string(p)))
			break
		}
		b.WriteString(Printable(string(p[:i])))
		b.WriteByte(p[i])
		p = p[i+1:]
	}
	if _, err := io.WriteString(t.w, b.String()); err != nil {
		return 0, err
	}
	return n, nil
}
