// Package sdnotify tells systemd what the agent is doing: ready after the
// first complete sample, a one-line status, reloading, stopping, and a
// watchdog that keeps pinging only while sampling makes progress.
//
// Without NOTIFY_SOCKET (run by hand, in a container, under another service
// manager) every call is a no-op that returns nil, so callers never branch on
// "are we under systemd".
package sdnotify

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify messages to the socket named by NOTIFY_SOCKET.
// The zero value is ready to use; it is safe for concurrent use.
type Notifier struct {
	progress atomic.Uint64
	// sent counts datagrams systemd accepted; a test and `status` can read it.
	sent atomic.Uint64
}

// New returns a Notifier. NOTIFY_SOCKET is read on every send, not here,
// so a Notifier made before the environment is set (as in tests) still works.
func New() *Notifier { return &Notifier{} }

// Enabled reports whether a service manager is listening.
func Enabled() bool { return notifySocket() != "" }

// Ready says start-up is complete. Send it after the first complete sample,
// not when the process starts: with Type=notify, systemd holds units ordered
// After=gpuwarden.service until then, and a node's bring-up gate wants real data.
// After a reload, send Ready again to end the RELOADING state.
func (n *Notifier) Ready() error { return n.send(daemon.SdNotifyReady) }

// Status sets the one line `systemctl status` shows, for example
// "8 GPUs, 1 unhealthy: GPU 3 fell off the bus". Line breaks are replaced by
// spaces: a newline would start a new assignment in the datagram, and status
// text can carry kernel-log text that a GPU process controls.
func (n *Notifier) Status(line string) error {
	line = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, line)
	return n.send("STATUS=" + line)
}

// Reloading says a configuration reload has begun; Ready ends it. The
// MONOTONIC_USEC field is what Type=notify-reload (systemd 253 and newer)
// requires to match the reload with its request; older systemd ignores it.
func (n *Notifier) Reloading() error {
	// SdNotifyMonotonicUsec ends in a newline of its own; trim it so the
	// datagram is exactly two assignments.
	return n.send(daemon.SdNotifyReloading + "\n" + strings.TrimSpace(daemon.SdNotifyMonotonicUsec()))
}

// Stopping says shutdown has begun, so systemd shows "deactivating" instead
// of treating the slow exit of a hung NVML call as a failure to stop.
func (n *Notifier) Stopping() error { return n.send(daemon.SdNotifyStopping) }

// Progress records that the sampling loop completed one round. The watchdog
// pings only when this count has moved since its previous ping.
func (n *Notifier) Progress() { n.progress.Add(1) }

// Completed returns the number of Progress calls so far.
func (n *Notifier) Completed() uint64 { return n.progress.Load() }

// Sent returns how many messages systemd accepted.
func (n *Notifier) Sent() uint64 { return n.sent.Load() }

// WatchdogInterval returns how often the watchdog should ping: half of
// WATCHDOG_USEC, so one late tick does not kill the service. It is 0 when the
// unit has no WatchdogSec= or when WATCHDOG_PID names another process (a hook
// started by the agent inherits the environment but is not the main PID).
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d == 0 {
		return 0, err
	}
	return d / 2, nil
}

// StartWatchdog starts the watchdog in a goroutine when systemd asked for one
// and returns its interval (0: not started). It stops when ctx is done.
// progress reports completed samples; nil means the Notifier's own Progress
// count. A sampling loop that is stuck (an NVML call that never returns) stops
// advancing the count, the pings stop, and systemd restarts the service after
// WatchdogSec. For that not to fire on a healthy host, WatchdogSec must be at
// least four times the longest sampling interval.
func (n *Notifier) StartWatchdog(ctx context.Context, progress func() uint64) (time.Duration, error) {
	interval, err := WatchdogInterval()
	if err != nil || interval == 0 {
		return 0, err
	}
	go n.Watchdog(ctx, interval, progress)
	return interval, nil
}

// Watchdog pings WATCHDOG=1 every interval if progress advanced since the
// previous tick, until ctx is done. It blocks; StartWatchdog is the usual way
// in. The count at the start is the baseline, so no ping goes out before the
// first sample completes: until then TimeoutStartSec, not the watchdog, is what
// bounds a hang at start-up.
func (n *Notifier) Watchdog(ctx context.Context, interval time.Duration, progress func() uint64) {
	if progress == nil {
		progress = n.Completed
	}
	last := progress()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := progress()
			if now == last {
				continue
			}
			last = now
			// A failed send is not retried: the next tick sends again, and
			// systemd's verdict comes only after a whole WatchdogSec.
			_ = n.send(daemon.SdNotifyWatchdog)
		}
	}
}

func (n *Notifier) send(state string) error {
	ok, err := daemon.SdNotify(false, state)
	if ok {
		n.sent.Add(1)
	}
	return err
}

// notifySocket reads the variable itself because daemon has no getter for it.
func notifySocket() string { return os.Getenv("NOTIFY_SOCKET") }
