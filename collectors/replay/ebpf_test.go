package replay

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
)

// ebpfLine is a trace line holding r, as a recorder writes it.
func ebpfLine(t float64, layout int, raw []byte, memcg string) string {
	m := ""
	if memcg != "" {
		m = fmt.Sprintf(`,"memcg":%q`, memcg)
	}
	return fmt.Sprintf(`{"t":%g,"ebpf":{"layout":%d,"raw":"%s"%s}}`, t, layout, base64.StdEncoding.EncodeToString(raw), m)
}

// An eBPF record this gpuwarden would misread is refused on read, naming
// the line: another layout, another size, a kind the decoder does not know,
// an oversized memcg, or a GPU it cannot have.
func TestTraceRefusesEBPFRecordsItWouldMisread(t *testing.T) {
	good := ebpf.Record{Kind: ebpf.RecordModuleLoad, Name: "nvidia"}.EncodeTrace()
	cases := []struct{ name, line, want string }{
		{"another layout", ebpfLine(1, ebpf.Layout+1, good, ""), fmt.Sprintf("ebpf record of layout %d (this gpuwarden reads layout %d)", ebpf.Layout+1, ebpf.Layout)},
		{"short", ebpfLine(1, ebpf.Layout, good[:100], ""), fmt.Sprintf("ebpf record of 100 bytes, want %d", ebpf.RecordSize)},
		{"long", ebpfLine(1, ebpf.Layout, append(bytes.Clone(good), 0), ""), fmt.Sprintf("ebpf record of %d bytes", ebpf.RecordSize+1)},
		{"unknown kind", ebpfLine(1, ebpf.Layout, ebpf.Record{Kind: 9}.EncodeTrace(), ""), "ebpf record of unknown kind 9"},
		{"memcg too long", ebpfLine(1, ebpf.Layout, good, "/"+strings.Repeat("a", MaxMemcgBytes)), "memcg of 4097 bytes"},
		{"with a gpu", strings.Replace(ebpfLine(1, ebpf.Layout, good, ""), `"ebpf"`, `"gpu":0,"ebpf"`, 1), "field ebpf takes no gpu"},
		{"not base64", `{"t":1,"ebpf":{"layout":1,"raw":"%%%"}}`, "x:2:"},
		{"ebpf and kmsg", strings.Replace(ebpfLine(1, ebpf.Layout, good, ""), `"ebpf"`, `"kmsg":"x","ebpf"`, 1), "exactly one of nvml, kmsg, hang_s, ebpf or host"},
		{"unknown field", `{"t":1,"ebpf":{"layout":1,"raw":"","order":"be"}}`, `unknown field "order"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(goodHeader+"\n"+c.line+"\n"), "x")
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "x:2:") {
				t.Fatalf("err = %v, want line 2 and %q", err, c.want)
			}
		})
	}
	if _, err := Read(strings.NewReader(goodHeader+"\n"+ebpfLine(1, ebpf.Layout, good, "")+"\n"), "x"); err != nil {
		t.Fatalf("a good record: %v", err)
	}
}

// A scenario's ebpf entry that no kernel record could hold is refused with
// its index.
func TestScenarioRefusesImpossibleEBPFEntries(t *testing.T) {
	base := "duration: 10\ninterval: 1\nload: {default: [[0, 1]]}\nebpf:\n  - "
	cases := map[string]string{
		"{at: 1, kind: oom, pid: 1, comm: a-comm-of-sixteen, memcg: /x}": "ebpf[0]: oom",
		"{at: 1, kind: oom, pid: 0, comm: sh, memcg: /x}":                "ebpf[0]: oom",
		"{at: 1, kind: oom, pid: 1, comm: sh, memcg: x}":                 "ebpf[0]: oom",
		"{at: 1, kind: aer, gpu: 8, severity: corrected}":                "ebpf[0]: aer: gpu 8",
		"{at: 1, kind: aer, gpu: 1, severity: bad}":                      `ebpf[0]: aer: severity "bad"`,
		"{at: 1, kind: module_load}":                                     "ebpf[0]: module_load",
		"{at: 1, kind: kprobe}":                                          `ebpf[0]: kind "kprobe"`,
		"{at: 1, kind: oom, pid: 1, comm: sh, memcg: /x, colour: red}":   "field colour not found",
	}
	for entry, want := range cases {
		p := filepath.Join(t.TempDir(), "s.yaml")
		os.WriteFile(p, []byte(base+entry+"\n"), 0o644)
		if _, err := LoadScenario(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", entry, err, want)
		}
	}
}
