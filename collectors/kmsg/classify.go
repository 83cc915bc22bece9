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

	// Rejected says why a line that looked NVIDIA's (or like another event
	// kind) was not believed: one of the Reject constants. Kind is then
	// unrelated. "" for every accepted line and for ordinary unrelated lines.
	Rejected string
}

// Reasons for Class.Rejected: a small fixed set, fit for a metric label.
const (
	// RejectProcessName: the text begins with a process name, as the
	// kernel's reports of user-space faults and notices do ("comm[pid]:
	// segfault at ...", "traps: comm[pid] trap ...", "comm (pid): ..."),
	// and would otherwise have read as an NVIDIA line or another event.
	// Any local user chooses its process and file name.
	RejectProcessName = "process_name_prefix"
	// RejectMalformed: the text starts like an NVIDIA event line ("NVRM:
	// Xid (", "nvidia-nvswitchN: SXid (", "NVRM: GPU ...") or says what one
	// says ("fallen off the bus", "RmInitAdapter failed") but does not
	// follow the driver's grammar for it.
	RejectMalformed = "malformed"
)

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
	// deviceLine below, without scanning the whole text. Every verdict but
	// unrelated goes through believe, which refuses lines that begin with a
	// task's name; unrelated lines that do are counted when they name
	// NVIDIA things (refusedTask).
	switch m[0] {
	case 'N':
		if len(m) > 4 && strings.HasPrefix(m, "NVRM") && (m[4] == ':' || m[4] == ' ') {
			return believe(m, classifyNVRM(m))
		}
	case 'n':
		if strings.HasPrefix(m, "nvidia") {
			if name, rest, ok := nvidiaModule(m); ok {
				return believe(m, classifyModule(m, name, rest))
			}
		}
	case '[':
		if strings.HasPrefix(m, "[Hardware Error]:") {
			return believe(m, classifyMCE(m))
		}
		if (strings.HasPrefix(m, "[drm") || strings.HasPrefix(m, "[nvidia")) && strings.Contains(m, "nvidia") {
			return believe(m, other(m))
		}
	case 'm':
		if strings.HasPrefix(m, "mce: ") {
			return believe(m, classifyMCE(m))
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
			return believe(m, Class{Kind: event.KindMCE})
		}
	}
	if _, addr, rest, ok := deviceLine(m); ok {
		if c, ok := classifyAER(addr, rest); ok {
			return believe(m, c)
		}
	}
	if refusedTask(m) {
		return Class{Kind: event.KindUnrelated, Rejected: RejectProcessName}
	}
	return Class{Kind: event.KindUnrelated}
}

// believe returns c, the verdict on m, unless m begins with a task's name:
// such a line is never believed, whatever follows, and is refused as
// process_name_prefix when it would have been anything but unrelated.
func believe(m string, c Class) Class {
	if processNamePrefix(m) {
		if c.Kind != event.KindUnrelated || c.Rejected != "" || nvidiaPhrase(m) {
			return Class{Kind: event.KindUnrelated, Rejected: RejectProcessName}
		}
		return Class{Kind: event.KindUnrelated}
	}
	return c
}

// refusedTask reports whether an unrelated line begins with a task's name
// and names NVIDIA things: counted, so that forgeries show, while ordinary
// segfaults are plain unrelated lines.
func refusedTask(m string) bool { return processNamePrefix(m) && nvidiaPhrase(m) }

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
		return malformed()
	case strings.HasPrefix(body, "GPU "):
		if c, ok := gpuLine(body[len("GPU "):]); ok {
			return c
		}
	case strings.HasPrefix(body, "The NVIDIA GPU "):
		if c, ok := theNVIDIAGPU(body[len("The NVIDIA GPU "):]); ok {
			return c
		}
	case body == "fallen off the bus and is not responding to commands." ||
		strings.HasPrefix(body, "fallen off the bus and is not responding to commands.") &&
			trimSpaceRight(body) == "fallen off the bus and is not responding to commands.":
		// Line 3 of the 570+ message read on its own: no address.
		return Class{Kind: event.KindFallenOffBus}
	case strings.HasPrefix(body, "loading NVIDIA UNIX"):
		if i := strings.Index(body, "Kernel Module"); i >= 0 {
			c := Class{Kind: event.KindDriverLoaded}
			c.DriverVersion = firstVersion(body[i:])
			return c
		}
	case strings.HasPrefix(body, "version: NVIDIA UNIX"):
		// /proc/driver/nvidia/version's first line, pasted beside a log:
		// the loaded module's version, as the load banner gives it.
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
	case strings.HasPrefix(body, "this kernel module has the version "):
		// The second line of a two-line API mismatch: the module's side.
		c := other(m)
		c.DriverVersion = firstVersion(body)
		return c
	case strings.HasPrefix(body, "RmInitAdapter failed! "):
		if parenCodes(body[len("RmInitAdapter failed! "):]) {
			return Class{Kind: event.KindRmInitFailed}
		}
	case strings.HasPrefix(body, "rm_init_adapter("):
		if d, n := leadingInt(body[len("rm_init_adapter("):]); n > 0 && d >= 0 &&
			trimSpaceRight(body[len("rm_init_adapter(")+n:]) == ") failed" {
			return Class{Kind: event.KindRmInitFailed}
		}
	case strings.HasPrefix(body, "The NVIDIA probe routine failed for "):
		r := body[len("The NVIDIA probe routine failed for "):]
		if _, n := leadingInt(r); n > 0 && strings.HasPrefix(trimSpaceRight(r[n:]), " device(s).") &&
			len(trimSpaceRight(r[n:])) == len(" device(s).") {
			return Class{Kind: event.KindRmInitFailed}
		}
	}
	if claimsEvent(body) {
		return malformed()
	}
	return other(m)
}

