package explain

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// The report prints text from pasted logs: any input gives a report
// without a control character a terminal would act on.
func FuzzExplainReport(f *testing.F) {
	f.Add([]byte("NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=\x1b[2Jx, GPU has fallen off the bus.\n"))
	f.Add([]byte("[  1.0] NVRM: GPU at PCI:0000:3b:00: GPU-1\nkernel: pcieport 0000:00:01.0: AER: Uncorrected (Fatal) error received\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReport()
		n, err := Each(bytes.NewReader(in), func(ev event.Event) error { r.Add(ev); return nil })
		var out strings.Builder
		if werr := r.Write(&out, n, err); werr != nil {
			t.Fatal(werr)
		}
		for _, c := range out.String() {
			if (c < 0x20 && c != '\n') || c == 0x7f || (c >= 0x80 && c < 0xa0) {
				t.Fatalf("report holds control character %U:\n%q", c, out.String())
			}
		}
	})
}
