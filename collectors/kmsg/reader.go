package kmsg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Default paths; Config overrides them so tests and containers can point
// elsewhere.
const (
	DefaultPath       = "/dev/kmsg"
	DefaultBootIDPath = "/proc/sys/kernel/random/boot_id"
)

// Config configures a Reader. The zero value reads /dev/kmsg without a
// cursor.
type Config struct {
	Path       string // the kernel log device, or a file or pipe of records (tests, replay)
	BootIDPath string
	// StateDir holds the cursor (CursorFile). Empty keeps no cursor: every
	// start reads the whole ring buffer.
	StateDir  string
	BatchSize int // records per batch at most; default 512
	QueueLen  int // batches the consumer may fall behind by before batches are dropped; default 64
	// NoFollow stops Run at the end of what the kernel has (or at EOF)
	// instead of waiting for new records.
	NoFollow bool
	// RereadSeen hands over the records at or before the saved cursor too,
	// marked Seen: a restarted agent rebuilds what they imply (a GPU that
	// fell off the bus is still gone) without counting them again.
	RereadSeen bool
	Logger     *slog.Logger
}

// Stats are the reader's counters, for the agent to export.
type Stats struct {
	Records   uint64 // handed to the consumer
	Lost      uint64 // overwritten by the kernel before they were read (SEQ gaps): gpuwarden_kmsg_lost_records_total
	Overruns  uint64 // times read(2) returned EPIPE (the ring buffer overran the reader)
	Dropped   uint64 // read but dropped because the consumer's queue was full
	Malformed uint64 // records that did not parse
	Skipped   uint64 // at or before the saved cursor, not handed over again
	SaveFails uint64 // cursor writes that failed
}