// gpuLine parses what follows "NVRM: GPU ": the 4xx-5xx per-GPU sentences
// "DDDD:BB:DD.F: GPU has fallen off the bus.", "DDDD:BB:DD.F: RmInitAdapter
// failed! (...)", "DDDD:BB:DD.F: rm_init_adapter failed, device minor number
// N", and "at PCI:DDDD:BB:DD: GPU-<uuid>" (gpu_identity) or the 3xx "at
// DDDD:BB:DD.F has fallen off the bus.". ok is false for any other text,
// which the caller treats as other_nvrm or malformed.
func gpuLine(s string) (Class, bool) {
	if r, ok := strings.CutPrefix(s, "at "); ok {
		pci := strings.HasPrefix(r, "PCI:")
		if pci {
			r = r[len("PCI:"):]
		}
		n := pciAddrLen(r)
		if n == 0 {
			return Class{}, false
		}
		addr, tail := r[:n], r[n:]
		if u, ok := strings.CutPrefix(tail, ": GPU-"); ok {
			u = trimSpaceRight(u)
			if len(u) == 0 || !isUUIDText(u) {
				return Class{}, false
			}
			return Class{Kind: event.KindGPUIdentity, PCIBusID: normalizeAddr(addr), UUID: tail[2 : 2+len("GPU-")+len(u)]}, true
		}
		if !pci && trimSpaceRight(tail) == " has fallen off the bus." {
			return Class{Kind: event.KindFallenOffBus, PCIBusID: normalizeAddr(addr)}, true
		}
		return Class{}, false
	}
	n := fullAddrLen(s)
	if n == 0 || !strings.HasPrefix(s[n:], ": ") {
		return Class{}, false
	}
	addr, tail := s[:n], trimSpaceRight(s[n+2:])
	switch {
	case tail == "GPU has fallen off the bus.":
		return Class{Kind: event.KindFallenOffBus, PCIBusID: normalizeAddr(addr)}, true
	case strings.HasPrefix(tail, "RmInitAdapter failed! ") && parenCodes(tail[len("RmInitAdapter failed! "):]):
		return Class{Kind: event.KindRmInitFailed, PCIBusID: normalizeAddr(addr)}, true
	case strings.HasPrefix(tail, "rm_init_adapter failed, device minor number "):
		if _, k := leadingInt(tail[len("rm_init_adapter failed, device minor number "):]); k > 0 &&
			k == len(tail)-len("rm_init_adapter failed, device minor number ") {
			return Class{Kind: event.KindRmInitFailed, PCIBusID: normalizeAddr(addr)}, true
		}
	}
	return Class{}, false
}

