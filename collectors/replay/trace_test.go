package replay

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/gpuwarden/gpuwarden/collectors/ebpf"
	"github.com/gpuwarden/gpuwarden/dkms"
)

const goodHeader = `{"format":"gpuwarden-trace","version":1,"duration_s":10,"gpus":[{"index":0,"uuid":"GPU-0","name":"H100","pci_bus_id":"00000000:18:00.0","minor":0}]}`

func TestTraceErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		name, text, want string
	}{
		{"unknown version", strings.Replace(goodHeader, `"version":1`, `"version":7`, 1), "x:1: header: unsupported trace version 7"},
		{"not a trace", `{"format":"other","version":1,"gpus":[]}`, `x:1: header: format "other"`},
		{"corrupt line", goodHeader + "\n{\"t\":1,\"gpu\":0,\"nvml\":{\"GetPowerUsage()\":{\"v\":1}}}\n{\"t\":2,\"gpu\":0,\"nvml\"", "x:3: unexpected EOF"},
		{"unknown field", goodHeader + "\n{\"t\":1,\"gpu\":0,\"bogus\":1}", `x:2: json: unknown field "bogus"`},
		{"gpu out of range", goodHeader + "\n{\"t\":1,\"gpu\":5,\"nvml\":{\"a\":{\"v\":1}}}", "x:2: field gpu: 5 is not a GPU"},
		{"unknown return", goodHeader + "\n{\"t\":1,\"gpu\":0,\"nvml\":{\"a\":{\"r\":\"SOMETIMES\"}}}", `x:2: nvml answer "a": unknown return "SOMETIMES"`},
		{"negative time", goodHeader + "\n{\"t\":-1,\"kmsg\":\"x\"}", "x:2: field t: -1"},
		{"two kinds", goodHeader + "\n{\"t\":1,\"kmsg\":\"x\",\"hang_s\":3}", "x:2: a record holds exactly one of nvml, kmsg, hang_s, ebpf or host"},
		{"empty", "", "x:1: empty trace"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(c.text), "x")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			var le *LineError
			if !errors.As(err, &le) {
				t.Errorf("%T is not a *LineError", err)
			}
		})
	}
}

func TestTruncatedGzipTraceIsAnError(t *testing.T) {
	b, err := os.ReadFile("demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bytes.NewReader(b[:len(b)/2]), "half.gz"); err == nil {
		t.Fatal("half a gzip stream was accepted")
	}
}

func TestTraceRecordsNotSupportedAndGPUIsLost(t *testing.T) {
	tr, err := Open("demo/traces/dgx-h100-demo.trace.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range tr.Records {
		for _, a := range r.NVML {
			seen[a.R] = true
		}
		if r.Kmsg != "" {
			seen["kmsg"] = true
		}
	}
	for _, want := range []string{"NOT_SUPPORTED", "GPU_IS_LOST", "kmsg"} {
		if !seen[want] {
			t.Errorf("demo trace has no %s", want)
		}
	}
}

func FuzzTraceRead(f *testing.F) {
	f.Add([]byte(goodHeader + "\n{\"t\":1,\"gpu\":0,\"nvml\":{\"GetPowerUsage()\":{\"v\":71000}}}\n{\"t\":2,\"kmsg\":\"3,1,2,-;NVRM: Xid\"}\n{\"t\":3,\"hang_s\":-1}\n"))
	f.Add([]byte(goodHeader))
	// eBPF records: good ones of each kind, and one of another layout.
	f.Add([]byte(goodHeader + "\n" +
		ebpfLine(1, ebpf.Layout, ebpf.Record{Kind: ebpf.RecordOOM, PID: 31337, Comm: "python3", CgroupID: 7, Name: "step_0"}.EncodeTrace(), "/slurm/uid_1000/job_4242/step_0") + "\n" +
		ebpfLine(2, ebpf.Layout, ebpf.Record{Kind: ebpf.RecordAER, Name: "0000:18:00.0", Severity: 1, Status: 0x20}.EncodeTrace(), "") + "\n" +
		ebpfLine(3, ebpf.Layout, ebpf.Record{Kind: ebpf.RecordModuleFree, Name: "nvidia_uvm"}.EncodeTrace(), "") + "\n" +
		ebpfLine(4, ebpf.Layout+1, ebpf.Record{Kind: ebpf.RecordModuleLoad, Name: "nvidia"}.EncodeTrace(), "") + "\n"))
	f.Add([]byte(goodHeader + "\n" + goodHost + "\n"))
	f.Add([]byte(goodHeader + "\n" + strings.Replace(goodHost, `"state":"installed"`, `"state":"build-failed","make_log":"/var/lib/dkms/nvidia/535.104.05/build/make.log","make_log_tail":["error: x"]`, 1) + "\n"))
	f.Add([]byte(goodHeader + "\n" + `{"t":0,"host":{"version":1,"kernel":"","unreadable":{"dkms":"permission denied"},"reboot_required":{}}}` + "\n"))
	f.Add([]byte("\x1f\x8b\x08\x00"))
	if b, err := os.ReadFile("demo/traces/dgx-h100-demo.trace.jsonl.gz"); err == nil {
		zr, _ := gzip.NewReader(bytes.NewReader(b))
		var buf bytes.Buffer
		buf.ReadFrom(zr)
		f.Add(buf.Bytes()[:min(buf.Len(), 8000)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Read(bytes.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		// What was accepted must play without panicking.
		// eBPF records reach the source's decoder, which must take them.
		p := NewPlayer(tr, PlayerOptions{Speed: 1e6, EBPF: func(raw []byte, _ string) {
			if _, err := ebpf.DecodeTrace(raw); err != nil {
				t.Fatalf("a record accepted on read does not decode: %v", err)
			}
		}})
		// Closed first: a call into a recorded hang returns at once instead
		// of blocking the fuzzer; every other call is answered as usual.
		p.Close()
		// Accepted host facts convert and judge without panicking.
		if f, ok := p.HostFacts(); ok {
			dkms.Evaluate(&f, func(string) bool { return true })
		}
		lib := p.Library()
		n, _ := lib.DeviceGetCount()
		for i := 0; i < n && i < 4; i++ {
			d, _ := lib.DeviceGetHandleByIndex(i)
			if d != nil {
				d.GetPowerUsage()
				d.GetMemoryInfo_v2()
			}
		}
	})
}