// Reader is the single reader of the kernel log. Open it, call Run in its
// own goroutine, and receive from Batches.
type Reader struct {
	cfg      Config
	log      *slog.Logger
	f        *os.File
	bootID   string
	bootOnce sync.Once

	// perRead is true for the real device, which returns exactly one record
	// per read(2); files and pipes are split into records by lines.
	perRead bool
	buf     []byte
	partial []byte // stream mode: the record being assembled

	resume   uint64 // skip records up to and including this SEQ
	resuming bool
	lastSeq  uint64
	haveLast bool
	savedSeq uint64
	saved    bool

	batch   []Record
	nextCap int
	arena   arena
	out     chan []Record

	stateErr error
	dropping uint64 // records dropped in the current episode of a full queue

	records, lost, overruns, dropped, malformed, skipped, saveFails atomic.Uint64

	stopping  atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Open opens the kernel log and loads the cursor. Errors name the cause and
// the fix; the agent marks the collector down on any of them.
func Open(cfg Config) (*Reader, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.BootIDPath == "" {
		cfg.BootIDPath = DefaultBootIDPath
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 64
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Reader{cfg: cfg, log: log}

	var err error
	if cfg.StateDir != "" {
		if r.bootID, err = readBootID(cfg.BootIDPath); err != nil {
			return nil, fmt.Errorf("kernel-log cursor needs the boot id: %w", err)
		}
		if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
			return nil, fmt.Errorf("kernel-log state directory: %w", err)
		}
		c, found, err := loadCursor(cfg.StateDir)
		var corrupt *CorruptStateError
		switch {
		case errors.As(err, &corrupt):
			r.stateErr = err
			r.log.Warn("kernel-log cursor was corrupt; reading from the start of the ring buffer",
				"err", err, "moved_to", corrupt.MovedTo)
		case err != nil:
			return nil, err
		case found && c.BootID == r.bootID:
			r.resume, r.resuming = c.Seq, true
			r.lastSeq, r.haveLast = c.Seq, true
			r.savedSeq, r.saved = c.Seq, true
			r.log.Debug("resuming the kernel log after the saved cursor", "seq", c.Seq, "boot_id", r.bootID)
		case found:
			r.log.Info("new boot since the saved cursor; reading the ring buffer from the start",
				"saved_boot_id", c.BootID, "boot_id", r.bootID)
		}
	}

	// O_NONBLOCK makes the non-blocking read in Reader.read safe whether or
	// not the runtime's poller accepts the device.
	f, err := os.OpenFile(cfg.Path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, openError(cfg.Path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", cfg.Path, err)
	}
	r.f = f
	r.perRead = st.Mode()&fs.ModeCharDevice != 0
	if r.perRead {
		// The kernel formats each record for a reader in at most 8 KiB
		// (CONSOLE_EXT_LOG_MAX), dictionary included.
		r.buf = *recordBufs.Get().(*[]byte)
	} else {
		r.buf = make([]byte, 64<<10)
	}
	r.out = make(chan []Record, cfg.QueueLen)
	// A fresh reader usually starts with the whole ring buffer.
	r.nextCap = cfg.BatchSize
	return r, nil
}

func openError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("kernel log unavailable: %w (fix: the kernel must expose /dev/kmsg; in a container "+
			"pass the device, e.g. --device /dev/kmsg, or mount the host's /dev)", err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("kernel log unreadable: %w (fix: run gpuwarden as root or with CAP_SYSLOG; "+
			"with kernel.dmesg_restrict=1 reading %s needs CAP_SYSLOG)", err, path)
	}
	return fmt.Errorf("open kernel log: %w", err)
}

// BootID is the boot the records belong to ("" if it cannot be read). With a
// state dir it was read at Open; without one it is read on first use, as
// reading it costs more than opening the device.
func (r *Reader) BootID() string {
	r.bootOnce.Do(func() {
		if r.bootID == "" {
			r.bootID, _ = readBootID(r.cfg.BootIDPath)
		}
	})
	return r.bootID
}

// StateError is the problem found with the saved cursor at Open (a
// *CorruptStateError), or nil. The agent should surface it once.
func (r *Reader) StateError() error { return r.stateErr }

// Batches delivers records in order, in batches. It is closed when Run
// returns.
func (r *Reader) Batches() <-chan []Record { return r.out }

// Lost is the number of records the kernel overwrote before they were read.
func (r *Reader) Lost() uint64 { return r.lost.Load() }

// Stats returns the counters.
func (r *Reader) Stats() Stats {
	return Stats{
		Records: r.records.Load(), Lost: r.lost.Load(), Overruns: r.overruns.Load(),
		Dropped: r.dropped.Load(), Malformed: r.malformed.Load(), Skipped: r.skipped.Load(),
		SaveFails: r.saveFails.Load(),
	}
}

var errDrained = errors.New("drained")

// recordBufs keeps read buffers for readers reopened after an error, so the
// buffer is warm in cache rather than fresh memory.
var recordBufs = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

// Run reads until ctx is done, the source ends (EOF of a file or pipe; the
// end of the ring buffer with NoFollow), or a read fails. It parses inline
// and never waits for the consumer. On return it hands over what is left,
// saves the cursor, closes the source and closes Batches. Call it once.
func (r *Reader) Run(ctx context.Context) error {
	defer close(r.out)
	if ctx.Done() != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-ctx.Done():
				r.stopping.Store(true)
				r.close()
			case <-stop:
			}
		}()
	}

	rc, err := r.f.SyscallConn()
	if err != nil {
		r.close()
		return fmt.Errorf("kernel log %s: %w", r.cfg.Path, err)
	}
	var rerr error
	for rerr == nil {
		err := rc.Read(func(fd uintptr) bool {
			rerr = r.readSome(int(fd))
			return rerr != nil
		})
		if err != nil && rerr == nil {
			rerr = err
		}
	}
	r.endPartial()
	r.flush()
	r.save()
	r.close()
	if r.perRead {
		b := r.buf
		r.buf = nil
		recordBufs.Put(&b)
	}

	switch {
	case r.stopping.Load(), errors.Is(rerr, io.EOF), errors.Is(rerr, errDrained):
		return nil
	}
	return fmt.Errorf("read kernel log %s: %w", r.cfg.Path, rerr)
}

// readSome reads until the source has nothing more right now. It returns nil
// to wait for more (the caller's poller does that), or why to stop.
func (r *Reader) readSome(fd int) error {
	for {
		if r.stopping.Load() {
			return errDrained
		}
		n, err := r.read(fd)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			r.endPartial()
			r.flush()
			if r.cfg.NoFollow {
				return errDrained
			}
			return nil
		case err == syscall.EPIPE:
			// The kernel overwrote records we had not read and moved us to
			// the oldest one left; the SEQ gap on the next record says how
			// many were lost.
			if c := r.overruns.Add(1); c == 1 || c%100 == 0 {
				r.log.Warn("kernel log overran the reader; records were lost", "path", r.cfg.Path, "overruns", c)
			}
			continue
		case err != nil:
			return err
		case n == 0:
			return io.EOF
		}
		if r.perRead {
			r.parse(r.buf[:n])
		} else {
			r.splitStream(r.buf[:n])
		}
	}
}

