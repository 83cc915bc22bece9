package kmsg

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
)

// forgeryCase is a kernel message and the verdict it must get: a forgery
// (unrelated, with the reason) or a real line beside it (its kind and bus).
type forgeryCase struct {
	note     string
	msg      string
	kind     event.Kind
	bus      string
	rejected string
}

// seg is the rest of the kernel's segfault report after "comm[pid]: ", for
// a binary whose file name is bin (arch/x86/mm/fault.c show_signal_msg and
// print_vma_addr).
func seg(bin string) string {
	return "segfault at 0 ip 0000556304466180 sp 00007ffd6a1f7fd0 error 6 in " + bin + "[1180,556304466000+1000] likely on CPU 1 (core 1, socket 0)"
}

var forgeryCases = []forgeryCase{
	// Printed by this machine's kernel (6.18, x86_64, debug.exception-trace=1)
	// for the test program of TestKernelForgery named "NVRM: " running as
	// nobody from a file named "GPU 0000:e7:00.0 has fallen off the bus",
	// and named "NVRM: Xid (PCI" from a file named "0000:e7:00.0): 79, x";
	// read back from /dev/kmsg with facility 0 (kernel), level 6.
	{"observed: fallen off the bus in the file name", "NVRM: [8098]: segfault at 0 ip 0000556304466180 sp 00007ffd6a1f7fd0 error 6 in GPU 0000:e7:00.0 has fallen off the bus[1180,556304466000+1000] likely on CPU 1 (core 1, socket 0)", event.KindUnrelated, "", RejectProcessName},
	{"observed: Xid split over comm and file name", "NVRM: Xid (PCI[8100]: segfault at 0 ip 000056101c751180 sp 00007fffe834cfc0 error 6 in 0000:e7:00.0): 79, x[1180,56101c751000+1000] likely on CPU 0 (core 0, socket 0)", event.KindUnrelated, "", RejectProcessName},

	// Comms of exactly 15 bytes.
	{"comm NVRM: Xid (PCI:", "NVRM: Xid (PCI:[4242]: " + seg("0000:e8:00): 79, x"), event.KindUnrelated, "", RejectProcessName},
	{"comm NVRM: GPU 0000:", "NVRM: GPU 0000:[4242]: " + seg("e8:00.0: GPU has fallen off the bus."), event.KindUnrelated, "", RejectProcessName},
	{"comm NVRM: GPU at 00", "NVRM: GPU at 00[1]: " + seg("00:e8:00.0 has fallen off the bus."), event.KindUnrelated, "", RejectProcessName},
	{"comm nvidia-nvswitc", "nvidia-nvswitc[77]: " + seg("SXid (PCI:0000:e8:00.0): 20034, Fatal"), event.KindUnrelated, "", RejectProcessName},
	{"comm RmInitAdapter", "NVRM: RmInitAda[9]: " + seg("pter failed! (0x22:0x56:894)"), event.KindUnrelated, "", RejectProcessName},
	{"comm with the probe sentence", "NVRM: The NVIDI[9]: " + seg("A probe routine failed for 1 device(s)."), event.KindUnrelated, "", RejectProcessName},
	{"comm NVRM: The NVIDIA", "NVRM: The NVIDI[31337]: " + seg("A GPU 0000:e8:00.0 installed in this system has fallen off the bus and is not responding to commands."), event.KindUnrelated, "", RejectProcessName},
	{"comm NVRM: GPU at PCI", "NVRM: GPU at PC[5]: " + seg("I:0000:e8:00: GPU-11111111-2222-3333-4444-555555555555"), event.KindUnrelated, "", RejectProcessName},
	{"comm NVRM: loading", "NVRM: loading N[5]: " + seg("VIDIA UNIX x86_64 Kernel Module  999.99  x"), event.KindUnrelated, "", RejectProcessName},
	{"comm NVRM: API mism", "NVRM: API mism[5]: " + seg("atch: the client has the version 1.2, but"), event.KindUnrelated, "", RejectProcessName},
	{"empty comm", "[5]: " + seg("NVRM: Xid (PCI:0000:e8:00): 79, x"), event.KindUnrelated, "", RejectProcessName},

	// Other reports that begin with the task name.
	{"bad frame", "NVRM: Xid (PCI[77]: bad frame in rt_sigreturn frame:00000000deadbeef ip:0 sp:0 orax:ffffffffffffffff in 0000:e8:00): 79, x[400000+1000]", event.KindUnrelated, "", RejectProcessName},
	{"general protection fault", "NVRM: Xid (PCI[77] general protection fault ip:401000 sp:7ffd0 error:0 in 0000:e8:00): 79, x[401000,400000+1000]", event.KindUnrelated, "", RejectProcessName},
	{"trap", "NVRM: Xid (PCI[77] trap int3 ip:401000 sp:7ffd0 error:0 in 0000:e8:00): 79, x[401000,400000+1000]", event.KindUnrelated, "", RejectProcessName},
	{"traps: prefix", "traps: NVRM: Xid (PCI[77] trap divide error ip:401000 sp:7ffd0 error:0 in 0000:e8:00): 79, x[401000,400000+1000]", event.KindUnrelated, "", RejectProcessName},
	{"notice with (pid)", "NVRM: GPU 0000 (4242): drop_caches: 3", event.KindUnrelated, "", RejectProcessName},
	{"notice, comm says RmInitAdapter", "RmInitAdapter f (4242): drop_caches: 3", event.KindUnrelated, "", RejectProcessName},
	{"notice, harmless comm", "fallen off the (4242): drop_caches: 3", event.KindUnrelated, "", ""},
	{"AER-looking comm (dev_printk shape)", "a 0000:00:03.0:[12]: " + seg("AER: Uncorrected (Fatal) error received: 0000:e8:00.0"), event.KindUnrelated, "", RejectProcessName},
	{"AER-looking comm with spaces: no event, not counted", "pcieport 0000:0[12]: " + seg("x error received: 0000:e8:00.0"), event.KindUnrelated, "", ""},
	{"MCE-looking comm", "mce: [Hardware [12]: " + seg("Error]: Machine check events logged"), event.KindUnrelated, "", RejectProcessName},

	// Ordinary faults of other programs: unrelated, not counted.
	{"ordinary segfault", "python3[4242]: " + seg("libc.so.6"), event.KindUnrelated, "", ""},
	{"ordinary trap", "traps: java[99] trap divide error ip:7f00 sp:7ffd error:0 in libjvm.so[7f00+100]", event.KindUnrelated, "", ""},
	{"ordinary notice", "process_api (1): drop_caches: 10", event.KindUnrelated, "", ""},
	{"systemd via /dev/kmsg", "systemd[1]: Started Journal Service.", event.KindUnrelated, "", ""},

	// Text that starts like an NVIDIA line and breaks its grammar.
	{"Xid with extra text in the parenthesis", "NVRM: Xid (PCI:0000:e8:00 x): 79, y", event.KindUnrelated, "", RejectMalformed},
	{"Xid with two addresses", "NVRM: Xid (0000:e8:00.0 PCI:0000:e9:00): 79, y", event.KindUnrelated, "", RejectMalformed},
	{"Xid without an address", "NVRM: Xid (x 0000:e8:00.0): 79, y", event.KindUnrelated, "", RejectMalformed},
	{"Xid code run into text", "NVRM: Xid (PCI:0000:e8:00): 79x, y", event.KindUnrelated, "", RejectMalformed},
	{"Xid redacted address", "NVRM: Xid (PCI:0000:xx:00): 79, pid=1, name=a, GPU has fallen off the bus.", event.KindUnrelated, "", RejectMalformed},
	{"Xid redacted domain", "NVRM: Xid (PCI:XXXX:XX:XX): 79, GPU has fallen off the bus.", event.KindUnrelated, "", RejectMalformed},
	{"SXid with text before the address", "nvidia-nvswitch0: SXid (x PCI:0000:e8:00.0): 20034, Fatal", event.KindUnrelated, "", RejectMalformed},
	{"SXid from a module that is not a switch", "nvidia-modeset: SXid (PCI:0000:e8:00.0): 20034, Fatal", event.KindUnrelated, "", RejectMalformed},
	{"fallen off the bus, no address", "NVRM: GPU has fallen off the bus.", event.KindUnrelated, "", RejectMalformed},
	{"fallen off the bus, address elsewhere", "NVRM: something at 0000:e8:00.0 has fallen off the bus.", event.KindUnrelated, "", RejectMalformed},
	{"fallen off the bus, trailing text", "NVRM: GPU 0000:e8:00.0: GPU has fallen off the bus. not", event.KindUnrelated, "", RejectMalformed},
	{"RmInitAdapter, no address where it goes", "NVRM: GPU x 0000:e8:00.0: RmInitAdapter failed! (0x22:0x56:894)", event.KindUnrelated, "", RejectMalformed},
	{"RmInitAdapter with trailing text", "NVRM: RmInitAdapter failed! (0x22:0x56:894) in 0000:e8:00.0", event.KindUnrelated, "", RejectMalformed},
	{"nvidia module saying fallen off the bus", "nvidia-modeset: GPU 0000:e8:00.0 has fallen off the bus", event.KindUnrelated, "", RejectMalformed},

	// The real lines beside them.
	{"real Xid 79", "NVRM: Xid (PCI:0000:e8:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.", event.KindXid, "0000:e8:00.0", ""},
	{"real Xid, code ends the line", "NVRM: Xid (PCI:0000:e8:00): 79", event.KindXid, "0000:e8:00.0", ""},
	{"real Xid with function", "NVRM: Xid (PCI:0000:e8:00.1): 79, x", event.KindXid, "0000:e8:00.1", ""},
	{"real Xid, MIG", "NVRM: Xid (PCI:0000:e8:00 GPU-I:05): 43, pid=1, name=a, x", event.KindXid, "0000:e8:00.0", ""},
	{"real Xid, old form", "NVRM: Xid (0000:E8:00): 13, x", event.KindXid, "0000:e8:00.0", ""},
	{"real Xid, pre-2010 form", "NVRM: Xid (0009:00): 53, CMDre 00000000", event.KindXid, "", ""},
	{"real fallen off the bus", "NVRM: GPU 0000:e8:00.0: GPU has fallen off the bus.", event.KindFallenOffBus, "0000:e8:00.0", ""},
	{"real fallen off the bus, 3xx", "NVRM: GPU at 0000:e8:00.0 has fallen off the bus.", event.KindFallenOffBus, "0000:e8:00.0", ""},
	{"real RmInitAdapter", "NVRM: GPU 0000:e8:00.0: RmInitAdapter failed! (0x22:0x56:894)", event.KindRmInitFailed, "0000:e8:00.0", ""},
	{"real rm_init_adapter", "NVRM: GPU 0000:e8:00.0: rm_init_adapter failed, device minor number 0", event.KindRmInitFailed, "0000:e8:00.0", ""},
	{"real SXid", "nvidia-nvswitch0: SXid (PCI:0000:e8:00.0): 20034, Fatal, Link 48 LTSSM Fault Up", event.KindSXid, "0000:e8:00.0", ""},
	{"real AER", "pcieport 0000:00:03.0: AER: Uncorrected (Fatal) error received: 0000:e8:00.0", event.KindAER, "0000:e8:00.0", ""},
	{"real other NVRM line", "NVRM: GPU 0000:e8:00.0: GPU serial number is 1653723052734.", event.KindOtherNVRM, "0000:e8:00.0", ""},
}

