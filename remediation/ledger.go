package remediation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/gpuwarden/gpuwarden/agent/statefile"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

// LedgerFile is the ledger's name in the state directory.
const LedgerFile = "remediation-ledger.json"

const ledgerVersion = 1

// Ledger is what the guard rails remember across restarts and power loss:
// when each rule last fired on each GPU, what fired in the rate windows,
// which GPUs triggered for the breaker, the breaker itself, and in which
// boots each GPU's event was met by a reset or a reboot.
type Ledger struct {
	Version int `json:"version"`
	// Mode is "dry-run" or "live": the counts of one do not hold back
	// the other when the mode changes.
	Mode string `json:"mode"`
	// LastFired is by rule and subject key (GPU UUID or "host").
	LastFired map[string]time.Time `json:"last_fired,omitempty"`
	// RuleFired and HostFired are the times of actions in the rate windows.
	RuleFired map[string][]time.Time `json:"rule_fired,omitempty"`
	HostFired []time.Time            `json:"host_fired,omitempty"`
	// Triggered is when each subject last triggered a rule, for the breaker.
	Triggered map[string]time.Time `json:"triggered,omitempty"`
	Breaker   Breaker              `json:"breaker"`
	// Boots is, by GPU and event ("GPU-x xid 79"), the boot ids in which
	// a reset or reboot was done for it.
	Boots map[string][]string `json:"boots,omitempty"`
	// Blocked is set when the ledger was found corrupt: no action runs
	// until an operator acknowledges (`gpuwarden remediation ack`).
	Blocked string `json:"blocked,omitempty"`
}

// Breaker is the circuit breaker's state.
type Breaker struct {
	Open     bool      `json:"open"`
	OpenedAt time.Time `json:"opened_at,omitzero"`
	Reason   string    `json:"reason,omitempty"`
}

// CorruptLedgerError is a ledger file that could not be read: it was moved
// aside, and actions are blocked until an operator acknowledges.
type CorruptLedgerError struct {
	Path, MovedTo string
	Err           error
}

func (e *CorruptLedgerError) Error() string {
	return fmt.Sprintf("remediation ledger %s is corrupt (%v); moved it to %s. Cooldowns, rate limits and the breaker "+
		"it held are unknown, so no action runs until an operator runs `gpuwarden remediation ack`", e.Path, e.Err, e.MovedTo)
}

func (e *CorruptLedgerError) Unwrap() error { return e.Err }

func newLedger(mode string) *Ledger {
	return &Ledger{Version: ledgerVersion, Mode: mode, LastFired: map[string]time.Time{}, RuleFired: map[string][]time.Time{},
		Triggered: map[string]time.Time{}, Boots: map[string][]string{}}
}

// maxLedgerBytes bounds what is read: a ledger is small; a huge file is
// not ours.
const maxLedgerBytes = 16 << 20

// LoadLedger reads the ledger in dir. A missing one is a fresh ledger. A
// corrupt one is moved aside and reported as *CorruptLedgerError, and the
// fresh ledger returned with it is Blocked.
func LoadLedger(dir, mode string) (*Ledger, error) {
	path := filepath.Join(dir, LedgerFile)
	b, err := hostfs.ReadFile(path, maxLedgerBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return newLedger(mode), nil
	}
	if errors.Is(err, fs.ErrPermission) {
		// Unreadable is not corrupt: refuse to act rather than forget.
		l := newLedger(mode)
		l.Blocked = fmt.Sprintf("cannot read %s: %v", path, err)
		return l, fmt.Errorf("remediation ledger: %w", err)
	}
	var l *Ledger
	perr := err // a symlink, a FIFO, a device, too large: corrupt, moved aside
	if perr == nil {
		l, perr = parseLedger(b)
	}
	if perr == nil {
		if l.Mode != mode {
			// A change of mode starts the counts over; the breaker and
			// a pending acknowledgement stay.
			fresh := newLedger(mode)
			fresh.Breaker, fresh.Blocked = l.Breaker, l.Blocked
			return fresh, nil
		}
		return l, nil
	}
	moved, merr := statefile.MoveAside(path)
	if merr != nil {
		moved = "(could not move it: " + merr.Error() + ")"
	}
	cerr := &CorruptLedgerError{Path: path, MovedTo: moved, Err: perr}
	l = newLedger(mode)
	l.Blocked = cerr.Error()
	return l, cerr
}

func parseLedger(b []byte) (*Ledger, error) {
	if len(b) > maxLedgerBytes {
		return nil, fmt.Errorf("%d bytes, more than a ledger can be", len(b))
	}
	var l Ledger
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if l.Version != ledgerVersion {
		return nil, fmt.Errorf("version %d, want %d", l.Version, ledgerVersion)
	}
	if l.Mode != "dry-run" && l.Mode != "live" {
		return nil, fmt.Errorf("mode %q, want dry-run or live", l.Mode)
	}
	if l.LastFired == nil {
		l.LastFired = map[string]time.Time{}
	}
	if l.RuleFired == nil {
		l.RuleFired = map[string][]time.Time{}
	}
	if l.Triggered == nil {
		l.Triggered = map[string]time.Time{}
	}
	if l.Boots == nil {
		l.Boots = map[string][]string{}
	}
	return &l, nil
}

// Save writes the ledger atomically and durably: a temp file, fsync,
// rename, fsync of the directory, so that a power loss leaves the old
// ledger or the new one, never half of one.
func (l *Ledger) Save(dir string) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return statefile.WriteSync(dir, LedgerFile, append(b, '\n'))
}

// prune forgets what no window or cooldown can still need.
func (l *Ledger) prune(now time.Time, keep time.Duration) {
	cut := now.Add(-keep)
	for k, t := range l.LastFired {
		if t.Before(cut) {
			delete(l.LastFired, k)
		}
	}
	for k, t := range l.Triggered {
		if t.Before(cut) {
			delete(l.Triggered, k)
		}
	}
	for k, ts := range l.RuleFired {
		if ts = since(ts, cut); len(ts) == 0 {
			delete(l.RuleFired, k)
		} else {
			l.RuleFired[k] = ts
		}
	}
	l.HostFired = since(l.HostFired, cut)
}

func since(ts []time.Time, cut time.Time) []time.Time {
	i := 0
	for i < len(ts) && ts[i].Before(cut) {
		i++
	}
	return ts[i:]
}

// countSince is how many of ts are after cut.
func countSince(ts []time.Time, cut time.Time) int {
	n := 0
	for _, t := range ts {
		if t.After(cut) {
			n++
		}
	}
	return n
}
