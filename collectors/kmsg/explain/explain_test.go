package explain

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg"
)

const xidMsg = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus."

// The same driver message in every wrapper explain accepts; each must give
// the same verdict.
var wrapped = map[string]string{
	"raw /dev/kmsg record":        "3,1234,1234567890,-;" + xidMsg,
	"dmesg":                       "[ 1234.567890] " + xidMsg,
	"dmesg -T":                    "[Tue May 14 10:21:33 2024] " + xidMsg,
	"dmesg -H":                    "[May14 10:21] " + xidMsg,
	"dmesg -H relative":           "[  +0.000316] " + xidMsg,
	"dmesg --decode":              "kern  :err   : [ 1234.567890] " + xidMsg,
	"dmesg -r":                    "<3>[ 1234.567890] " + xidMsg,
	"kern.log classic":            "May 14 10:21:33 gpu-node-7 kernel: [ 1234.567890] " + xidMsg,
	"syslog RFC 3339":             "2024-05-14T10:21:33.123456+00:00 gpu-node-7 kernel: " + xidMsg,
	"journalctl -k":               "May 14 10:21:33 gpu-node-7 kernel: " + xidMsg,
	"journalctl -k -o short-iso":  "2024-05-14T10:21:33+0000 gpu-node-7 kernel: " + xidMsg,
	"journalctl -k --no-hostname": "May 14 10:21:33 kernel: " + xidMsg,
	"talosctl dmesg":              "10.0.0.7: kern:     err: [2024-05-14T10:21:33.458998481Z]: " + xidMsg,
	"grep over kern.log":          "/var/log/kern.log:May 14 10:21:33 gpu-node-7 kernel: " + xidMsg,
}

