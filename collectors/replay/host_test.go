package replay

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
	"github.com/gpuwarden/gpuwarden/dkms"
)

const goodHost = `{"t":0,"host":{"version":1,"kernel":"6.1.0-18-amd64","next_boot":{"kernel":"6.1.0-20-amd64","source":"grubenv saved_entry"},` +
	`"kernels":[{"release":"6.1.0-18-amd64","headers":true,"nvidia_modules":[{"path":"/lib/modules/6.1.0-18-amd64/updates/dkms/nvidia.ko","origin":"dkms","version":"535.104.05","signature":"signed"}]},{"release":"6.1.0-20-amd64","headers":false}],` +
	`"dkms":[{"module":"nvidia","version":"535.104.05","kernel":"6.1.0-18-amd64","arch":"x86_64","state":"installed"}],` +
	`"module":{"version":"535.104.05","flavor":"open"},"library":{"version":"535.104.05","path":"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.104.05"},"secure_boot":"disabled"}}`

func TestHostRecordErrorsNameTheLine(t *testing.T) {
	cases := []struct{ name, rec, want string }{
		{"newer host version", strings.Replace(goodHost, `"version":1`, `"version":2`, 1), "x:2: host: unsupported host record version 2"},
		{"no version", strings.Replace(goodHost, `"version":1,`, ``, 1), "x:2: host: unsupported host record version 0"},
		{"unknown state", strings.Replace(goodHost, `"state":"installed"`, `"state":"fine"`, 1), `x:2: host: dkms[0].state "fine" is not one of`},
		{"unknown field", strings.Replace(goodHost, `"headers":false`, `"headers":false,"extra":1`, 1), `x:2: json: unknown field "extra"`},
		{"with a gpu", strings.Replace(goodHost, `{"t":0,`, `{"t":0,"gpu":0,`, 1), "x:2: field host takes no gpu"},
		{"and kmsg", strings.Replace(goodHost, `{"t":0,`, `{"t":0,"kmsg":"x",`, 1), "x:2: a record holds exactly one"},
		{"release with a space", strings.Replace(goodHost, `"release":"6.1.0-20-amd64"`, `"release":"6.1.0 evil"`, 1), `x:2: host: kernels[1].release "6.1.0 evil" is not one word`},
		{"escape in a path", strings.Replace(goodHost, `updates/dkms/nvidia.ko`, `updates/dkms/\u001b[2Jnvidia.ko`, 1), "x:2: host: kernels[0].nvidia_modules[0].path holds the control character U+001B"},
		{"relative path", strings.Replace(goodHost, `"path":"/usr/lib/`, `"path":"../usr/lib/`, 1), `x:2: host: library.path "../usr/lib/`},
		{"bad signature", strings.Replace(goodHost, `"signature":"signed"`, `"signature":"maybe"`, 1), `signature "maybe" is not one of`},
		{"too many kernels", strings.Replace(goodHost, `"kernels":[`, `"kernels":[`+strings.Repeat(`{"release":"k","headers":true},`, MaxHostKernels), 1), "x:2: host: 66 kernels is more than 64"},
		{"long note", strings.Replace(goodHost, `"state":"installed"`, `"state":"broken","note":"`+strings.Repeat("n", MaxHostTextBytes+1)+`"`, 1), "longer than 512 bytes"},
		{"unknown area", strings.Replace(goodHost, `"secure_boot":"disabled"`, `"unreadable":{"everything":"x"}`, 1), `unreadable area "everything"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(goodHeader+"\n"+c.rec), "x")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			var le *LineError
			if !errors.As(err, &le) {
				t.Errorf("%T is not a *LineError", err)
			}
		})
	}
	if _, err := Read(strings.NewReader(goodHeader+"\n"+goodHost), "x"); err != nil {
		t.Fatalf("the good host record: %v", err)
	}
}

// Facts read from a host, recorded into a trace, read back and played,
// give every check the same verdict as the host itself: the record keeps
// what the checks judge. Each fixture tree is a host in a known state.
func TestRecordedHostFactsJudgeAsTheHostTheyWereReadOn(t *testing.T) {
	trees, _ := filepath.Glob("../../testdata/rootfs/*")
	n := 0
	for _, tree := range trees {
		if fi, err := os.Stat(tree); err != nil || !fi.IsDir() {
			continue
		}
		n++
		t.Run(filepath.Base(tree), func(t *testing.T) {
			paths := hostfs.Paths{RootFS: tree, ProcFS: "proc", SysFS: "sys"}
			live := dkms.NewChecker(dkms.Config{Paths: paths}).Check(context.Background())

			rec := NewRecorder(nil)
			rec.Host(0, HostFromFacts(live.Facts))
			var buf bytes.Buffer
			if err := rec.Trace(Header{DurationS: 1}).Write(&buf); err != nil {
				t.Fatal(err)
			}
			tr, err := Read(&buf, "host.trace")
			if err != nil {
				t.Fatalf("the recorded host does not read back: %v", err)
			}
			p := NewPlayer(tr, PlayerOptions{})
			defer p.Close()
			replayed := dkms.NewChecker(dkms.Config{Recorded: p.HostFacts}).Check(context.Background())
			if replayed.Level != live.Level {
				t.Errorf("replayed level %s, the host's %s", replayed.Level, live.Level)
			}
			for _, c := range live.Checks {
				got, _ := replayed.Check(c.Check)
				if got.Level != c.Level || got.Summary != c.Summary {
					t.Errorf("%s: replayed %s %q, the host's %s %q", c.Check, got.Level, got.Summary, c.Level, c.Summary)
				}
			}
		})
	}
	if n < 5 {
		t.Fatalf("only %d fixture trees", n)
	}
}

// The demo node's recorded host, played: the findings of the node it
// declares, not of the machine running the test.
func TestTheDemoNodeShowsItsOwnHostFindings(t *testing.T) {
	tr, err := Open("demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	p := NewPlayer(tr, PlayerOptions{Clock: func() time.Time { return now }})
	defer p.Close()
	r := dkms.NewChecker(dkms.Config{Recorded: p.HostFacts,
		NVML: func(context.Context) (string, error) { return tr.Header.DriverVersion, nil }}).Check(context.Background())
	if r.Facts.RunningKernel != "5.15.0-105-generic" || r.Facts.NextBoot.Kernel != "5.15.0-107-generic" {
		t.Errorf("kernels: running %q, next boot %q", r.Facts.RunningKernel, r.Facts.NextBoot.Kernel)
	}
	want := map[string]event.Level{
		dkms.CheckNextBootModule: event.Critical, // the pending kernel has no NVIDIA module
		dkms.CheckKernelHeaders:  event.Warning,  // nor its headers
		dkms.CheckDriverLibrary:  event.Critical, // 550.54.15 loaded, 550.90.07 installed
		dkms.CheckNVML:           event.Warning,  // NVML still says 550.54.15
		dkms.CheckRebootPending:  event.Warning,
		dkms.CheckDriverLoaded:   event.OK,
		dkms.CheckDKMSBuild:      event.OK,
	}
	for check, level := range want {
		if f, _ := r.Check(check); f.Level != level {
			t.Errorf("%s: %s (%s), want %s", check, f.Level, f.Summary, level)
		}
	}
	if f, _ := r.Check(dkms.CheckRebootPending); !strings.Contains(f.Fix, "do not reboot yet") {
		t.Errorf("reboot_pending fix %q: a reboot now would lose the GPUs", f.Fix)
	}
}

// A trace without host records leaves the checks unable to tell, never ok.
func TestATraceWithoutHostFactsIsUnknown(t *testing.T) {
	tr, err := Read(strings.NewReader(goodHeader), "x")
	if err != nil {
		t.Fatal(err)
	}
	p := NewPlayer(tr, PlayerOptions{})
	defer p.Close()
	r := dkms.NewChecker(dkms.Config{Recorded: p.HostFacts}).Check(context.Background())
	if r.Level != event.Unknown {
		t.Errorf("level %s, want unknown", r.Level)
	}
	if f, _ := r.Check(dkms.CheckRebootPending); f.Level != event.Unknown {
		t.Errorf("reboot_pending %s: %s", f.Level, f.Summary)
	}
}

// A host whose kernel directory name is not text still gets its host
// record: the one kernel is left out, the rest is kept, and the record
// reads back.
func TestARecordedHostLeavesOutWhatItsReaderWouldRefuse(t *testing.T) {
	root := t.TempDir()
	if out, err := exec.Command("cp", "-a", "../../testdata/rootfs/healthy/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(root, "boot", "vmlinuz-6.1.0-\xff-amd64"), []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := dkms.NewGatherer(hostfs.Paths{RootFS: root, ProcFS: "proc", SysFS: "sys"}, nil, nil).Gather(context.Background())
	h := HostFromFacts(f)
	if err := h.validate(); err != nil {
		t.Fatalf("the recorder wrote a record its reader refuses: %v", err)
	}
	if len(h.Kernels) != len(f.Kernels)-1 || len(h.Kernels) == 0 {
		t.Errorf("%d kernels recorded of %d, want all but the one named \\xff", len(h.Kernels), len(f.Kernels))
	}
	for _, k := range h.Kernels {
		if strings.Contains(k.Release, "\xff") {
			t.Errorf("kernel %q recorded", k.Release)
		}
	}
}
