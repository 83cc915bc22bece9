package kmsg

import (
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// Class is the classifier's verdict on one kernel message. Strings point into
// the classified text where they can, so a verdict costs no allocation unless
// a bus id had to be normalized.
type Class struct {
	Kind     event.Kind
	PCIBusID string // lower case DDDD:BB:DD.F; "" when the line names none

	Code    int // Xid or SXid number
	HasCode bool

	PID         int
	HasPID      bool
	ProcessName string // as printed; attacker-controlled, never a label

	UUID        string // gpu_identity: GPU-<uuid>
	GPUInstance string // Xid from a MIG instance: the GPU-I number

	Switch  string // sxid: the NVSwitch device that reported it (nvidia-nvswitchN)
	Link    int    // sxid: the NVLink port
	HasLink bool

	// Severity as the line states it: aer "corrected", "uncorrected" or
	// "fatal"; sxid "fatal" or "non-fatal"; mce "uncorrected" or "".
	Severity string

	DriverVersion string // driver_loaded; api_mismatch: the kernel module's version
	ClientVersion string // api_mismatch: the user-space driver's version
}

// ClassifyLine classifies one line of kernel-log text in any common wrapper
// (raw /dev/kmsg record, dmesg, kern.log/syslog, journalctl, talosctl):
// StripWrapper then Classify.
func ClassifyLine(line string) Class {
	w := StripWrapper(line)
	if w.UserSpace {
		return Class{Kind: event.KindUnrelated}
	}
	msg := w.Message
	if w.Escaped && strings.IndexByte(msg, '\\') >= 0 {
		msg = Unescape(msg)
	}
	return Classify(msg)
}

// Classify classifies one kernel message with its wrapper already removed
// (Record.Message, or StripWrapper's Message).
func Classify(msg string) Class {
	m := trimBlank(msg)
	if len(m) < 4 {
		return Class{Kind: event.KindUnrelated}
	}
	// Dispatch on the first byte: almost every line is rejected here or in
	// deviceLine below, without scanning the whole text.
	switch m[0] {
	case 'N':
		if len(m) > 4 && strings.HasPrefix(m, "NVRM") && (m[4] == ':' || m[4] == ' ') {
			return classifyNVRM(m)
		}
	case 'n':
		if strings.HasPrefix(m, "nvidia") {
			if name, rest, ok := nvidiaModule(m); ok {
				return classifyModule(m, name, rest)
			}
		}
	case '[':
		if strings.HasPrefix(m, "[Hardware Error]:") {
			return classifyMCE(m)
		}
		if (strings.HasPrefix(m, "[drm") || strings.HasPrefix(m, "[nvidia")) && strings.Contains(m, "nvidia") {
			return other(m)
		}
		return Class{Kind: event.KindUnrelated}
	case 'm':
		if strings.HasPrefix(m, "mce: ") {
			return classifyMCE(m)
		}
		if strings.HasPrefix(m, "message repeated ") {
			if i := strings.IndexByte(m, '['); i >= 0 {
				if inner := Classify(m[i+1:]); inner.Kind != event.KindUnrelated {
					return other(m)
				}
			}
			return Class{Kind: event.KindUnrelated}
		}
	case 'M':
		if strings.HasPrefix(m, "Machine check events logged") {
			return Class{Kind: event.KindMCE}
		}
	}
	if _, addr, rest, ok := deviceLine(m); ok {
		if c, ok := classifyAER(addr, rest); ok {
			return c
		}
	}
	return Class{Kind: event.KindUnrelated}
}

// other is an other_nvrm verdict with the first PCI address in the text.
func other(m string) Class {
	c := Class{Kind: event.KindOtherNVRM}
	c.PCIBusID, _ = findPCIAddr(m)
	return c
}

func classifyNVRM(m string) Class {
	body := trimBlank(m[5:])
	switch {
	case strings.HasPrefix(body, "Xid"):
		if c, ok := parseXid(body[3:], event.KindXid); ok {
			return c
		}
		return other(m)
	case strings.Contains(body, "fallen off the bus"):
		c := Class{Kind: event.KindFallenOffBus}
		c.PCIBusID, _ = findPCIAddr(body)
		return c
	case strings.HasPrefix(body, "GPU at "):
		if i := strings.Index(body, ": GPU-"); i >= 0 {
			c := Class{Kind: event.KindGPUIdentity}
			c.PCIBusID, _ = findPCIAddr(body[:i+1])
			c.UUID = token(body[i+2:])
			return c
		}
	case strings.HasPrefix(body, "loading NVIDIA UNIX"):
		if i := strings.Index(body, "Kernel Module"); i >= 0 {
			c := Class{Kind: event.KindDriverLoaded}
			c.DriverVersion = firstVersion(body[i:])
			return c
		}
	case strings.HasPrefix(body, "API mismatch"):
		c := Class{Kind: event.KindAPIMismatch}
		if i := strings.Index(body, "has the version "); i >= 0 {
			c.ClientVersion = firstVersion(body[i:])
			if j := strings.Index(body[i+16:], "has the version "); j >= 0 {
				c.DriverVersion = firstVersion(body[i+16+j:])
			} else if j := strings.Index(body[i+16:], "the version "); j >= 0 {
				c.DriverVersion = firstVersion(body[i+16+j:])
			}
		}
		return c
	}
	if strings.Contains(body, "RmInitAdapter failed") ||
		strings.Contains(body, "probe routine failed") ||
		(strings.Contains(body, "rm_init_adapter") && strings.Contains(body, "failed")) {
		c := Class{Kind: event.KindRmInitFailed}
		c.PCIBusID, _ = findPCIAddr(body)
		return c
	}
	return other(m)
}

// nvidiaModule recognizes a line printed by an NVIDIA kernel module: the
// module's name, then ':' or ' '. m starts with "nvidia".
func nvidiaModule(m string) (name, rest string, ok bool) {
	i := len("nvidia")
	if i < len(m) && (m[i] == '-' || m[i] == '_') {
		sub := m[i+1:]
		n := 0
		for _, s := range [...]string{"uvm", "modeset", "drm", "nvlink", "nvswitch", "peermem", "fs", "vgpu-vfio", "vgpu_vfio"} {
			if strings.HasPrefix(sub, s) {
				n = len(s)
				break
			}
		}
		if n == 0 {
			return "", "", false
		}
		i += 1 + n
		if strings.HasPrefix(sub, "nvswitch") {
			for i < len(m) && isDigit(m[i]) {
				i++
			}
		}
	}
	if i >= len(m) || (m[i] != ':' && m[i] != ' ') {
		return "", "", false
	}
	return m[:i], m[i+1:], true
}

func classifyModule(m, name, rest string) Class {
	body := trimBlank(rest)
	// A device line ("nvidia 0000:3b:00.0: ...") may be PCIe AER about the GPU.
	if _, addr, drest, ok := deviceLine(m); ok {
		if c, ok := classifyAER(addr, drest); ok {
			return c
		}
	}
	if strings.HasPrefix(body, "SXid") {
		if c, ok := parseXid(body[4:], event.KindSXid); ok {
			c.Switch = name
			return c
		}
		return other(m)
	}
	if strings.Contains(body, "fallen off the bus") {
		c := Class{Kind: event.KindFallenOffBus}
		c.PCIBusID, _ = findPCIAddr(body)
		return c
	}
	return other(m)
}

// parseXid parses what follows "Xid" or "SXid": " (PCI:0000:3b:00): 79, ...".
func parseXid(s string, kind event.Kind) (Class, bool) {
	s = trimBlank(s)
	if len(s) == 0 || s[0] != '(' {
		return Class{}, false
	}
	end := strings.IndexByte(s, ')')
	if end < 0 {
		return Class{}, false
	}
	inside := s[1:end]
	rest := s[end+1:]
	if len(rest) < 2 || rest[0] != ':' {
		return Class{}, false
	}
	rest = trimBlank(rest[1:])
	code, n := leadingInt(rest)
	if n == 0 {
		return Class{}, false
	}
	c := Class{Kind: kind, Code: code, HasCode: true}
	c.PCIBusID, _ = findPCIAddr(inside)
	if i := strings.Index(inside, "GPU-I:"); i >= 0 {
		j := i + len("GPU-I:")
		k := j
		for k < len(inside) && isDigit(inside[k]) {
			k++
		}
		c.GPUInstance = inside[j:k]
	}
	rest = rest[n:]
	if kind == event.KindSXid {
		parseSXidTail(rest, &c)
		return c, true
	}
	// The driver's own prefix: ", pid=N, name=X, " or ", pid='<unknown>', name=<unknown>, ".
	if p, ok := strings.CutPrefix(rest, ", pid="); ok {
		if pid, n := leadingInt(p); n > 0 {
			c.PID, c.HasPID = pid, true
			p = p[n:]
		} else if strings.HasPrefix(p, "'<unknown>'") {
			p = p[len("'<unknown>'"):]
		} else {
			return c, true
		}
		if name, ok := strings.CutPrefix(p, ", name="); ok {
			if i := strings.Index(name, ", "); i >= 0 {
				name = name[:i]
			}
			if name != "<unknown>" {
				c.ProcessName = name
			}
		}
	}
	return c, true
}

func parseSXidTail(rest string, c *Class) {
	t := strings.TrimPrefix(rest, ", ")
	switch {
	case strings.HasPrefix(t, "Non-fatal"), strings.HasPrefix(t, "Non-Fatal"):
		c.Severity = "non-fatal"
	case strings.HasPrefix(t, "Fatal"):
		c.Severity = "fatal"
	}
	if i := strings.Index(t, "Link "); i >= 0 {
		if l, n := leadingInt(t[i+5:]); n > 0 {
			c.Link, c.HasLink = l, true
		}
	}
}

// deviceLine splits a dev_printk line "driver DDDD:BB:DD.F: text" (also the
// old "aer DDDD:BB:DD.F:pcie02: text") into its parts.
func deviceLine(m string) (driver, addr, rest string, ok bool) {
	lim := min(len(m), 48)
	sp := strings.IndexByte(m[:lim], ' ')
	if sp <= 0 || sp+13 > len(m) || !isHex(m[sp+1]) {
		return "", "", "", false
	}
	a := m[sp+1:]
	n := pciAddrLen(a)
	if n == 0 || n >= len(a) || a[n] != ':' {
		return "", "", "", false
	}
	r := a[n+1:]
	if strings.HasPrefix(r, "pcie") { // port service suffix of old kernels
		j := 4
		for j < len(r) && isDigit(r[j]) {
			j++
		}
		if j < len(r) && r[j] == ':' {
			r = r[j+1:]
		}
	}
	return m[:sp], a[:n], trimBlank(r), true
}

// classifyAER decides whether the text of a device line is PCIe AER.
func classifyAER(addr, rest string) (Class, bool) {
	switch {
	case strings.HasPrefix(rest, "AER:"), strings.HasPrefix(rest, "PCIe Bus Error"),
		strings.HasPrefix(rest, "DPC:"), strings.HasPrefix(rest, "TLP Header"),
		strings.HasPrefix(rest, "Error of this Agent"),
		strings.HasPrefix(rest, "device [") && strings.Contains(rest, "error status/mask"),
		aerBitLine(rest),
		strings.Contains(rest, "error received: "), strings.Contains(rest, "error message received from "):
	default:
		return Class{}, false
	}
	c := Class{Kind: event.KindAER, PCIBusID: normalizeAddr(addr)}
	if i := strings.Index(rest, "received: "); i >= 0 {
		if a := rest[i+len("received: "):]; pciAddrLen(a) > 0 {
			c.PCIBusID = normalizeAddr(a[:pciAddrLen(a)])
		}
	} else if i := strings.Index(rest, "received from "); i >= 0 {
		if a := rest[i+len("received from "):]; pciAddrLen(a) > 0 {
			c.PCIBusID = normalizeAddr(a[:pciAddrLen(a)])
		}
	}
	switch {
	case strings.Contains(rest, "Non-Fatal"):
		c.Severity = "uncorrected"
	case strings.Contains(rest, "Fatal"):
		c.Severity = "fatal"
	case strings.Contains(rest, "Uncorrect"), strings.HasPrefix(rest, "DPC: containment"):
		c.Severity = "uncorrected"
	case strings.Contains(rest, "Correct"): // "Corrected" before Linux 6.7, "Correctable" since
		c.Severity = "corrected"
	}
	return c, true
}

// aerBitLine matches an AER status-bit detail line: "[ 0] RxErr", "[12] Timeout".
func aerBitLine(s string) bool {
	if len(s) < 4 || s[0] != '[' {
		return false
	}
	i := 1
	for i < len(s) && s[i] == ' ' {
		i++
	}
	j := i
	for j < len(s) && isDigit(s[j]) {
		j++
	}
	return j > i && j-i <= 2 && j < len(s) && s[j] == ']'
}

func classifyMCE(m string) Class {
	if body, ok := strings.CutPrefix(m, "mce: "); ok {
		if !strings.HasPrefix(body, "[Hardware Error]") && !strings.HasPrefix(body, "Uncorrected") &&
			!strings.Contains(body, "Machine check") && !strings.Contains(body, "Machine Check") {
			return Class{Kind: event.KindUnrelated}
		}
	}
	c := Class{Kind: event.KindMCE}
	if strings.Contains(m, "Uncorrected") || strings.Contains(m, "|UC|") || strings.Contains(m, "[UC|") ||
		strings.Contains(m, "context corrupt") || strings.Contains(m, "Fatal") {
		c.Severity = "uncorrected"
	}
	return c
}

// findPCIAddr returns the first PCI address in s, normalized. An address
// printed without a function ("0000:3b:00", as Xid lines do) gets ".0".
func findPCIAddr(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		j := strings.IndexByte(s[i:], ':')
		if j < 0 {
			return "", false
		}
		i += j
		// Walk back over the domain's hex digits.
		k := i
		for k > 0 && i-k < 9 && isHex(s[k-1]) {
			k--
		}
		if i-k < 4 || (k > 0 && isAlnum(s[k-1])) {
			continue
		}
		if n := pciAddrLen(s[k:]); n > 0 {
			return normalizeAddr(s[k : k+n]), true
		}
	}
	return "", false
}

