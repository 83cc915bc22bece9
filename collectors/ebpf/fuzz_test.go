package ebpf

import "testing"

// Whatever the ring buffer holds, decoding it never panics, and a record
// that decodes makes an event.
func FuzzDecode(f *testing.F) {
	f.Add(Record{Kind: kindOOM, PID: 1, Comm: "sh", Name: "job"}.Encode())
	f.Add(Record{Kind: kindAER, Name: "0000:3b:00.0", Severity: 2}.Encode())
	f.Add(Record{Kind: kindModuleFree, Name: "nvidia"}.Encode())
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		// A trace's copy (little-endian) takes the same decoder, and what
		// it decodes survives being written back into a trace.
		if r, err := DecodeTrace(b); err == nil {
			if back, err := DecodeTrace(r.EncodeTrace()); err != nil || back.Kind != r.Kind || back.PID != r.PID || back.CgroupID != r.CgroupID {
				t.Fatalf("record %+v written to a trace reads back as %+v, %v", r, back, err)
			}
		}
		r, err := Decode(b)
		if err != nil {
			return
		}
		if ev := r.Event(Meta{}); ev.Kind == "" {
			t.Fatalf("record %+v made an event without a kind", r)
		}
	})
}