// theNVIDIAGPU parses what follows "NVRM: The NVIDIA GPU ": the 570+
// fallen-off-the-bus message, as one record (lines joined by "\n" and
// "NVRM: ", as the kernel and journald keep it) or in its one-line
// rendering. Line 1 alone, and the start of the "not supported" message,
// are other_nvrm with the address that follows "The NVIDIA GPU ".
func theNVIDIAGPU(s string) (Class, bool) {
	n := fullAddrLen(s)
	if n == 0 {
		return Class{}, false
	}
	addr, r := s[:n], s[n:]
	if rest, ok := nvrmSep(r); ok {
		r = rest
		if strings.HasPrefix(r, "(PCI ID: ") {
			k := len("(PCI ID: ")
			if len(r) < k+10 || !isHexN(r[k:k+4]) || r[k+4] != ':' || !isHexN(r[k+5:k+9]) || r[k+9] != ')' {
				return Class{}, false
			}
			if r, ok = nvrmSep(r[k+10:]); !ok {
				return Class{}, false
			}
		}
		if r, ok = strings.CutPrefix(r, "installed in this system has"); ok {
			if r, ok = nvrmSep(r); ok && trimSpaceRight(r) == "fallen off the bus and is not responding to commands." {
				return Class{Kind: event.KindFallenOffBus, PCIBusID: normalizeAddr(addr)}, true
			}
			return Class{}, false
		}
	}
	// Not the fallen-off-the-bus message: other_nvrm about this GPU when
	// the line stops here or goes on with its PCI ID (line 1 of either
	// message); ok false otherwise.
	if t := trimSpaceRight(r); t == "" || strings.HasPrefix(t, " (PCI ID: ") {
		return Class{Kind: event.KindOtherNVRM, PCIBusID: normalizeAddr(addr)}, true
	}
	return Class{}, false
}

// nvrmSep consumes the break between the lines of one multi-line NVRM
// message: blanks, or a newline with the next line's "NVRM: " prefix.
func nvrmSep(s string) (string, bool) {
	t := trimBlank(s)
	if strings.HasPrefix(t, "\r\n") {
		t = t[1:]
	}
	if strings.HasPrefix(t, "\n") {
		t = trimBlank(t[1:])
		if !strings.HasPrefix(t, "NVRM:") {
			return "", false
		}
		return trimBlank(t[len("NVRM:"):]), true
	}
	if len(t) == len(s) {
		return "", false // nothing separated the words
	}
	return t, true
}

// parenCodes matches the RmInitAdapter status "(0x22:0x56:894)" ending the
// line.
func parenCodes(s string) bool {
	s = trimSpaceRight(s)
	if len(s) < 3 || s[0] != '(' || s[len(s)-1] != ')' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isHex(c) && c != 'x' && c != ':' {
			return false
		}
	}
	return true
}

// claimsEvent reports whether an NVIDIA line says what an event line says.
// Such a line that did not parse as its event is malformed, not other_nvrm.
func claimsEvent(body string) bool {
	return strings.Contains(body, "fallen off the bus") ||
		strings.Contains(body, "RmInitAdapter failed") ||
		strings.Contains(body, "rm_init_adapter failed") ||
		strings.Contains(body, "rm_init_adapter(") ||
		strings.Contains(body, "probe routine failed")
}

func malformed() Class { return Class{Kind: event.KindUnrelated, Rejected: RejectMalformed} }

// processNamePrefix reports whether m begins the way the kernel's reports
// about a user-space task do, with the task's name (comm: at most 15 bytes
// of anything but NUL, chosen by the task with prctl(PR_SET_NAME) or its
// file name):
//
//	comm[pid]: segfault at ... / comm[pid]: bad frame in ...
//	comm[pid] general protection fault ... / comm[pid] trap ...
//	traps: comm[pid] trap divide error ...
//	comm (pid): drop_caches: 3 (and other notices)
func processNamePrefix(m string) bool {
	if m[0] == 't' && strings.HasPrefix(m, "traps: ") {
		return true
	}
	// '[' follows at most maxComm bytes of name; " (" does, so '(' is at
	// most one byte further.
	n := min(len(m), maxComm+2)
	if n == maxComm+2 && !hasOpenBracket(load64(m)) && !hasOpenBracket(load64(m[8:])) && m[16] != '[' && m[16] != '(' {
		return false // the common case, eight bytes at a time
	}
	for i := 0; i < n; i++ {
		if c := m[i]; (c == '[' || c == '(') && taskAt(m, i) {
			return true
		}
	}
	return false
}

func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// hasOpenBracket reports whether any byte of x is '[' or '(' (the
// zero-byte test of Hacker's Delight 6-1 on x XOR each).
func hasOpenBracket(x uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	a := x ^ (lo * '[')
	b := x ^ (lo * '(')
	return (a-lo)&^a&hi != 0 || (b-lo)&^b&hi != 0
}

