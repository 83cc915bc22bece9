package profiling

import (
	"log/slog"
	"time"
)

// Control answers the control socket's profiling operations for a
// registry (it is a control.ProfilingHandler), and writes each pause and
// resume to the log with who asked: the audit of who took the profiling
// counters away from monitoring, and for how long.
type Control struct {
	Registry *Registry // nil: Default
	Log      *slog.Logger
}

func (c Control) reg() *Registry {
	if c.Registry != nil {
		return c.Registry
	}
	return Default
}

func (c Control) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

// PauseProfiling pauses profiling for d (at most MaxPause) and answers the
// status after.
func (c Control) PauseProfiling(d time.Duration, who string) (any, error) {
	until, err := c.reg().PauseFor(d, who)
	if err != nil {
		c.log().Warn("profiling pause refused", "who", who, "duration", d, "err", err)
		return nil, err
	}
	c.log().Warn("profiling paused: the profiling counters are released for a profiler", "who", who,
		"duration", d, "until", until.Format(time.RFC3339), "owner", c.reg().Owner())
	return c.reg().Status(), nil
}

// ResumeProfiling ends a pause and answers the status after.
func (c Control) ResumeProfiling(who string) (any, error) {
	was := c.reg().Status()
	c.reg().Resume()
	c.log().Warn("profiling resumed", "who", who, "was_paused", was.Paused, "paused_by", was.By)
	return c.reg().Status(), nil
}

// ProfilingStatus answers the owner and the pause.
func (c Control) ProfilingStatus() (any, error) { return c.reg().Status(), nil }
