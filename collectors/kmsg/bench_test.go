package kmsg

import (
	"io"
	"os"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benignLines are ordinary kernel lines in dmesg's wrapper: the traffic the
// classifier must wave through cheaply.
var benignLines = []string{
	"[    0.000000] Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075) (x86_64-linux-gnu-gcc-13 (Ubuntu 13.2.0-23ubuntu4) 13.2.0) #45-Ubuntu SMP PREEMPT_DYNAMIC",
	"[    0.004512] ACPI: RSDP 0x00000000000F05B0 000024 (v02 ALASKA)",
	"[    0.312345] pci 0000:00:1f.2: [8086:a102] type 00 class 0x010601",
	"[    1.102030] usb 1-1: new high-speed USB device number 2 using xhci_hcd",
	"[    1.204050] xhci_hcd 0000:00:14.0: xHCI Host Controller",
	"[    2.345678] EXT4-fs (nvme0n1p2): mounted filesystem with ordered data mode. Quota mode: none.",
	"[    3.456789] systemd[1]: Started Journal Service.",
	"[    4.567890] mlx5_core 0000:4b:00.0: Port module event: module 0, Cable plugged",
	"[    5.678901] IPv6: ADDRCONF(NETDEV_CHANGE): ens1f0: link becomes ready",
	"[   10.111213] audit: type=1400 audit(1700000000.123:45): apparmor=\"STATUS\" operation=\"profile_load\" name=\"snap.lxd\"",
	"[   12.131415] br-3f2a: port 1(veth12ab) entered forwarding state",
	"[   20.161718] kauditd_printk_skb: 12 callbacks suppressed",
	"[  100.192021] perf: interrupt took too long (2503 > 2500), lowering kernel.perf_event_max_sample_rate to 79750",
	"[ 1000.222324] TCP: request_sock_TCP: Possible SYN flooding on port 8080. Sending cookies.",
	"[ 5000.252627] nvme nvme0: I/O 123 QID 4 timeout, completion polled",
	"[86400.282930] loop3: detected capacity change from 0 to 8",
}

// BenchmarkClassifyBenignLines measures ClassifyLine (wrapper stripping and
// classification) on lines that are none of our kinds. The target is at
// least 10 M lines/s with 0 allocations.
func BenchmarkClassifyBenignLines(b *testing.B) {
	for _, l := range benignLines {
		if k := ClassifyLine(l).Kind; k != "unrelated" {
			b.Fatalf("%q classified as %s", l, k)
		}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		_ = ClassifyLine(benignLines[n%len(benignLines)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds()/1e6, "Mlines/s")
}

// BenchmarkClassifyBenignMessages is the same without wrappers, as the
// reader calls Classify on Record.Message.
func BenchmarkClassifyBenignMessages(b *testing.B) {
	msgs := make([]string, len(benignLines))
	for i, l := range benignLines {
		msgs[i] = StripWrapper(l).Message
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		_ = Classify(msgs[n%len(msgs)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds()/1e6, "Mlines/s")
}

// BenchmarkClassifyXidLine is the hit path, for reference.
func BenchmarkClassifyXidLine(b *testing.B) {
	line := "[6781741.548779] NVRM: Xid (PCI:0000:91:00): 79, pid=1234, name=python3, GPU has fallen off the bus."
	b.ReportAllocs()
	for b.Loop() {
		_ = ClassifyLine(line)
	}
}

// The /dev/kmsg pair: one op reads this host's whole ring buffer from its
// first record, on a device opened once (lseek to the first record each
// pass), as the agent's reader reads it all its life. Raw is read(2) and
// nothing else; Reader adds parsing, batching and hand-over. Compare their
// records/s.

// rawDevice opens the device as rawPass reads it.
func rawDevice(b *testing.B) int {
	fd, err := syscall.Open(DefaultPath, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { syscall.Close(fd) })
	return fd
}

// rawPass reads the whole ring with read(2) and nothing else.
func rawPass(b *testing.B, fd int, buf []byte) int {
	if _, err := syscall.Seek(fd, 0, io.SeekStart); err != nil {
		b.Fatal(err)
	}
	records := 0
	for {
		_, err := syscall.Read(fd, buf)
		if err == syscall.EAGAIN {
			return records
		}
		if err == syscall.EPIPE || err == syscall.EINTR {
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		records++
	}
}

// benchReader is a Reader the passes share: every pass is handed the whole
// ring again (RereadSeen), so each does the full work.
func benchReader(b *testing.B) *Reader {
	r, err := Open(Config{NoFollow: true, RereadSeen: true, QueueLen: 1 << 12, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return r
}

// readerPass reads the whole ring through the Reader: rewind, read, parse,
// batch, hand over, in this goroutine; the batches are counted after (the
// ring fits the queue), so the pass measures the reader's work and not the
// scheduler waking a consumer goroutine, which the raw loop does not have
// either.
func readerPass(b *testing.B, r *Reader) int {
	if err := r.Rewind(); err != nil {
		b.Fatal(err)
	}
	if err := r.ReadAvailable(); err != nil {
		b.Fatal(err)
	}
	records := 0
	for {
		select {
		case batch := <-r.Batches():
			records += len(batch.Records)
			batch.Release()
			continue
		default:
		}
		break
	}
	if st := r.Stats(); st.Dropped != 0 {
		b.Fatalf("dropped %d records: the queue is too small for this ring", st.Dropped)
	}
	return records
}

func skipWithoutKmsg(b *testing.B) {
	if _, err := os.Stat(DefaultPath); err != nil {
		b.Skip(err)
	}
}

func BenchmarkDevKmsgRawRead(b *testing.B) {
	skipWithoutKmsg(b)
	buf := make([]byte, 16<<10)
	fd := rawDevice(b)
	records := 0
	for b.Loop() {
		records += rawPass(b, fd, buf)
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(records)/float64(b.N), "records/op")
}

func BenchmarkDevKmsgReader(b *testing.B) {
	skipWithoutKmsg(b)
	r := benchReader(b)
	records := 0
	for b.Loop() {
		records += readerPass(b, r)
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(records)/float64(b.N), "records/op")
}

// BenchmarkDevKmsgReaderVsRaw alternates the two passes in one loop, so a
// change in the machine's load (this host is shared) hits both alike, and
// reports the reader's rate as a percentage of the raw rate: over the whole
// run in wall time (reader-%-of-raw), the median of each pair's ratio
// (reader-%-of-raw-median), which a burst of load on one pass moves least,
// and in the CPU time of the one thread both passes run on
// (reader-%-of-raw-cpu), which time spent waiting for a core on a shared
// machine does not move at all.
func BenchmarkDevKmsgReaderVsRaw(b *testing.B) {
	skipWithoutKmsg(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 16<<10)
	fd, r := rawDevice(b), benchReader(b)
	// One pass of each, untimed, so that the first timed one does not pay
	// for the reader's first batches' memory or a cold page cache.
	rawPass(b, fd, buf)
	readerPass(b, r)
	var rawT, readerT, rawCPU, readerCPU time.Duration
	var rawN, readerN int
	var ratios []float64
	for b.Loop() {
		t, c := time.Now(), threadCPU(b)
		n := rawPass(b, fd, buf)
		rt, rc := time.Since(t), threadCPU(b)-c
		t, c = time.Now(), threadCPU(b)
		m := readerPass(b, r)
		mt, mc := time.Since(t), threadCPU(b)-c
		rawN, rawT, readerN, readerT = rawN+n, rawT+rt, readerN+m, readerT+mt
		rawCPU, readerCPU = rawCPU+rc, readerCPU+mc
		if n > 0 && m > 0 {
			ratios = append(ratios, (float64(m)/mt.Seconds())/(float64(n)/rt.Seconds()))
		}
	}
	raw := float64(rawN) / rawT.Seconds()
	reader := float64(readerN) / readerT.Seconds()
	b.ReportMetric(raw, "raw-records/s")
	b.ReportMetric(reader, "reader-records/s")
	b.ReportMetric(100*reader/raw, "reader-%-of-raw")
	if len(ratios) > 0 {
		slices.Sort(ratios)
		b.ReportMetric(100*ratios[len(ratios)/2], "reader-%-of-raw-median")
	}
	if rawCPU > 0 && readerCPU > 0 {
		b.ReportMetric(100*(float64(readerN)/readerCPU.Seconds())/(float64(rawN)/rawCPU.Seconds()), "reader-%-of-raw-cpu")
	}
}

// threadCPU is the CPU time of the calling thread.
func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// BenchmarkParseRecordsOfTheRing is the reader's own work on this host's
// ring, without the reads: parse, take and batch each record, as a pass
// does after read(2). ns/record is what the reader adds to the kernel's
// cost of a record; cpu-ns/record is the same in the CPU time of the one
// thread it runs on, which waiting for a core on a shared machine does not
// move (the collector's own threads are not in it).
func BenchmarkParseRecordsOfTheRing(b *testing.B) {
	skipWithoutKmsg(b)
	fd := rawDevice(b)
	buf := make([]byte, 16<<10)
	var ring [][]byte
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EAGAIN {
			break
		}
		if err == syscall.EPIPE || err == syscall.EINTR {
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		ring = append(ring, append([]byte(nil), buf[:n]...))
	}
	r := &Reader{cfg: Config{BatchSize: DefaultBatchSize}, log: quiet, perRead: true, out: make(chan Batch, 1<<12), free: make(chan *batchMem, keptBatches), nextCap: DefaultBatchSize}
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := threadCPU(b)
	for b.Loop() {
		for _, rec := range ring {
			r.parse(rec)
		}
		r.flush()
		for len(r.out) > 0 {
			(<-r.out).Release()
		}
		r.haveLast = false
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ring)), "ns/record")
	b.ReportMetric(float64(threadCPU(b)-cpu)/float64(b.N*len(ring)), "cpu-ns/record")
}