// taskAt reports whether the '[' or '(' at m[i] opens the pid after a task
// name: "[pid]: ", "[pid] " or " (pid): ".
func taskAt(m string, i int) bool {
	if m[i] == '[' {
		if i > maxComm {
			return false
		}
		n := digitsLen(m[i+1:])
		if n == 0 || i+1+n >= len(m) || m[i+1+n] != ']' {
			return false
		}
		r := m[i+2+n:]
		return len(r) > 0 && r[0] == ' ' || len(r) > 1 && r[0] == ':' && r[1] == ' '
	}
	if i == 0 || m[i-1] != ' ' {
		return false
	}
	n := digitsLen(m[i+1:])
	return n > 0 && strings.HasPrefix(m[i+1+n:], "): ")
}

// maxComm is the longest task name the kernel keeps (TASK_COMM_LEN - 1).
const maxComm = 15

// nvidiaPhrase reports whether m says what NVIDIA driver lines say: a
// refused line that does is worth counting. Library names ("libnvidia-ml",
// "libcuda") are not among them: programs using the GPU crash too.
func nvidiaPhrase(m string) bool {
	for _, p := range [...]string{"NVRM", "Xid", "fallen off the bus", "RmInit", "rm_init_adapter"} {
		if strings.Contains(m, p) {
			return true
		}
	}
	return false
}

func digitsLen(s string) int {
	n := 0
	for n < len(s) && n < 10 && isDigit(s[n]) {
		n++
	}
	return n
}

func isHexN(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isUUIDText(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// fullAddrLen is the length of a DDDD:BB:DD.F address (with its function)
// at the start of s, or 0.
func fullAddrLen(s string) int {
	n := pciAddrLen(s)
	if n < 3 || s[n-2] != '.' {
		return 0
	}
	return n
}

func trimSpaceRight(s string) string {
	for len(s) > 0 && (isBlank(s[len(s)-1]) || s[len(s)-1] == '\r' || s[len(s)-1] == '\n') {
		s = s[:len(s)-1]
	}
	return s
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
		if len(name) > len("nvidia-nvswitch") && strings.HasPrefix(name, "nvidia-nvswitch") &&
			strings.HasPrefix(m[len(name):], ": SXid") {
			if c, ok := parseXid(body[4:], event.KindSXid); ok {
				c.Switch = name
				return c
			}
		}
		return malformed()
	}
	if claimsEvent(body) {
		return malformed()
	}
	return other(m)
}

// parseXid parses what follows "Xid" or "SXid": " (PCI:0000:3b:00): 79, ...".
// The parenthesis holds exactly an address as drivers print it and nothing
// else; the code follows "): " and ends the line or is followed by ','.
func parseXid(s string, kind event.Kind) (Class, bool) {
	if !strings.HasPrefix(s, " (") {
		return Class{}, false
	}
	s = s[1:]
	c := Class{Kind: kind}
	n, ok := xidAddr(s[1:], &c)
	if !ok {
		return Class{}, false
	}
	rest := s[1+n:]
	if !strings.HasPrefix(rest, "): ") {
		return Class{}, false
	}
	rest = rest[3:]
	code, n := leadingInt(rest)
	if n == 0 {
		return Class{}, false
	}
	rest = rest[n:]
	if t := trimSpaceRight(rest); t != "" && t[0] != ',' {
		return Class{}, false
	}
	c.Code, c.HasCode = code, true
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

// xidAddr parses the address inside an Xid's parenthesis, as the drivers
// print it: "PCI:DDDD:BB:DD" (R450+), with an optional ".F" and an optional
// " GPU-I:NN" (MIG), the older "DDDD:BB:DD" without "PCI:", and the
// pre-2010 "DDDD:BB" with no usable address. It returns the length used,
// which must reach the closing ')'; the bus id and GPU instance go into c.
func xidAddr(s string, c *Class) (int, bool) {
	i := 0
	if strings.HasPrefix(s, "PCI:") {
		i = len("PCI:")
	}
	if n := pciAddrLen(s[i:]); n > 0 {
		c.PCIBusID = normalizeAddr(s[i : i+n])
		i += n
	} else if i == 0 && len(s) >= 8 && isHexN(s[:4]) && s[4] == ':' && isHexN(s[5:7]) && s[7] == ')' {
		return 7, true // "0009:00"
	} else {
		return 0, false
	}
	if g, ok := strings.CutPrefix(s[i:], " GPU-I:"); ok {
		n := digitsLen(g)
		if n == 0 {
			return 0, false
		}
		c.GPUInstance = g[:n]
		i += len(" GPU-I:") + n
	}
	if i >= len(s) || s[i] != ')' {
		return 0, false
	}
	return i, true
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
	// A driver's name is a plain word; a task name may hold anything.
	for i := 0; i < sp; i++ {
		if !isAlnum(m[i]) && m[i] != '-' && m[i] != '.' {
			return "", "", "", false
		}
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
