package main

import (
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
)

// kernelEvent turns one raw /dev/kmsg record into an event, or reports false
// for a record that is not about NVIDIA hardware (or does not parse).
func kernelEvent(raw, source, bootID string, bootTime time.Time) (event.Event, bool) {
	rec, err := kmsg.ParseRecord([]byte(raw))
	if err != nil {
		return event.Event{}, false
	}
	return recordEvent(rec, source, bootID, bootTime)
}

func recordEvent(rec kmsg.Record, source, bootID string, bootTime time.Time) (event.Event, bool) {
	ev := kmsg.RecordEvent(rec, bootID, bootTime)
	if ev.Kind == event.KindUnrelated {
		return ev, false
	}
	ev.Source = source
	return ev, true
}
