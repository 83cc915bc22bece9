package remediation

import (
	"slices"
	"strconv"
	"strings"

	"github.com/gpuwarden/gpuwarden/agent"
	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// Subject is what a notice is about, as rules see it: one event or one
// change of health, and the GPU it concerns (Index -1: the host).
type Subject struct {
	Event      *event.Event
	Transition *agent.Transition
	GPU        event.GPURef
}

// SubjectOf reads a notice from the agent.
func SubjectOf(n agent.Notice) Subject {
	s := Subject{Event: n.Event, Transition: n.Transition, GPU: event.GPURef{Index: -1}}
	switch {
	case n.Event != nil:
		s.GPU = n.Event.GPU
	case n.Transition != nil:
		s.GPU = event.GPURef{Index: n.Transition.GPU, UUID: n.Transition.UUID}
		if n.Transition.GPU < 0 {
			s.GPU.Index = -1
		}
	}
	return s
}

// Matches says whether s is what m describes. Matching reads only the
// structured fields the classifier and the catalog set (kind, code,
// action, level, check name, GPU identity), never free text.
func (m *Match) Matches(s Subject) bool {
	if m.Transition != nil {
		t := s.Transition
		if t == nil {
			return false
		}
		if len(m.Transition.From) > 0 && !slices.Contains(m.Transition.From, t.From.String()) {
			return false
		}
		if len(m.Transition.To) > 0 && !slices.Contains(m.Transition.To, t.To.String()) {
			return false
		}
		return m.gpuMatches(s.GPU)
	}
	ev := s.Event
	if ev == nil {
		return false
	}
	if len(m.Kind) > 0 && !slices.Contains(m.Kind, ev.Kind) {
		return false
	}
	if len(m.Code) > 0 && (!codeKind(ev.Kind) || !slices.Contains(m.Code, ev.Code)) {
		return false
	}
	if len(m.Action) > 0 && !slices.Contains(m.Action, ev.Action) {
		return false
	}
	if len(m.Severity) > 0 && !slices.Contains(m.Severity, ev.Severity.String()) {
		return false
	}
	if len(m.Finding) > 0 {
		if ev.Kind != event.KindFinding || ev.Severity == event.OK || !slices.Contains(m.Finding, ev.Fields["check"]) {
			return false
		}
	}
	return m.gpuMatches(s.GPU)
}

func codeKind(k event.Kind) bool { return k == event.KindXid || k == event.KindSXid }

func (m *Match) gpuMatches(g event.GPURef) bool {
	if len(m.GPU) == 0 {
		return true
	}
	for _, sel := range m.GPU {
		switch {
		case sel == "host":
			if g.Index < 0 && g.UUID == "" {
				return true
			}
		case strings.HasPrefix(sel, "GPU-"):
			if g.UUID != "" && strings.EqualFold(sel, g.UUID) {
				return true
			}
		case strings.Contains(sel, ":"):
			if g.PCIBusID != "" && busKey(sel) == busKey(g.PCIBusID) {
				return true
			}
		default:
			if i, err := strconv.Atoi(sel); err == nil && g.Index >= 0 && i == g.Index {
				return true
			}
		}
	}
	return false
}

// busKey is a bus id without its domain's leading zeros, in upper case:
// 00000000:3B:00.0 and 0000:3b:00.0 are one GPU.
func busKey(b string) string {
	b = strings.ToUpper(b)
	if i := strings.IndexByte(b, ':'); i >= 0 {
		dom := strings.TrimLeft(b[:i], "0")
		b = dom + b[i:]
	}
	return b
}
