package agent

import (
	"fmt"
	"slices"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// Health is a level with its reasons, the one action to take (from the
// vocabulary) and, where a source gave one, free-text advice.
type Health struct {
	Level   event.Level  `json:"level"`
	Reasons []string     `json:"reasons,omitempty"`
	Action  event.Action `json:"action,omitempty"`
	Fix     string       `json:"fix,omitempty"` // free text, e.g. the command a dkms finding names
}

// merge folds o into h: the worse level, every reason (prefixed with who),
// the strongest action, and the fix of the worst source that gave one.
func (h *Health) merge(o Health, who string) {
	if o.Fix != "" && (h.Fix == "" || event.Worse(h.Level, o.Level) != h.Level) {
		h.Fix = o.Fix
	}
	h.Level = event.Worse(h.Level, o.Level)
	for _, r := range o.Reasons {
		if who != "" {
			r = who + ": " + r
		}
		h.Reasons = append(h.Reasons, r)
	}
	if o.Action.Rank() > h.Action.Rank() {
		h.Action = o.Action
	}
}

// kindWords say what a kernel event means for a GPU, for health reasons
// and systemd's status line ("GPU 3 fell off the bus").
var kindWords = map[event.Kind]string{
	event.KindFallenOffBus: "fell off the bus",
	event.KindRmInitFailed: "failed to initialise (RmInitAdapter)",
	event.KindXid:          "Xid",
	event.KindSXid:         "NVSwitch SXid",
	event.KindAER:          "PCIe AER error",
	event.KindAPIMismatch:  "driver API mismatch",
	event.KindMCE:          "machine check",
}

// stale is how old a sample may get before the GPU's health is unknown.
const stale = 2 * time.Minute

// gpuHealth applies the per-GPU rules:
//   - NVML says the GPU is lost: critical.
//   - a kernel event weighs at its severity for as long as the catalog says
//     (its health column: the rest of the boot, or window);
//   - row remapping failed: critical; a remap pending a reset: warning;
//   - the clocks held down for heat right now: warning;
//   - no sample for a while, or NVML timing out: unknown.
func gpuHealth(g *GPUState, now time.Time, window time.Duration) Health {
	h := Health{Level: event.OK}
	if g.Lost {
		h.merge(Health{Level: event.Critical, Action: event.ActionDrainAndReset,
			Reasons: []string{"NVML reports the GPU lost (GPU_IS_LOST)"}}, "")
	}
	h.merge(eventsHealth(g.Sticky, now, window), "")
	s := g.Sample
	if s == nil {
		if h.Level == event.OK {
			h.Level = event.Unknown
			h.Reasons = append(h.Reasons, "not sampled yet")
		}
		return h
	}
	if v, ok := s.Value(idxRemapFailure); ok && v > 0 {
		h.merge(Health{Level: event.Critical, Action: event.ActionDrainAndReset, Reasons: []string{"row remapping failed: the memory cannot be repaired"}}, "")
	}
	if v, ok := s.Value(idxRemapPending); ok && v > 0 {
		h.merge(Health{Level: event.Warning, Action: event.ActionResetGPU, Reasons: []string{"a row remap is pending: reset the GPU to activate it"}}, "")
	}
	if v, ok := s.Value(idxClockEvents); ok {
		const thermal = 0x20 | 0x40 // sw and hw thermal slowdown
		if uint64(v)&thermal != 0 {
			h.merge(Health{Level: event.Warning, Action: event.ActionHardwareInspection, Reasons: []string{"clocks held down by a thermal slowdown"}}, "")
		}
	}
	if !g.Lost {
		if s.Err != "" && s.Status[idxTemp] == gpu.StatusTimeout {
			h.merge(Health{Level: event.Unknown, Reasons: []string{s.Err}}, "")
		} else if now.Sub(s.Time) > stale {
			h.merge(Health{Level: event.Unknown, Reasons: []string{fmt.Sprintf("last sample %s old", now.Sub(s.Time).Round(time.Second))}}, "")
		}
	}
	return h
}

// eventsHealth is what events weigh: each at its severity, those the
// catalog says last the boot for good, the others for window.
func eventsHealth(evs []event.Event, now time.Time, window time.Duration) Health {
	h := Health{Level: event.OK}
	for _, ev := range evs {
		switch ev.HealthDuration {
		case event.DurationBoot:
		case event.DurationWindow:
			if window > 0 && now.Sub(ev.Time) > window {
				continue
			}
		default:
			continue
		}
		what := eventWords(ev)
		if slices.Contains(h.Reasons, what) {
			what = "" // the same code again: one reason
		}
		o := Health{Level: ev.Severity, Action: ev.Action}
		if what != "" {
			o.Reasons = []string{what}
		}
		h.merge(o, "")
	}
	return h
}

// eventWords names an event for a health reason: "Xid 79 (GPU_HAS_FALLEN_OFF_THE_BUS)".
func eventWords(ev event.Event) string {
	if ev.Kind == event.KindStateCorrupt {
		return ev.Raw // the agent's own words: which file, what was wrong, where it went
	}
	what, ok := kindWords[ev.Kind]
	if !ok {
		what = string(ev.Kind)
	}
	if ev.Code != 0 {
		what = fmt.Sprintf("%s %d", what, ev.Code)
	}
	if ev.Mnemonic != "" {
		what += " (" + ev.Mnemonic + ")"
	}
	return what
}

var (
	idxTemp         = gpu.FieldIndex("DCGM_FI_DEV_GPU_TEMP")
	idxRemapFailure = gpu.FieldIndex("DCGM_FI_DEV_ROW_REMAP_FAILURE")
	idxRemapPending = gpu.FieldIndex("DCGM_FI_DEV_ROW_REMAP_PENDING")
	idxClockEvents  = gpu.FieldIndex("DCGM_FI_DEV_CLOCKS_EVENT_REASONS")
)