func TestEveryWrapperGivesTheSameVerdict(t *testing.T) {
	for name, line := range wrapped {
		got := ClassifyLine(1, line)
		if got.Kind != event.KindXid || got.PCIBusID != "0000:3b:00.0" || got.Xid == nil || *got.Xid != 79 ||
			got.PID == nil || *got.PID != 1234 || got.ProcessName != "python3" {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// bugReport is shaped like nvidia-bug-report.log: a header, command
// sections, and dmesg/journal output among other text.
const bugReport = `____________________________________________

Start of NVIDIA bug report log file.  Please include this file, along
with a detailed description of your problem, when reporting a graphics
driver bug via the NVIDIA Linux forum (see forums.developer.nvidia.com)
or by sending email to 'linux-bugs@nvidia.com'.

nvidia-bug-report.sh Version: 35389007

Date: Tue May 14 10:30:00 UTC 2024
____________________________________________

/sbin/lspci -nn | grep -i nvidia

3b:00.0 3D controller [0302]: NVIDIA Corporation GA100 [A100 SXM4 80GB] [10de:20b2] (rev a1)
____________________________________________

dmesg:

[    9.125785] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024
[ 1234.567880] NVRM: GPU at PCI:0000:3b:00: GPU-b6c3b2be-c55b-d076-fa0e-d464e4c7e08b
[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 48, pid=4242, name=pt_main_thread, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 3, subpartition 0.
[ 1234.567900] NVRM: Xid (PCI:0000:3b:00): 63, pid=4242, name=pt_main_thread, Row Remapper: New row (0x0000000000abcd00) is marked for remapping, reset gpu to activate.
____________________________________________

/usr/bin/journalctl -b -0 -k:

May 14 10:21:33 gpu-node-7 kernel: NVRM: Xid (PCI:0000:3b:00): 48, pid=4242, name=pt_main_thread, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 3, subpartition 0.
____________________________________________
`

func TestGzippedBugReport(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(bugReport))
	zw.Close()
	// The name says nothing: gzip is recognized by its magic bytes.
	in, err := Open(writeFile(t, "report.log", z.Bytes()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	evs, n, err := Events(in)
	if err != nil {
		t.Fatal(err)
	}
	if n != strings.Count(bugReport, "\n") {
		t.Errorf("read %d lines, want %d", n, strings.Count(bugReport, "\n"))
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, string(ev.Kind)+":"+ev.Fields[FieldLine])
	}
	want := "driver_loaded:20 gpu_identity:21 xid:22 xid:23 xid:28"
	if strings.Join(kinds, " ") != want {
		t.Errorf("events %v, want %s", kinds, want)
	}
	var out bytes.Buffer
	if err := WriteReport(&out, evs, n); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	for _, s := range []string{
		"GPU 0000:3b:00.0 (GPU-b6c3b2be-c55b-d076-fa0e-d464e4c7e08b): critical",
		"=> what to do now: drain and reset",
		"Xid 48 ROBUST_CHANNEL_GPU_ECC_DBE [critical], 2 times (line 22, 28)",
		"what happened: [ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 48",
		"what it means: Uncorrectable (double-bit) ECC error",
		"what to do:    drain and reset",
		"processes:     pt_main_thread (pid 4242)",
		"Xid 63 INFOROM_DRAM_RETIREMENT_EVENT [warning], once (line 23)",
		"NVIDIA driver loaded: 535.183.01",
		"Overall: critical",
	} {
		if !strings.Contains(report, s) {
			t.Errorf("report lacks %q:\n%s", s, report)
		}
	}
}

func TestPlainInputFromStdin(t *testing.T) {
	in, err := Open("-", strings.NewReader(wrapped["dmesg"]+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	evs, _, err := Events(in)
	if err != nil || len(evs) != 1 || evs[0].Code != 79 || evs[0].Action != "reboot" {
		t.Fatalf("%v %+v", err, evs)
	}
}

func TestFallenOffBusMultiLineJoinedForEvents(t *testing.T) {
	text := "[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0\n" +
		"               NVRM: (PCI ID: 10de:26b5) installed in this system has\n" +
		"               NVRM: fallen off the bus and is not responding to commands.\n"
	// --lines: each line on its own.
	var out bytes.Buffer
	if err := Lines(strings.NewReader(text), &out); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r LineResult
		json.Unmarshal([]byte(l), &r)
		kinds = append(kinds, string(r.Kind)+"@"+r.PCIBusID)
	}
	if got := strings.Join(kinds, " "); got != "other_nvrm@0000:b3:00.0 other_nvrm@ fallen_off_bus@" {
		t.Errorf("--lines: %s", got)
	}
	// Events: the fallen_off_bus event carries the GPU named two lines up.
	evs, _, _ := Events(strings.NewReader(text))
	last := evs[len(evs)-1]
	if last.Kind != event.KindFallenOffBus || last.GPU.PCIBusID != "0000:b3:00.0" || last.Severity != event.Critical {
		t.Errorf("event %+v", last)
	}
}

var hostileNames = []string{"$(reboot)", "; rm -rf /", "\x1b[31mred\x1b]0;pwned\x07", "a\u202eb", strings.Repeat("J", 10<<10)}

func TestHostileTextIsDataInJSONAndEscapedForTerminals(t *testing.T) {
	var in strings.Builder
	for _, name := range hostileNames {
		in.WriteString("[ 1.0] NVRM: Xid (PCI:0000:3b:00): 13, pid=7, name=" + name + ", Graphics Exception\n")
	}
	// --lines keeps the names verbatim.
	var out bytes.Buffer
	if err := Lines(strings.NewReader(in.String()), &out); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&out)
	for _, name := range hostileNames {
		var r LineResult
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		if r.ProcessName != name {
			t.Errorf("--lines name %.40q, want %.40q", r.ProcessName, name)
		}
	}
	// So does --output json.
	evs, _, _ := Events(strings.NewReader(in.String()))
	out.Reset()
	if err := WriteJSON(&out, evs); err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(out.Bytes(), 0x1b) >= 0 {
		t.Error("raw ESC in JSON output; JSON must escape it")
	}
	dec = json.NewDecoder(&out)
	for _, name := range hostileNames {
		var ev event.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		if ev.Fields["process_name"] != name {
			t.Errorf("json name %.40q, want %.40q", ev.Fields["process_name"], name)
		}
	}
	// The human report carries no control or bidi characters.
	out.Reset()
	if err := WriteReport(&out, evs, len(hostileNames)); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	for _, bad := range []string{"\x1b", "\x07", "\u202e"} {
		if strings.Contains(report, bad) {
			t.Errorf("report contains %q", bad)
		}
	}
	if !strings.Contains(report, `\x1b[31mred`) || !strings.Contains(report, "$(reboot) (pid 7)") {
		t.Errorf("report does not show the names escaped:\n%.2000s", report)
	}
	if len(report) > 8<<10 {
		t.Errorf("report is %d bytes: long text must be cut", len(report))
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain":       "plain",
		"a\x1b[0mb":   `a\x1b[0mb`,
		"new\nline":   `new\x0aline`,
		"bad\xff":     `bad\xff`,
		"r\u202eev":   `r\u{202e}ev`,
		"café 4月":     "café 4月",
		"c1\u0085end": `c1\u{0085}end`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestVeryLongLinesAreBounded(t *testing.T) {
	long := "NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=x, " + strings.Repeat("z", 3*MaxLineBytes)
	var out bytes.Buffer
	if err := Lines(strings.NewReader(long+"\nNVRM: Xid (PCI:0000:3b:00): 31, x\n"), &out); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "\n"); got != 2 {
		t.Fatalf("%d output lines, want 2", got)
	}
	if !strings.Contains(out.String(), `{"line":2,"kind":"xid","pci_bus_id":"0000:3b:00.0","xid":31`) {
		t.Errorf("second line lost after a long one: %.300s", out.String())
	}
}

func TestRegisteredClassifierRunsFirstWithStandardKeys(t *testing.T) {
	Register("test-dkms", func(line string) (map[string]any, bool) {
		if !strings.HasPrefix(line, "nvidia/535.183.01") {
			return nil, false
		}
		return map[string]any{"kind": "dkms_status", "module_version": "535.183.01"}, true
	})
	defer func() {
		registryMu.Lock()
		registry = registry[:len(registry)-1]
		registryMu.Unlock()
	}()
	var out bytes.Buffer
	in := "nvidia/535.183.01, 6.8.0-45-generic, x86_64: installed\n" + wrapped["dmesg"] + "\n"
	if err := Lines(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want0 := `{"kind":"dkms_status","line":1,"module_version":"535.183.01","pci_bus_id":"","pid":null,"process_name":"","xid":null}`
	if lines[0] != want0 {
		t.Errorf("line 1: %s\nwant    %s", lines[0], want0)
	}
	if !strings.HasPrefix(lines[1], `{"line":2,"kind":"xid"`) {
		t.Errorf("line 2 fell through wrongly: %s", lines[1])
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a name twice must panic")
		}
	}()
	Register("test-dkms", nil)
}

// TestLenientRedactedXid: a pasted Xid with a redacted address is still an
// Xid in explain, without a bus id, and says it was accepted leniently; the
// agent's classifier refuses it.
func TestLenientRedactedXid(t *testing.T) {
	for _, line := range []string{
		"[ 12.3] NVRM: Xid (PCI:0000:xx:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
		"NVRM: Xid (PCI:XXXX:XX:XX): 79, pid=12, name=python3, GPU has fallen off the bus.",
	} {
		if c := kmsg.ClassifyLine(line); c.Kind != event.KindUnrelated || c.Rejected != kmsg.RejectMalformed {
			t.Errorf("strict: %q %q, want unrelated, malformed", c.Kind, c.Rejected)
		}
		r := ClassifyLine(1, line)
		if r.Kind != event.KindXid || r.PCIBusID != "" || r.Xid == nil || *r.Xid != 79 || !r.Lenient {
			t.Errorf("explain: %+v, want a lenient Xid 79 without a bus id", r)
		}
		evs, _, err := Events(strings.NewReader(line + "\n"))
		if err != nil || len(evs) != 1 || evs[0].Fields[FieldLenient] != "true" {
			t.Fatalf("events: %v %+v", err, evs)
		}
		var b strings.Builder
		if err := WriteReport(&b, evs, 1); err != nil || !strings.Contains(b.String(), "accepted leniently") {
			t.Errorf("report does not say the line was accepted leniently: %v\n%s", err, b.String())
		}
	}
	// A real address is never lenient, and a forged one stays refused.
	if r := ClassifyLine(1, "NVRM: Xid (PCI:0000:3b:00): 79, x"); r.Lenient || r.PCIBusID != "0000:3b:00.0" {
		t.Errorf("real Xid: %+v", r)
	}
	if r := ClassifyLine(1, "NVRM: Xid (PCI[12]: segfault at 0 ip 0 sp 0 error 6 in 0000:xx:00): 79, x[1+1000]"); r.Kind != event.KindUnrelated || r.Lenient {
		t.Errorf("forged Xid: %+v", r)
	}
}

// An event the agent has named owners in (the jobs and pods on the GPU, or
// an OOM victim's job) says whose work it hit, each owner once, escaped.
func TestAReportNamesWhoseWorkAnEventHit(t *testing.T) {
	xid := func(owners string) event.Event {
		return event.Event{Kind: event.KindXid, Code: 79, GPU: event.GPURef{PCIBusID: "0000:18:00.0"}, Severity: event.Critical,
			Raw: "NVRM: Xid (PCI:0000:18:00): 79", Fields: map[string]string{FieldLine: "1", "owners": owners}}
	}
	evs := []event.Event{
		xid("slurm job 4242.0 (demo); pod 6b1c container 3f2a"),
		xid("slurm job 4242.0 (demo)"),
		xid("slurm job 99 (\x1b[2Jmallory)"),
		{Kind: event.KindOOMKill, GPU: event.GPURef{Index: -1}, Severity: event.Warning, Raw: `oom/mark_victim pid=31337 comm="python3"`,
			Fields: map[string]string{"pid": "31337", "process_name": "python3", "owners": "slurm job 4242.0 (demo)"}},
	}
	var b strings.Builder
	if err := WriteReport(&b, evs, 4); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "    owners:        slurm job 4242.0 (demo); pod 6b1c container 3f2a; slurm job 99 (\\x1b[2Jmallory)\n") {
		t.Errorf("the Xid's owners are not listed once each, escaped:\n%s", out)
	}
	if strings.Count(out, "owners:") != 2 || strings.ContainsRune(out, 0x1b) {
		t.Errorf("want an owners line for the Xid and one for the OOM kill, nothing raw:\n%s", out)
	}
	if !strings.Contains(out, "Host (lines that name no device)") || !strings.Contains(out[strings.Index(out, "Host ("):], "owners:        slurm job 4242.0 (demo)") {
		t.Errorf("the OOM kill does not name its job:\n%s", out)
	}
}

// A report of an agent's events says where they came from, lists the GPU an
// event located as a GPU, keeps the driver checks' findings apart, and
// shows no line numbers the events do not have.
func TestAReportOfAnAgentsEvents(t *testing.T) {
	finding := func(check string, lvl event.Level) event.Event {
		return event.Event{Kind: "finding", Mnemonic: check, GPU: event.GPURef{Index: -1}, Severity: lvl, Raw: check}
	}
	evs := []event.Event{
		{Kind: event.KindAER, GPU: event.GPURef{Index: 2, PCIBusID: "0000:3a:00.0", UUID: "GPU-2"}, Severity: event.Warning, Raw: "ras/aer_event"},
		finding("driver_library_mismatch", event.Critical),
		finding("reboot_pending", event.Warning),
	}
	r := NewReport()
	r.From("the agent at http://h:9400")
	for _, ev := range evs {
		r.Add(ev)
	}
	var b strings.Builder
	if err := r.Write(&b, 0, nil); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"gpuwarden explain: 3 events from the agent at http://h:9400, 1 devices named.", "\nGPU 0000:3a:00.0 (GPU-2): warning",
		"  - driver_library_mismatch [critical], once\n", "  - reboot_pending [warning], once\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "line") || !strings.Contains(out, "\nHost (events that name no device): critical") {
		t.Errorf("line numbers the events do not have:\n%s", out)
	}
}
