package kmsg

import (
	"strconv"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// classifyCase is one line and what the classifier must say about it. pid
// and xid are "" when absent.
type classifyCase struct {
	note string // where the line's format comes from
	line string
	kind event.Kind
	bus  string
	xid  string
	pid  string
	name string
}

// Lines beyond testdata/kmsg-examples.tsv (which explain's tests check row by
// row): formats the examples lack, printed by the driver or kernel code named
// in each note, in the wrappers the tools named there produce.
var classifyCases = []classifyCase{
	// Driver 570+ prints the fallen-off-bus message as one printk of three
	// lines (open-gpu-kernel-modules, kernel-open/nvidia/nv.c, RmInitAdapter
	// path); dmesg indents the continuation lines.
	{"570+ fallen off bus, line 1 (dmesg)", "[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0", event.KindOtherNVRM, "0000:b3:00.0", "", "", ""},
	{"570+ fallen off bus, line 2 (dmesg continuation)", "               NVRM: (PCI ID: 10de:26b5) installed in this system has", event.KindOtherNVRM, "", "", "", ""},
	{"570+ fallen off bus, line 3 (dmesg continuation)", "               NVRM: fallen off the bus and is not responding to commands.", event.KindFallenOffBus, "", "", "", ""},
	{"570+ fallen off bus, as journald stores the one record", "Mar 03 10:01:02 gpu-node-4 kernel: NVRM: The NVIDIA GPU 0000:02:00.0\nNVRM: (PCI ID: 10de:2bb5) installed in this system has\nNVRM: fallen off the bus and is not responding to commands.", event.KindFallenOffBus, "0000:02:00.0", "", "", ""},
	{"fallen off bus, one-line rendering quoted in eGPU write-ups", "NVRM: The NVIDIA GPU 0000:05:00.0 installed in this system has fallen off the bus and is not responding to commands.", event.KindFallenOffBus, "0000:05:00.0", "", "", ""},
	{"fallen off bus, 3xx drivers (nv.c: GPU at %04x:%02x:%02x.%x has fallen off the bus)", "Jan 13 22:02:13 host kernel: NVRM: GPU at 0000:01:00.0 has fallen off the bus.", event.KindFallenOffBus, "0000:01:00.0", "", "", ""},
	{"fallen off bus, 4xx-5xx drivers", "[  318.201563] NVRM: GPU 0000:3B:00.0: GPU has fallen off the bus.", event.KindFallenOffBus, "0000:3b:00.0", "", "", ""},

	// Xid formats across generations.
	{"Xid with pid/name (R450+), raw /dev/kmsg record", "3,1234,1234567890,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.", event.KindXid, "0000:3b:00.0", "79", "1234", "python3"},
	{"raw record with the caller-id header field (CONFIG_PRINTK_CALLER)", "4,1235,1234567891,-,caller=T4242;NVRM: Xid (PCI:0000:3b:00): 48, pid=4242, name=pt_main_thread, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 3, subpartition 0.", event.KindXid, "0000:3b:00.0", "48", "4242", "pt_main_thread"},
	{"Xid from a MIG instance (GPU-I in the address)", "[ 5123.1] NVRM: Xid (PCI:0000:3b:00 GPU-I:05): 43, pid=2222, name=python, Ch 00000010", event.KindXid, "0000:3b:00.0", "43", "2222", "python"},
	{"Xid 154 recovery action (R565+)", "[ 777.000001] NVRM: Xid (PCI:0000:1b:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", event.KindXid, "0000:1b:00.0", "154", "", ""},
	{"Xid trailing text holds numbers that are not the code", "NVRM: Xid (PCI:0000:18:00): 94, pid=3311, name=python3, Contained: CE User Channel (0x9). RST: No, D-RST: No", event.KindXid, "0000:18:00.0", "94", "3311", "python3"},
	{"Xid with upper-case hex bus (older drivers)", "NVRM: Xid (PCI:0000:AF:00): 31, Ch 00000010, engmask 00000101", event.KindXid, "0000:af:00.0", "31", "", ""},
	{"Xid on a non-zero PCI domain (Hyper-V / VMD)", "NVRM: Xid (PCI:a1b2:00:00): 119, pid=99, name=nvidia-smi, Timeout waiting for RPC from GSP!", event.KindXid, "a1b2:00:00.0", "119", "99", "nvidia-smi"},
	{"pid 0 without name", "NVRM: Xid (PCI:0000:09:00): 79, pid=0, GPU has fallen off the bus.", event.KindXid, "0000:09:00.0", "79", "0", ""},

	// SXid from NVSwitch (Fabric Manager user guide's SXid examples).
	{"SXid non-fatal with link", "[1234567.1] nvidia-nvswitch3: SXid (PCI:0000:c6:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)", event.KindSXid, "0000:c6:00.0", "12028", "", ""},
	{"SXid fatal, journal wrapper", "Apr 02 11:22:33 dgx-a100-07 kernel: nvidia-nvswitch5: SXid (PCI:0000:e3:00.0): 20034, Fatal, Link 48 LTSSM Fault Up", event.KindSXid, "0000:e3:00.0", "20034", "", ""},

	// PCIe AER (drivers/pci/pcie/aer.c), old and new wording.
	{"AER uncorrected fatal, pre-6.7", "[ 1021.3] pcieport 0000:00:03.0: AER: Uncorrected (Fatal) error received: 0000:3b:00.0", event.KindAER, "0000:3b:00.0", "", "", ""},
	{"AER correctable, 6.7+ wording", "pcieport 0000:00:01.0: AER: Correctable error message received from 0000:01:00.0", event.KindAER, "0000:01:00.0", "", "", ""},
	{"AER from the GPU itself", "nvidia 0000:3b:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)", event.KindAER, "0000:3b:00.0", "", "", ""},
	{"AER detail line from the GPU", "nvidia 0000:3b:00.0:   device [10de:20b0] error status/mask=00004000/00000000", event.KindAER, "0000:3b:00.0", "", "", ""},
	{"AER status bit from the GPU", "nvidia 0000:3b:00.0:    [14] CmpltTO                (First)", event.KindAER, "0000:3b:00.0", "", "", ""},
	{"AER TLP header, 6.x", "nvidia 0000:3b:00.0: AER:   TLP Header: 4a000001 01000004 00000000 00000000", event.KindAER, "0000:3b:00.0", "", "", ""},
	{"AER from a NIC", "mlx5_core 0000:4b:00.0: AER: aer_status: 0x00000001, aer_mask: 0x00002000", event.KindAER, "0000:4b:00.0", "", "", ""},
	{"AER, 2.6 kernels' port-service device", "aer 0000:00:1c.0:pcie02: PCIe Bus Error: severity=Corrected, type=Physical Layer, id=00e0(Receiver ID)", event.KindAER, "0000:00:1c.0", "", "", ""},
	{"DPC containment (drivers/pci/pcie/dpc.c)", "pcieport 0000:00:03.1: DPC: containment event, status:0x1f01 source:0x0000", event.KindAER, "0000:00:03.1", "", "", ""},

	// Machine checks (arch/x86/kernel/cpu/mce).
	{"MCE events logged", "[ 3400.1] mce: [Hardware Error]: Machine check events logged", event.KindMCE, "", "", "", ""},
	{"MCE memory failure", "mce: Uncorrected hardware memory error in user-access at 1ee4e9e000", event.KindMCE, "", "", "", ""},

	// Driver banners and mismatches.
	{"aarch64 open module banner", "NVRM: loading NVIDIA UNIX Open Kernel Module for aarch64  570.133.20  Release Build  (dvs-builder@U16-I2-C03-12-4)  Wed Mar  5 08:34:33 UTC 2025", event.KindDriverLoaded, "", "", "", ""},
	{"/proc/driver/nvidia/version pasted", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.124.06  Wed Feb 26 19:41:04 UTC 2025", event.KindDriverLoaded, "", "", "", ""},
	{"probe routine failed", "[    5.1] NVRM: The NVIDIA probe routine failed for 1 device(s).", event.KindRmInitFailed, "", "", "", ""},

	// Other wrappers.
	{"journalctl -o short-iso", "2024-05-14T10:21:33+0000 gpu-node-7 kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, x", event.KindXid, "0000:3b:00.0", "13", "1", "a"},
	{"journalctl -o short-precise", "May 14 10:21:33.123456 gpu-node-7 kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, x", event.KindXid, "0000:3b:00.0", "13", "1", "a"},
	{"journalctl -o short-monotonic", "[ 1234.567890] gpu-node-7 kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, x", event.KindXid, "0000:3b:00.0", "13", "1", "a"},
	{"dmesg --decode", "kern  :err   : [ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, x", event.KindXid, "0000:3b:00.0", "13", "1", "a"},
	{"dmesg -x with -T", "kern  :warn  : [Tue May 14 10:21:33 2024] NVRM: GPU at PCI:0000:3b:00: GPU-11111111-2222-3333-4444-555555555555", event.KindGPUIdentity, "0000:3b:00.0", "", "", ""},
	{"dmesg -H", "[May14 10:21] NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the bus.", event.KindXid, "0000:3b:00.0", "79", "0", ""},
	{"dmesg -r", "<3>[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 62, pid='<unknown>', name=<unknown>, 0000ccfc", event.KindXid, "0000:3b:00.0", "62", "", ""},
	{"timestamp elided in a bug report", "[...] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.", event.KindXid, "0000:3b:00.0", "79", "1234", "python"},
	{"timestamp elided, padded", "[  ...  ] NVRM: Xid (PCI:0000:3b:00): 48, pid=7, name=b, An uncorrectable double bit error", event.KindXid, "0000:3b:00.0", "48", "7", "b"},
	{"timestamp elided as an ellipsis", "[…] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.", event.KindFallenOffBus, "0000:3b:00.0", "", "", ""},
	{"rsyslog RFC 3339 with CRLF", "2025-01-02T03:04:05.678901+01:00 node kernel: NVRM: Xid (PCI:0000:3b:00): 45, pid=7, name=b, Ch 00000008\r\n", event.KindXid, "0000:3b:00.0", "45", "7", "b"},

	// Near misses: NVIDIA named, not an NVIDIA kernel event.
	{"HDMI audio function of the GPU", "snd_hda_intel 0000:3b:00.1: Disabling MSI", event.KindUnrelated, "", "", "", ""},
	{"in-kernel nvidia-gpu i2c driver", "[ 2.1] nvidia-gpu 0000:3b:00.3: i2c timeout error e0000000", event.KindUnrelated, "", "", "", ""},
	{"stack frame in an nvidia module", "[ 99.1]  _nv012345rm+0x1d/0x30 [nvidia]", event.KindUnrelated, "", "", "", ""},
	{"fabric manager via syslog", "Jun 12 10:00:00 node nv-fabricmanager[2345]: Successfully configured all the available NVSwitches to route GPU NVLink traffic.", event.KindUnrelated, "", "", "", ""},
	{"persistenced quoting an Xid-like text via syslog", "Jun 12 10:00:00 node nvidia-persistenced[12]: NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=x, y", event.KindUnrelated, "", "", "", ""},
	{"APEI GHES record", "{1}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 0", event.KindUnrelated, "", "", "", ""},
	{"APEI GHES PCIe section", "[ 12.1] {1}[Hardware Error]: section_type: PCIe error", event.KindUnrelated, "", "", "", ""},
	{"EDAC", "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0 page:0x1c3d3 offset:0x0 grain:32 syndrome:0x0)", event.KindUnrelated, "", "", "", ""},
	{"mce thermal", "mce: CPU0: Core temperature above threshold, cpu clock throttled (total events = 1)", event.KindUnrelated, "", "", "", ""},
	{"ordinary device line", "[    1.5] xhci_hcd 0000:00:14.0: xHCI Host Controller", event.KindUnrelated, "", "", "", ""},
	{"dictionary line of a raw record", " SUBSYSTEM=pci", event.KindUnrelated, "", "", "", ""},
}

func TestClassifyRealFormats(t *testing.T) {
	for _, tc := range classifyCases {
		t.Run(tc.note, func(t *testing.T) {
			c := ClassifyLine(tc.line)
			check(t, tc, c)
		})
	}
}

func check(t *testing.T, tc classifyCase, c Class) {
	t.Helper()
	if c.Kind != tc.kind {
		t.Errorf("kind %q, want %q (line %q)", c.Kind, tc.kind, tc.line)
	}
	if c.PCIBusID != tc.bus {
		t.Errorf("pci_bus_id %q, want %q (line %q)", c.PCIBusID, tc.bus, tc.line)
	}
	if got := opt(c.HasCode, c.Code); got != tc.xid {
		t.Errorf("xid %q, want %q (line %q)", got, tc.xid, tc.line)
	}
	if got := opt(c.HasPID, c.PID); got != tc.pid {
		t.Errorf("pid %q, want %q (line %q)", got, tc.pid, tc.line)
	}
	if c.ProcessName != tc.name {
		t.Errorf("process_name %q, want %q (line %q)", c.ProcessName, tc.name, tc.line)
	}
}

func opt(ok bool, v int) string {
	if !ok {
		return ""
	}
	return strconv.Itoa(v)
}

func TestSXidSwitchAndLink(t *testing.T) {
	c := ClassifyLine("nvidia-nvswitch3: SXid (PCI:0000:c6:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)")
	if c.Switch != "nvidia-nvswitch3" || !c.HasLink || c.Link != 32 || c.Severity != "non-fatal" {
		t.Errorf("switch %q link %d (%v) severity %q; want nvidia-nvswitch3, 32, non-fatal", c.Switch, c.Link, c.HasLink, c.Severity)
	}
	c = ClassifyLine("nvidia-nvswitch2: SXid (PCI:0000:07:00.0): 20034, Severity 1 Engine instance 60 Sub-engine instance 00")
	if c.HasLink {
		t.Errorf("an engine instance is not a link: got link %d", c.Link)
	}
}

func TestAERSeverityFromWording(t *testing.T) {
	for line, want := range map[string]string{
		"pcieport 0000:00:03.0: AER: Uncorrected (Fatal) error received: 0000:3b:00.0":                   "fatal",
		"pcieport 0000:00:01.0: AER: Uncorrectable (Non-Fatal) error message received from 0000:01:00.0": "uncorrected",
		"pcieport 0000:00:01.0: AER: Correctable error message received from 0000:01:00.0":               "corrected",
		"pcieport 0000:00:03.0: AER: Corrected error received: 0000:00:03.0":                             "corrected",
		"pcieport 0000:00:03.0:   device [8086:6f08] error status/mask=00001000/00002000":                "",
	} {
		if got := ClassifyLine(line).Severity; got != want {
			t.Errorf("%q: severity %q, want %q", line, got, want)
		}
	}
}

func TestDriverAndMismatchVersions(t *testing.T) {
	c := ClassifyLine("[    9.1] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.05  Release Build  (dvs-builder@U16-I3-D10-2-2)  Tue Oct  8 03:12:01 UTC 2024")
	if c.DriverVersion != "550.127.05" {
		t.Errorf("driver version %q, want 550.127.05", c.DriverVersion)
	}
	c = Classify("NVRM: API mismatch: the client has the version 555.58.02, but\nNVRM: this kernel module has the version 560.35.03.  Please\nNVRM: make sure that this kernel module and all NVIDIA driver\nNVRM: components have the same version.")
	if c.Kind != event.KindAPIMismatch || c.ClientVersion != "555.58.02" || c.DriverVersion != "560.35.03" {
		t.Errorf("api mismatch: %+v; want client 555.58.02, module 560.35.03", c)
	}
}

// TestXidCodeNeverFromTrailingText: the code is the number after "): " even
// when that is not a plain number and the text is full of numbers; an Xid
// line without one is malformed.
func TestXidCodeNeverFromTrailingText(t *testing.T) {
	c := ClassifyLine("NVRM: Xid (PCI:0000:3b:00): ab, pid=12, name=x, 79 13 48")
	if c.HasCode || c.Kind != event.KindUnrelated || c.Rejected != RejectMalformed {
		t.Errorf("got kind %q code %d (%v) rejected %q; want unrelated, malformed, without a code", c.Kind, c.Code, c.HasCode, c.Rejected)
	}
	c = ClassifyLine("NVRM: Xid (PCI:0000:3b:00): 13, Graphics Exception on (GPC 4, TPC 79): pid=5, name=evil")
	if c.Code != 13 || c.HasPID || c.ProcessName != "" {
		t.Errorf("got code %d pid %v name %q; want 13 and no pid/name from the free text", c.Code, c.HasPID, c.ProcessName)
	}
}

func TestHostileProcessNamesKeptVerbatim(t *testing.T) {
	junk := strings.Repeat("A", 10<<10)
	for _, name := range []string{"$(reboot)", "; rm -rf /", "\x1b[31mred\x1b[0m", "a\nb", junk, "`id`", "x\u202eevil"} {
		line := "NVRM: Xid (PCI:0000:3b:00): 13, pid=77, name=" + name + ", Graphics Exception"
		c := Classify(line)
		if c.ProcessName != name {
			t.Errorf("name %q came back as %q", trunc(name), trunc(c.ProcessName))
		}
	}
	// The kernel escapes a newline in a record as \x0a; the raw record
	// wrapper decodes it.
	c := ClassifyLine(`3,9,9,-;NVRM: Xid (PCI:0000:3b:00): 13, pid=77, name=a\x0ab, Graphics Exception`)
	if c.ProcessName != "a\nb" {
		t.Errorf("escaped name decoded to %q, want %q", c.ProcessName, "a\nb")
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func TestLabelValue(t *testing.T) {
	for in, want := range map[string]string{
		"0000:3b:00.0":          "0000:3b:00.0",
		"a\x1b[31mb":            "a?[31mb",
		"bad\xffutf8":           "bad?utf8",
		strings.Repeat("x", 70): strings.Repeat("x", 61) + "…",
	} {
		got := LabelValue(in)
		if got != want {
			t.Errorf("LabelValue(%q) = %q, want %q", trunc(in), got, want)
		}
	}
	long := LabelValue(strings.Repeat("é", 1000))
	if len(long) > MaxLabelBytes || !strings.HasSuffix(long, "…") {
		t.Errorf("long label %q: %d bytes", long, len(long))
	}
}
