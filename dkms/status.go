package dkms

import (
	"strings"
)

// StatusLine is one line of `dkms status` output.
//
// dkms 2.x (up to 2.8.5) separates module and version with a comma:
//
//	nvidia, 535.104.05, 6.5.0-1-amd64, x86_64: installed
//
// dkms 2.8.6 and later use a slash:
//
//	nvidia/535.104.05, 6.5.0-1-amd64, x86_64: installed
//
// A module that is only added has no kernel and arch ("nvidia/535.104.05: added").
// Annotations such as "(WARNING! Diff between built and installed module!)"
// or "from 5.14.0-70.el9.x86_64" (installed-weak) follow the state and are
// kept verbatim in Warning. Lines dkms prints as errors ("Error! ...") are
// reported with Error set and every other field empty.
type StatusLine struct {
	Module  string `json:"module,omitempty"`
	Version string `json:"module_version,omitempty"`
	Kernel  string `json:"kernel,omitempty"`
	Arch    string `json:"arch,omitempty"`
	State   string `json:"state,omitempty"`
	Warning string `json:"warning,omitempty"`
	Error   bool   `json:"error,omitempty"`
}

// ParseStatusLine parses one line of `dkms status` output. ok is false for a
// line that is neither a status line nor a dkms error (blank lines,
// deprecation notices, text from other tools).
func ParseStatusLine(line string) (s StatusLine, ok bool) {
	line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
	if isDKMSError(line) {
		return StatusLine{Error: true}, true
	}
	head, tail, found := strings.Cut(line, ": ")
	if !found {
		// "nvidia/535.104.05: added" always has a space after the colon, but
		// a line cut at the end ("...: ") still has its state missing.
		return StatusLine{}, false
	}
	parts := strings.Split(head, ", ")
	if strings.Contains(parts[0], "/") {
		s.Module, s.Version, _ = strings.Cut(parts[0], "/")
		parts = parts[1:]
	} else {
		if len(parts) < 2 {
			return StatusLine{}, false
		}
		s.Module, s.Version = parts[0], parts[1]
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
	case 2:
		s.Kernel, s.Arch = parts[0], parts[1]
		if !isToken(s.Kernel) || !isToken(s.Arch) {
			return StatusLine{}, false
		}
	default:
		return StatusLine{}, false
	}
	if !isToken(s.Module) || !isToken(s.Version) {
		return StatusLine{}, false
	}
	tail = strings.TrimSpace(tail)
	state, rest, _ := strings.Cut(tail, " ")
	if !isState(state) {
		return StatusLine{}, false
	}
	s.State = state
	s.Warning = strings.TrimSpace(rest)
	return s, true
}

// isDKMSError reports lines dkms prints when something failed: "Error! ..."
// (every version) and "dkms: ... error ..." (the wrapper's own complaints).
func isDKMSError(line string) bool {
	if strings.HasPrefix(line, "Error!") || strings.HasPrefix(line, "ERROR") {
		return true
	}
	return strings.HasPrefix(line, "dkms:") && strings.Contains(strings.ToLower(line), "error")
}

// isToken reports a non-empty field without blanks, commas or colons: module
// names, versions, kernel releases and arches never contain them.
func isToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t,:")
}

// isState accepts the states dkms prints (added, built, installed,
// installed-weak, broken) and any future lower-case word of the same shape,
// so a new dkms release degrades to an unknown state instead of a dropped line.
func isState(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && r != '-' {
			return false
		}
	}
	return true
}

// ParseStatus parses the whole output of `dkms status`, skipping lines that
// are neither status nor error lines.
func ParseStatus(out string) []StatusLine {
	var lines []StatusLine
	for l := range strings.SplitSeq(out, "\n") {
		if s, ok := ParseStatusLine(l); ok {
			lines = append(lines, s)
		}
	}
	return lines
}