// read is read(2). The device is opened O_NONBLOCK, so its reads never
// sleep and can skip the scheduler's syscall bookkeeping, which is a
// measurable share of a ~2 µs record read; files and pipes use the ordinary
// path.
func (r *Reader) read(fd int) (int, error) {
	if !r.perRead {
		return syscall.Read(fd, r.buf)
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// splitStream assembles records from a byte stream: a header line followed
// by dictionary lines that begin with a space.
func (r *Reader) splitStream(b []byte) {
	for len(b) > 0 {
		i := indexByte(b, '\n')
		line := b
		if i >= 0 {
			line = b[:i+1]
		}
		b = b[len(line):]
		startsRecord := len(r.partial) == 0 || r.partial[len(r.partial)-1] == '\n' && line[0] != ' '
		if startsRecord && len(r.partial) > 0 {
			r.endPartial()
		}
		r.partial = append(r.partial, line...)
	}
}

func (r *Reader) endPartial() {
	if len(r.partial) == 0 {
		return
	}
	r.parse(r.partial)
	r.partial = r.partial[:0]
}

func (r *Reader) parse(b []byte) {
	rec, err := parseRecord(b, &r.arena)
	if err != nil {
		if c := r.malformed.Add(1); c == 1 {
			r.log.Warn("skipping a malformed kernel log record", "path", r.cfg.Path, "err", err)
		}
		return
	}
	r.take(rec)
}

func (r *Reader) take(rec Record) {
	if r.resuming && rec.Seq <= r.resume {
		r.skipped.Add(1)
		if r.cfg.RereadSeen {
			rec.Seen = true
			r.add(rec)
		}
		return
	}
	r.resuming = false
	if r.haveLast && rec.Seq > r.lastSeq+1 {
		r.lost.Add(rec.Seq - r.lastSeq - 1)
	}
	r.lastSeq, r.haveLast = rec.Seq, true
	r.add(rec)
}

// add puts a record in the batch, handing the batch over when full.
func (r *Reader) add(rec Record) {
	if r.batch == nil {
		// Size the batch like the last one: one record at a time when the
		// log is quiet, whole ring buffers after a restart or in a flood,
		// without regrowing the slice record by record.
		r.batch = make([]Record, 0, r.nextCap)
	}
	r.batch = append(r.batch, rec)
	if len(r.batch) >= r.cfg.BatchSize {
		r.flush()
	}
}

// flush hands the batch over without waiting: a full queue drops it and
// counts it. Then it saves the cursor, so that a restart resumes after what
// was handed over (or dropped, which is counted and must not come back).
func (r *Reader) flush() {
	if len(r.batch) == 0 {
		return
	}
	n := uint64(len(r.batch))
	select {
	case r.out <- r.batch:
		r.records.Add(n)
		if r.dropping > 0 {
			r.log.Warn("kernel-log consumer caught up", "dropped_records", r.dropping)
			r.dropping = 0
		}
	default:
		if r.dropping == 0 {
			r.log.Warn("kernel-log consumer is behind; dropping records", "queue_batches", cap(r.out))
		}
		r.dropping += n
		r.dropped.Add(n)
	}
	r.nextCap = min(max(2*len(r.batch), 16), r.cfg.BatchSize)
	r.batch = nil
	r.save()
}

func (r *Reader) save() {
	if r.cfg.StateDir == "" || !r.haveLast || (r.saved && r.savedSeq == r.lastSeq) {
		return
	}
	if err := saveCursor(r.cfg.StateDir, cursor{BootID: r.bootID, Seq: r.lastSeq}); err != nil {
		if c := r.saveFails.Add(1); c == 1 || c%1000 == 0 {
			r.log.Warn("could not save the kernel-log cursor; a restart may report events twice", "err", err, "failures", c)
		}
		return
	}
	r.savedSeq, r.saved = r.lastSeq, true
}

func (r *Reader) close() {
	r.closeOnce.Do(func() { r.closeErr = r.f.Close() })
}

// Close releases the source without running. Use it when Run was never
// called; Run closes the source itself.
func (r *Reader) Close() error {
	r.close()
	if r.closeErr != nil && !strings.Contains(r.closeErr.Error(), "already closed") {
		return r.closeErr
	}
	return nil
}
