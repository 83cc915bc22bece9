package kmsg

import "strings"

// Wrapped is a line of log text with its wrapper taken off.
type Wrapped struct {
	Message string // the kernel message, a substring of the line
	// UserSpace is set when a syslog or journal tag says the line came from
	// a program, not the kernel ("nvidia-persistenced[749]: ...").
	UserSpace bool
	// Escaped is set for raw /dev/kmsg records, whose text uses \xNN escapes.
	Escaped bool
}

// maxWrapperLayers bounds the loop below: real lines carry at most four
// (grep file name, syslog header, dmesg time stamp, caller id).
const maxWrapperLayers = 8

// StripWrapper removes the log wrapper from one line, layer by layer, so the
// same message is found in any of: raw /dev/kmsg records ("6,1234,5678,-;"),
// "<3>" priorities, dmesg ("[  12.345678]", "[  +0.000316]", -T "[Wed Jun 24
// 15:44:20 2026]", -H "[Jun24 15:44]", --decode "kern  :err   : ", caller
// ids "[ T1030]"), syslog and kern.log (classic "Sep  6 22:24:12 host
// kernel:" in any language, RFC 3339 time stamps, "kernel.log:" grep
// prefixes), journalctl -k (short, short-iso, short-precise,
// short-monotonic, --no-hostname) and talosctl ("10.0.0.1: kern: warning:
// [2026-04-22T21:25:20Z]:"). It does not allocate.
func StripWrapper(line string) Wrapped {
	var w Wrapped
	m := line
	for len(m) > 0 && (m[len(m)-1] == '\n' || m[len(m)-1] == '\r') {
		m = m[:len(m)-1]
	}
	for range maxWrapperLayers {
		m = trimBlank(m)
		if len(m) == 0 {
			break
		}
		c := m[0]
		// Each layer starts with a recognizable byte; test only the layers
		// that can start with this one.
		if isDigit(c) {
			if r, ok := cutKmsgHeader(m); ok {
				m, w.Escaped = r, true
				continue
			}
			if r, ok := cutIPv4(m); ok {
				m = r
				continue
			}
		}
		if c == '<' {
			if r, ok := cutPriority(m); ok {
				m = r
				continue
			}
			break
		}
		if c == '[' {
			r, ok := cutBracketStamp(m)
			if !ok {
				break
			}
			m = r
			// journalctl -o short-monotonic: "[  12.34] host kernel: msg".
			if r, user, ok := cutTag(trimBlank(m), true); ok {
				m, w.UserSpace = r, user
				if user {
					break
				}
			}
			continue
		}
		if c >= 'a' && c <= 'z' {
			if r, ok := cutFacilityLevel(m); ok {
				m = r
				continue
			}
			if r, ok := strings.CutPrefix(m, "kernel: "); ok {
				m = r
				continue
			}
		}
		if c != ' ' && c != '{' && c != '(' && c != '?' {
			if r, ok := cutFileName(m); ok {
				m = r
				continue
			}
			if r, ok := cutSyslogTime(m); ok {
				r, user, _ := cutTag(trimBlank(r), false)
				m, w.UserSpace = r, user
				if user {
					break
				}
				continue
			}
		}
		break
	}
	w.Message = m
	return w
}

// cutKmsgHeader removes "PRI,SEQ,TS_USEC,FLAGS[,...];".
func cutKmsgHeader(m string) (string, bool) {
	if !isDigit(m[0]) {
		return "", false
	}
	commas := 0
	for i := 0; i < len(m) && i < 64; i++ {
		switch c := m[i]; {
		case c == ';':
			if commas >= 3 {
				return m[i+1:], true
			}
			return "", false
		case c == ',':
			commas++
		case commas < 3 && !isDigit(c):
			return "", false
		}
	}
	return "", false
}

// cutPriority removes a syslog priority "<3>".
func cutPriority(m string) (string, bool) {
	if m[0] != '<' {
		return "", false
	}
	i := 1
	for i < len(m) && i < 5 && isDigit(m[i]) {
		i++
	}
	if i == 1 || i >= len(m) || m[i] != '>' {
		return "", false
	}
	return m[i+1:], true
}

// cutBracketStamp removes a dmesg time stamp or caller id in brackets. The
// contents must look like a time: digits with '.' or ':' (or a T/C caller
// id), and only characters a time stamp uses, so "[Hardware Error]",
// "[drm]", "[ 0] RxErr" and "[GPU ID 0x3b00]" are left alone.
func cutBracketStamp(m string) (string, bool) {
	if m[0] != '[' {
		return "", false
	}
	end := strings.IndexByte(m[:min(len(m), 48)], ']')
	if end < 2 {
		return "", false
	}
	in := trimBlank(m[1:end])
	if elidedStamp(strings.TrimRight(in, " \t")) {
		return m[end+1:], true
	}
	digits, sep := 0, false
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case isDigit(c):
			digits++
		case c == '.' || c == ':':
			sep = true
		case c == ' ' || c == '+' || c == '-' || c == ',' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		default:
			return "", false
		}
	}
	callerID := len(in) >= 2 && (in[0] == 'T' || in[0] == 'C') && digits == len(in)-1
	if !callerID && (!sep || digits < 2) {
		return "", false
	}
	r := m[end+1:]
	if len(r) > 0 && r[0] == ':' { // talosctl "[2026-...Z]: msg"
		r = r[1:]
	}
	return r, true
}

// elidedStamp reports a timestamp a person cut from a pasted log: "[...]",
// "[ ... ]" or "[…]", as bug reports and issue threads print them.
func elidedStamp(in string) bool {
	if in == "…" {
		return true
	}
	return len(in) >= 3 && strings.Trim(in, ".") == ""
}