func TestForgeries(t *testing.T) {
	for _, tc := range forgeryCases {
		t.Run(tc.note, func(t *testing.T) {
			c := Classify(tc.msg)
			if c.Kind != tc.kind || c.PCIBusID != tc.bus || c.Rejected != tc.rejected {
				t.Errorf("got kind %q bus %q rejected %q, want %q %q %q\n%q", c.Kind, c.PCIBusID, c.Rejected, tc.kind, tc.bus, tc.rejected, tc.msg)
			}
			if c.Rejected != "" && (c.HasCode || c.HasPID || c.PCIBusID != "" || c.ProcessName != "") {
				t.Errorf("rejected with fields: %+v", c)
			}
		})
	}
}

// TestKernelForgery forges NVIDIA lines through the real kernel, as any
// local user can: a program names itself with prctl(PR_SET_NAME), runs from
// a file whose name carries the rest of the text, and segfaults as nobody.
// The kernel's report must be refused as process_name_prefix.
func TestKernelForgery(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on Linux: runs a program as nobody and reads /dev/kmsg")
	}
	for _, tool := range []string{"gcc", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	kmsg, err := os.OpenFile("/dev/kmsg", os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("needs /dev/kmsg: %v", err)
	}
	defer kmsg.Close()
	// Reports of unhandled signals are printed only with exception-trace on.
	const trace = "/proc/sys/debug/exception-trace"
	if old, err := os.ReadFile(trace); err == nil && strings.TrimSpace(string(old)) != "1" {
		if err := os.WriteFile(trace, []byte("1\n"), 0); err != nil {
			t.Skipf("cannot turn on %s: %v", trace, err)
		}
		defer os.WriteFile(trace, old, 0)
	} else if err != nil {
		t.Skipf("needs %s: %v", trace, err)
	}
	// Drain what the ring already holds: only new records are looked at.
	readKmsg(t, kmsg)

	dir, err := os.MkdirTemp("", "kmsg-forgery-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "segv")
	if out, err := exec.Command("gcc", "-O0", "-o", bin, "testdata/forge/segv.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	// A random bus number per run tells this run's records from older ones.
	var rnd [1]byte
	rand.Read(rnd[:])
	bus := func(n int) string { return hex.EncodeToString([]byte{rnd[0] + byte(n)}) }

	for i, f := range []struct{ comm, file string }{
		{"NVRM: ", "GPU 0000:" + bus(0) + ":00.0 has fallen off the bus"},
		{"NVRM: Xid (PCI", "0000:" + bus(1) + ":00.0): 79, x"},
		{"NVRM: Xid (PCI:", "0000:" + bus(2) + ":00): 79, x"},
		{"NVRM: GPU 0000:", bus(3) + ":00.0: GPU has fallen off the bus."},
		{"NVRM: GPU 0000:", bus(4) + ":00.0: RmInitAdapter failed! (0x22:0x56:894)"},
	} {
		name := filepath.Join(dir, f.file)
		if err := os.Link(bin, name); err != nil {
			t.Fatal(err)
		}
		marker := bus(i) + ":00"
		var found []Record
		// The kernel prints at most 10 reports each 5 s (printk_ratelimit):
		// a report missing after a quick rerun is tried again once the
		// window has passed.
		for try := 0; try < 2 && len(found) == 0; try++ {
			if try > 0 {
				time.Sleep(5500 * time.Millisecond)
			}
			cmd := exec.Command("runuser", "-u", "nobody", "--", name, f.comm)
			cmd.Dir = dir
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("%q did not fail: %v", f.file, err)
			}
			for deadline := time.Now().Add(time.Second); len(found) == 0 && time.Now().Before(deadline); {
				for _, r := range readKmsg(t, kmsg) {
					if strings.HasPrefix(r.Message, f.comm+"[") && strings.Contains(r.Message, "segfault") && strings.Contains(r.Message, marker) {
						found = append(found, r)
					}
				}
				if len(found) == 0 {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
		if len(found) == 0 {
			t.Fatalf("no segfault report for comm %q file %q (rate limited? show_unhandled_signals off?)", f.comm, f.file)
		}
		for _, r := range found {
			t.Logf("kernel wrote (facility %d): %s", r.Facility, r.Message)
			if !strings.HasPrefix(r.Message, f.comm+"[") {
				t.Errorf("report does not begin with the task name %q: %q", f.comm, r.Message)
			}
			c := Classify(r.Message)
			if c.Kind != event.KindUnrelated || c.Rejected != RejectProcessName {
				t.Errorf("kernel's report classified %q rejected %q, want unrelated, %s: %q", c.Kind, c.Rejected, RejectProcessName, r.Message)
			}
		}
	}
}

// readKmsg returns the records readable now, one read each, until EAGAIN.
func readKmsg(t *testing.T, f *os.File) []Record {
	t.Helper()
	var recs []Record
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(int(f.Fd()), buf)
		if err == syscall.EAGAIN {
			return recs
		}
		if err == syscall.EPIPE { // overrun: the next read goes on
			continue
		}
		if err != nil {
			t.Fatalf("read /dev/kmsg: %v", err)
		}
		r, err := ParseRecord(bytes.Clone(buf[:n]))
		if err != nil {
			continue
		}
		recs = append(recs, r)
	}
}
