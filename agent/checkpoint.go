package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/xid"
)

// checkpoint is the agent's counters as a source with a durable position
// saves them beside it (the kernel-log cursor), so that the position and
// what was counted up to it commit in one write: after a kill -9 the
// records past the position are applied again and counted once, and the
// counters go on from where they were instead of starting over.
type checkpoint struct {
	Version   int               `json:"version"`
	Xids      []XidCount        `json:"xids,omitempty"`
	Kinds     map[string]uint64 `json:"kinds,omitempty"`
	Events    []eventCount      `json:"events,omitempty"`
	Truncated uint64            `json:"truncated,omitempty"`
}

type eventCount struct {
	Kind     event.Kind  `json:"kind"`
	Severity event.Level `json:"severity"`
	Count    uint64      `json:"count"`
}

const checkpointVersion = 1

// maxCheckpointSeries bounds what a checkpoint may hold: more than the
// bounded series can ever be, so a larger one is not ours.
const maxCheckpointSeries = 20_000

// Checkpoint returns the counters as JSON.
func (s *State) Checkpoint() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := checkpoint{Version: checkpointVersion, Kinds: map[string]uint64{}, Truncated: s.truncated}
	for _, c := range s.xid {
		cp.Xids = append(cp.Xids, *c)
	}
	for k, v := range s.kinds {
		cp.Kinds[string(k)] = v
	}
	for k, v := range s.events {
		cp.Events = append(cp.Events, eventCount{Kind: k.Kind, Severity: k.Severity, Count: v})
	}
	b, _ := json.Marshal(cp) // plain data: cannot fail
	return b
}

// RestoreCheckpoint adds the counters of a checkpoint (made by Checkpoint
// before a restart) to the current ones, once a process: a source that
// runs again after a failure finds the counters already there.
func (s *State) RestoreCheckpoint(b []byte) error {
	var cp checkpoint
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cp); err != nil {
		return fmt.Errorf("counters checkpoint: %w", err)
	}
	if dec.More() {
		return errors.New("counters checkpoint: trailing data after the JSON object")
	}
	switch {
	case cp.Version != checkpointVersion:
		return fmt.Errorf("counters checkpoint: version %d, want %d", cp.Version, checkpointVersion)
	case len(cp.Xids)+len(cp.Kinds)+len(cp.Events) > maxCheckpointSeries:
		return errors.New("counters checkpoint: implausibly many series")
	}
	for _, c := range cp.Xids {
		// Only what count can make: a GPU's series, or the unknown bucket,
		// of a catalog code or "other".
		bad := c.GPU < -1 || len(c.PCIBusID) > 64 || len(c.UUID) > 128 ||
			(c.GPU == -1 && (c.PCIBusID != UnknownBus || c.UUID != "")) ||
			(c.Xid != OtherXid && !xid.Lookup(event.KindXid, c.Xid).Known)
		if bad {
			return fmt.Errorf("counters checkpoint: implausible series %+v", c)
		}
	}
	for k, v := range cp.Kinds {
		if len(k) > 64 {
			return fmt.Errorf("counters checkpoint: implausible kind count %q=%d", k, v)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.restoredCP {
		return nil
	}
	s.restoredCP = true
	for _, c := range cp.Xids {
		k := xidKey{gpu: c.GPU, bus: c.PCIBusID, xid: c.Xid}
		if have := s.xid[k]; have != nil {
			have.Count += c.Count
			continue
		}
		c := c
		s.xid[k] = &c
	}
	for k, v := range cp.Kinds {
		s.kinds[event.Kind(k)] += v
	}
	for _, e := range cp.Events {
		s.events[EventKey{e.Kind, e.Severity}] += e.Count
	}
	s.truncated += cp.Truncated
	s.publish()
	return nil
}
