package ebpf

import "time"

// aerWindow is how close two reports of one AER must be to be one error.
// The AER driver prints its kernel-log lines and fires ras/aer_event from
// one call (aer_print_error), microseconds apart; a device in an error storm
// reports the same status many times a second.
const aerWindow = time.Second

// maxAERKeys bounds the cache: a storm across many devices evicts the
// oldest keys instead of growing.
const maxAERKeys = 256

// aerKey is what makes two AER reports the same error: the device, the
// status register and the severity.
type aerKey struct {
	dev    string
	status uint32
	sev    uint8
}

// aerDedup passes the first report of a key in each window and counts the
// rest. It is the source's own de-duplication: the tracepoint fires once
// per decoded error, and a repeat within the window is not news.
//
// The kernel-log copy of the same error (the kmsg source's aer events, one
// per printed line) is another source's event; joining the two is the
// agent's to do, as it does for Xids from the kernel log and NVML: key
// (bus id, aer_severity), window aerWindow, the later of the two from the
// other source dropped. The kernel log carries no status field, so the
// join key has none.
type aerDedup struct {
	last       map[aerKey]time.Time
	suppressed uint64
}

// fresh reports whether the report of k at t is the first in its window,
// and remembers it.
func (d *aerDedup) fresh(k aerKey, t time.Time) bool {
	if d.last == nil {
		d.last = make(map[aerKey]time.Time)
	}
	if at, ok := d.last[k]; ok && t.Sub(at) < aerWindow && at.Sub(t) < aerWindow {
		d.suppressed++
		return false
	}
	if len(d.last) >= maxAERKeys {
		d.evict(t)
	}
	d.last[k] = t
	return true
}

// evict drops the expired keys, or the oldest one when none has expired.
func (d *aerDedup) evict(t time.Time) {
	var oldest aerKey
	var oldestAt time.Time
	for k, at := range d.last {
		if t.Sub(at) >= aerWindow {
			delete(d.last, k)
			continue
		}
		if oldestAt.IsZero() || at.Before(oldestAt) {
			oldest, oldestAt = k, at
		}
	}
	if len(d.last) >= maxAERKeys {
		delete(d.last, oldest)
	}
}