// pciAddrLen is the length of the PCI address at the start of s
// (DDDD:BB:DD or DDDD:BB:DD.F, domain 4 to 8 hex digits), or 0.
func pciAddrLen(s string) int {
	d := 0
	for d < len(s) && d < 9 && isHex(s[d]) {
		d++
	}
	if d < 4 || d > 8 || len(s) < d+6 {
		return 0
	}
	if s[d] != ':' || !isHex(s[d+1]) || !isHex(s[d+2]) || s[d+3] != ':' || !isHex(s[d+4]) || !isHex(s[d+5]) {
		return 0
	}
	n := d + 6
	if n+1 < len(s) && s[n] == '.' && s[n+1] >= '0' && s[n+1] <= '7' {
		n += 2
	}
	if n < len(s) && isAlnum(s[n]) {
		return 0 // part of a longer token
	}
	return n
}

// normalizeAddr lower-cases a PCI address and adds the function ".0" when it
// is missing. It allocates only when the text is not already canonical.
func normalizeAddr(a string) string {
	canonical := len(a) >= 3 && a[len(a)-2] == '.'
	for i := 0; i < len(a) && canonical; i++ {
		if a[i] >= 'A' && a[i] <= 'F' {
			canonical = false
		}
	}
	if canonical {
		return a
	}
	b := []byte(strings.ToLower(a))
	if len(a) < 3 || a[len(a)-2] != '.' {
		b = append(b, ".0"...)
	}
	return string(b)
}