// cutFacilityLevel removes dmesg --decode's "kern  :err   : " and
// talosctl's "kern: warning: ".
func cutFacilityLevel(m string) (string, bool) {
	w, r := leadingWord(m)
	if !isFacility(w) {
		return "", false
	}
	r, ok := cutColon(r)
	if !ok {
		return "", false
	}
	w, r = leadingWord(trimBlank(r))
	if !isLevel(w) {
		return "", false
	}
	return cutColon(r)
}

func isFacility(w string) bool {
	switch w {
	case "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
		"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7":
		return true
	}
	return false
}

func isLevel(w string) bool {
	switch w {
	case "emerg", "alert", "crit", "err", "warning", "warn", "notice", "info", "debug":
		return true
	}
	return false
}

// leadingWord splits off the lower-case letters and digits at the start.
func leadingWord(m string) (word, rest string) {
	i := 0
	for i < len(m) && i < 10 && (m[i] >= 'a' && m[i] <= 'z' || isDigit(m[i])) {
		i++
	}
	return m[:i], m[i:]
}

// cutColon removes blanks and one ':'.
func cutColon(m string) (string, bool) {
	m = trimBlank(m)
	if len(m) == 0 || m[0] != ':' {
		return "", false
	}
	return m[1:], true
}

// cutIPv4 removes talosctl's node address "192.168.1.2: ".
func cutIPv4(m string) (string, bool) {
	dots, i := 0, 0
	for i < len(m) && i < 16 && (isDigit(m[i]) || m[i] == '.') {
		if m[i] == '.' {
			dots++
		}
		i++
	}
	if dots != 3 || i+1 >= len(m) || m[i] != ':' || m[i+1] != ' ' {
		return "", false
	}
	return m[i+2:], true
}

// cutFileName removes a grep file-name prefix: "kernel.log:Mar  1 ...",
// "/var/log/syslog:Mar ...".
func cutFileName(m string) (string, bool) {
	lim := min(len(m), 128)
	i := strings.IndexByte(m[:lim], ':')
	if i <= 0 || i+1 >= len(m) || m[i+1] == ' ' {
		return "", false
	}
	name := m[:i]
	if strings.IndexByte(name, ' ') >= 0 || !(strings.Contains(name, ".log") || strings.HasPrefix(name, "/") ||
		strings.HasSuffix(name, "syslog") || strings.HasSuffix(name, "messages")) {
		return "", false
	}
	return m[i+1:], true
}

// cutSyslogTime removes a syslog or journal time stamp: whatever date comes
// first (in any language: "Sep  6", "kwi 15", "4月 19", "Thg 4 06",
// "2025-06-03T", "2025/11/25"), then hh:mm:ss with an optional fraction,
// time zone and year. The date part must be short and free of ':' so that a
// message such as "usb 1-1: new device" is not mistaken for one.
func cutSyslogTime(m string) (string, bool) {
	lim := min(len(m), 24)
	i := strings.IndexByte(m[:lim], ':')
	if i < 2 || i+6 > len(m) {
		return "", false
	}
	if !isDigit(m[i-1]) || !isDigit(m[i-2]) || !isDigit(m[i+1]) || !isDigit(m[i+2]) ||
		m[i+3] != ':' || !isDigit(m[i+4]) || !isDigit(m[i+5]) {
		return "", false
	}
	j := i + 6
	if j < len(m) && (m[j] == '.' || m[j] == ',') {
		j++
		for j < len(m) && isDigit(m[j]) {
			j++
		}
	}
	if j < len(m) && m[j] == 'Z' {
		j++
	} else if j < len(m) && (m[j] == '+' || m[j] == '-') {
		k := j + 1
		for k < len(m) && k < j+6 && (isDigit(m[k]) || m[k] == ':') {
			k++
		}
		j = k
	}
	if j < len(m) && m[j] != ' ' && m[j] != '\t' {
		return "", false
	}
	r := trimBlank(m[j:])
	// ctime-style stamps carry the year after the time.
	if len(r) > 5 && isDigit(r[0]) && isDigit(r[1]) && isDigit(r[2]) && isDigit(r[3]) && r[4] == ' ' {
		r = r[5:]
	}
	return r, true
}

// cutTag removes the syslog/journal "host tag:" part. A "kernel:" tag gives
// the kernel message; a program's tag ("nvidia-persistenced[749]:",
// "/usr/bin/nvidia-powerd[829]:") marks the line as user space. A plain
// "word:" is left alone: it may be the kernel message itself ("NVRM: ...").
// With needKernel (after a dmesg-style stamp) only "kernel:" is looked for.
func cutTag(m string, needKernel bool) (rest string, user, ok bool) {
	t1, r1 := splitWord(m)
	if t1 == "kernel:" {
		return r1, false, true
	}
	if !needKernel && isProgramTag(t1) {
		return m, true, true
	}
	if strings.IndexByte(t1, ':') >= 0 {
		return m, false, false
	}
	t2, r2 := splitWord(r1)
	if t2 == "kernel:" {
		return r2, false, true
	}
	if !needKernel && isProgramTag(t2) {
		return m, true, true
	}
	return m, false, false
}

// isProgramTag reports whether a word is a user-space syslog tag:
// "name[pid]:" or "/path/to/name:".
func isProgramTag(w string) bool {
	if len(w) < 3 || w[len(w)-1] != ':' {
		return false
	}
	return strings.HasSuffix(w, "]:") && strings.IndexByte(w, '[') > 0 || w[0] == '/'
}

func splitWord(m string) (word, rest string) {
	m = trimBlank(m)
	for i := 0; i < len(m); i++ {
		if isBlank(m[i]) {
			return m[:i], trimBlank(m[i+1:])
		}
	}
	return m, ""
}
