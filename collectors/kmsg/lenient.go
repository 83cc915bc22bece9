package kmsg

import (
	"strings"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// ClassifyLineLenient is ClassifyLine for logs pasted by people, who redact
// addresses: an Xid or SXid whose parenthesis holds a redacted address
// ("PCI:0000:xx:00", "PCI:XXXX:XX:XX": hex digits and x or X in the
// driver's layout) is accepted as its kind with no bus id, and lenient is
// true. Every other line gets ClassifyLine's verdict. The agent never uses
// it: no kernel prints such an address.
func ClassifyLineLenient(line string) (c Class, lenient bool) {
	c = ClassifyLine(line)
	if c.Rejected != RejectMalformed {
		return c, false
	}
	w := StripWrapper(line)
	msg := w.Message
	if w.Escaped && strings.IndexByte(msg, '\\') >= 0 {
		msg = Unescape(msg)
	}
	m := trimBlank(msg)
	var kind event.Kind
	var after, sw string
	switch {
	case strings.HasPrefix(m, "NVRM") && len(m) > 5 && (m[4] == ':' || m[4] == ' '):
		body := trimBlank(m[5:])
		if !strings.HasPrefix(body, "Xid (") {
			return c, false
		}
		kind, after = event.KindXid, body[len("Xid ("):]
	case strings.HasPrefix(m, "nvidia-nvswitch"):
		i := strings.Index(m, ": SXid (")
		if i < 0 {
			return c, false
		}
		kind, after, sw = event.KindSXid, m[i+len(": SXid ("):], m[:i]
	default:
		return c, false
	}
	n := redactedAddrLen(strings.TrimPrefix(after, "PCI:"))
	if n == 0 {
		return c, false
	}
	n += len(after) - len(strings.TrimPrefix(after, "PCI:"))
	if n >= len(after) || after[n] != ')' {
		return c, false
	}
	// Parse the rest with a placeholder address, then drop the address:
	// none is known.
	got, ok := parseXid(" (0000:00:00"+after[n:], kind)
	if !ok {
		return c, false
	}
	got.PCIBusID = ""
	if kind == event.KindSXid {
		got.Switch = sw
	}
	return got, true
}

// redactedAddrLen is the length of "DDDD:BB:DD" with optional ".F" at the
// start of s where some digits are replaced by x or X, or 0 when s holds no
// redaction (a real address is ClassifyLine's business) or another shape.
func redactedAddrLen(s string) int {
	red := false
	ok := func(c byte) bool {
		if c == 'x' || c == 'X' {
			red = true
			return true
		}
		return isHex(c)
	}
	if len(s) < 10 {
		return 0
	}
	for i, want := range "hhhh:hh:hh" {
		if want == ':' {
			if s[i] != ':' {
				return 0
			}
		} else if !ok(s[i]) {
			return 0
		}
	}
	n := 10
	if len(s) > 11 && s[10] == '.' && ok(s[11]) {
		n = 12
	}
	if !red {
		return 0
	}
	return n
}