// firstVersion returns the first driver version ("535.183.01", "270.41.06")
// in s.
func firstVersion(s string) string {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) || (i > 0 && !isBlank(s[i-1])) {
			continue
		}
		j, dots := i, 0
		for j < len(s) && (isDigit(s[j]) || s[j] == '.') {
			if s[j] == '.' {
				dots++
			}
			j++
		}
		v := strings.TrimRight(s[i:j], ".")
		if dots > 0 && strings.Contains(v, ".") {
			return v
		}
		i = j
	}
	return ""
}

func token(s string) string {
	for i := 0; i < len(s); i++ {
		if isBlank(s[i]) || s[i] == ',' {
			return s[:i]
		}
	}
	return s
}

// leadingInt parses the decimal number at the start of s; n is the number of
// digits used (0 when there is none). At most 9 digits are read, so it
// cannot overflow.
func leadingInt(s string) (v, n int) {
	for n < len(s) && n < 9 && isDigit(s[n]) {
		v = v*10 + int(s[n]-'0')
		n++
	}
	if n < len(s) && isDigit(s[n]) {
		return 0, 0 // longer than any real code or pid
	}
	return v, n
}

func trimBlank(s string) string {
	for len(s) > 0 && isBlank(s[0]) {
		s = s[1:]
	}
	return s
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}
