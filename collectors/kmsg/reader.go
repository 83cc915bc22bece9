package kmsg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
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
	// Path is the kernel log device, or a file or pipe of records (tests,
	// replay): there records are split by lines, a record split across
	// reads is joined, and a last line without a newline is parsed at EOF.
	Path       string
	BootIDPath string
	// StateDir holds the cursor (CursorFile). Empty keeps no cursor: every
	// start reads the whole ring buffer.
	StateDir  string
	BatchSize int // records per batch at most; default DefaultBatchSize
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

// DefaultBatchSize is the most records a batch holds unless Config says
// otherwise: as many as fit in 32 KiB (455), the largest allocation the Go
// runtime serves from its per-thread caches. A larger one is allocated
// and freed through the heap itself, which at a ring buffer's worth of
// records per pass costs more than the records' parsing.
const DefaultBatchSize = 32 << 10 / int(unsafe.Sizeof(Record{}))

// Stats are the reader's counters, for the agent to export.
type Stats struct {
	Records   uint64 // handed to the consumer
	Lost      uint64 // overwritten by the kernel before they were read (SEQ gaps): gpuwarden_kmsg_lost_records_total
	Overruns  uint64 // times read(2) returned EPIPE (the ring buffer overran the reader)
	Dropped   uint64 // read but dropped because the consumer's queue was full
	Malformed uint64 // records that did not parse
	Truncated uint64 // records whose text was cut to MaxMessageBytes (Record.Truncated)
	Skipped   uint64 // at or before the saved cursor, not handed over again
	SaveFails uint64 // cursor writes that failed
}

// Reader is the single reader of the kernel log. Open it, call Run in its
// own goroutine, and receive from Batches.
//
// # Acknowledging batches
//
// With a StateDir the reader keeps a cursor: the SEQ after which a restart
// resumes. It moves only when the consumer acknowledges a batch (Batch.Ack
// or Reader.Ack) after applying its records, never when a batch is merely
// handed over, so records queued or being applied when the process is
// killed are not lost. Delivery is at least once across a crash: the
// records after the last saved acknowledgement are delivered again, as new
// records (not Seen), after a restart.
//
// Acknowledging is cheap and may be done for every batch: the reader writes
// the latest acknowledged SEQ at most every saveEvery, and at once when Run
// returns and on Close. For a clean shutdown, acknowledge the batches still
// in Batches after Run returned, then call Close.
//
// An acknowledgement covers every SEQ up to the batch's Last, so batches the
// reader dropped on a full queue (counted in Stats.Dropped) are passed by
// the cursor once a later batch is acknowledged: they are lost and counted,
// not delivered again forever. Acknowledging Seen records (RereadSeen), or
// the same batch twice, is harmless: the cursor never moves back.
//
// # Releasing batches
//
// A batch's records, and the strings in them, are the reader's memory. A
// consumer that releases each batch when done with it (Batch.Release) has
// later batches parsed into that memory, so reading makes no garbage; one
// that keeps records must copy their strings first. Call Trim when Batches
// is empty after a release, to give back what a burst needed.
//
// # Checking the cursor
//
// A cursor of this boot is checked at Open against the backlog the source
// holds then (the ring buffer up to the first EAGAIN; a file up to EOF),
// which Open reads and holds, so the verdict comes before any record is
// handed over. A cursor past the newest SEQ cannot be right: it is moved
// aside, StateError reports a *CursorAheadError, and every record is
// delivered as new (not Seen). Run hands the held backlog over first.
type Reader struct {
	cfg      Config
	log      *slog.Logger
	f        *os.File
	bootID   string
	bootOnce sync.Once

	rc syscall.RawConn // the open source's, made on first read
	// perRead is true for the real device, which returns exactly one record
	// per read(2); files and pipes are split into records by lines.
	perRead bool
	buf     []byte
	pend    int    // device: bytes of buf read and not yet parsed
	ends    []int  // device: where each of those records ends in buf
	partial []byte // stream mode: the whole lines of the record being assembled
	line    []byte // stream mode: the line being read, up to maxStreamLine

	resume   uint64 // skip records up to and including this SEQ
	resuming bool
	// held is the backlog read at Open while the cursor is checked; Run
	// hands it over first.
	held     []Record
	holding  bool
	lastSeq  uint64
	haveLast bool

	// acked is 1 + the latest acknowledged SEQ (0: none); the consumer's
	// goroutine raises it, the cursor writer reads it.
	acked    atomic.Uint64
	saveMu   sync.Mutex // one cursor write at a time; guards the fields below
	saveTmr  *time.Timer
	savedSeq uint64 // 1 + the SEQ in the cursor file (0: none)
	closed   bool
	// The consumer's latest checkpoint and the SEQ it covers. Once there
	// is one, the cursor saved is the checkpoint's SEQ, so that the two
	// always match.
	cp       []byte
	cpSeq    uint64
	haveCP   bool
	loadedCP []byte // the checkpoint in the cursor at Open (this boot's)

	batch   []Record
	mem     *batchMem // what batch is parsed into; nil between batches
	nextCap int
	// heldText holds the strings of the held backlog, which is parsed
	// before any batch exists.
	heldText arena
	out      chan Batch
	// free is the memory of released batches (Batch.Release), parsed into
	// again before any new memory is made.
	free chan *batchMem

	stateErr error
	dropping uint64 // records dropped in the current episode of a full queue

	records, lost, overruns, dropped, malformed, truncated, skipped, saveFails atomic.Uint64
	// nSkipped counts skipped records not yet added to skipped: the reader
	// adds them at flush, not with an atomic add per record.
	nSkipped uint64

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
		cfg.BatchSize = DefaultBatchSize
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
		if r.bootID, err = hostfs.ReadBootID(cfg.BootIDPath); err != nil {
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
			r.savedSeq = c.Seq + 1
			r.acked.Store(c.Seq + 1)
			r.loadedCP = c.Checkpoint
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
		r.buf = *recordBufs.Get().(*[]byte)
	} else {
		r.buf = make([]byte, 64<<10)
	}
	r.out = make(chan Batch, cfg.QueueLen)
	r.free = make(chan *batchMem, keptBatches)
	// A fresh reader usually starts with the whole ring buffer.
	r.nextCap = cfg.BatchSize
	if r.resuming {
		r.checkCursor()
	}
	return r, nil
}

// maxBacklogBytes bounds the backlog read and held at Open to check the
// cursor: more than any ring buffer a host configures (log_buf_len).
const maxBacklogBytes = 32 << 20

// checkCursor reads the backlog the source holds now (the ring buffer, up
// to the first EAGAIN; a file up to EOF) and holds it, so that the cursor
// is judged before any record is handed over: a cursor of this boot whose
// SEQ is past the newest record is implausible. It is then moved aside and
// reported (*CursorAheadError), and the held records and all after them are
// new, not Seen, since the cursor cannot say which were applied. Run hands
// the held records over first.
func (r *Reader) checkCursor() {
	rc, err := r.f.SyscallConn()
	if err != nil {
		return
	}
	r.holding = true
	complete, total := false, 0
	rc.Read(func(fd uintptr) bool {
		for total < maxBacklogBytes {
			n, err := r.read(int(fd))
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EPIPE:
				r.overrun()
				continue
			case err == syscall.EAGAIN, err == nil && n == 0:
				complete = true
				return true
			case err != nil:
				return true // Run meets it again and reports it
			}
			total += n
			if r.perRead {
				r.gotRecord(n)
			} else {
				r.splitStream(r.buf[:n])
			}
		}
		return true
	})
	if r.perRead {
		r.parseRead()
	} else {
		r.pauseStream()
	}
	r.holding = false
	if !complete || len(r.held) == 0 {
		// A backlog too long to hold, or a read error: no verdict.
		return
	}
	newest := r.held[0].Seq
	for _, rec := range r.held {
		newest = max(newest, rec.Seq)
	}
	if newest >= r.resume {
		return
	}
	path := filepath.Join(r.cfg.StateDir, CursorFile)
	moved, merr := moveAsideAs(path, "implausible")
	if merr != nil {
		moved = ""
	}
	e := &CursorAheadError{Path: path, MovedTo: moved, CursorSeq: r.resume, KernelSeq: newest, MoveErr: merr}
	r.stateErr = e
	r.log.Warn("kernel-log cursor is ahead of the kernel; reading the ring buffer from the start", "err", e)
	r.resume, r.resuming = 0, false
	r.lastSeq, r.haveLast = 0, false
	// Nothing was handed over yet, so nothing can have been acknowledged.
	r.saveMu.Lock()
	r.acked.Store(0)
	r.savedSeq = 0
	r.saveMu.Unlock()
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
// Resumed says whether reading resumes after a saved cursor of this boot
// (false on a first start in the boot, or after the cursor was refused).
func (r *Reader) Resumed() bool { return r.resuming }

func (r *Reader) BootID() string {
	r.bootOnce.Do(func() {
		if r.bootID == "" {
			r.bootID, _ = hostfs.ReadBootID(r.cfg.BootIDPath)
		}
	})
	return r.bootID
}

// StateError is the problem found with the saved cursor at Open, or nil: a
// *CorruptStateError (it did not parse) or a *CursorAheadError (it is past
// the newest record of this boot). Either way the file was moved aside and
// the ring buffer is read from its start. The agent should surface it once.
func (r *Reader) StateError() error { return r.stateErr }

// Batch is records handed over together, in SEQ order.
type Batch struct {
	Records []Record
	// First and Last are the SEQs of the first and last record: the range
	// the batch covers, gaps (records the kernel overwrote) included.
	First, Last uint64
	r           *Reader
	mem         *batchMem
	gen         uint64 // mem's generation when the batch was handed over
}

// batchMem is the memory one batch is parsed into: its records and the
// text their strings point into. A consumer that releases each batch once
// done with it (Batch.Release) has the next batches parsed into the same
// memory, still warm in cache: the reader then neither allocates nor makes
// garbage for the collector, whatever the rate of the log.
type batchMem struct {
	recs []Record
	text arena
	// gen counts the releases, so that a Batch released twice, or a copy of
	// one released after its memory went to another batch, cannot hand the
	// memory back a second time.
	gen atomic.Uint64
}

// keptBatches bounds the released batches' memory the reader keeps for
// the next ones: a burst (a ring buffer of a couple of thousand records
// read at start) is parsed into memory of batches already applied. A
// consumer that has caught up gives all but one back (Trim), and a quiet
// log's batches bring that one down to a record slice of their size and
// one text chunk.
const keptBatches = 4

// Release hands the batch's memory back to the reader, which parses later
// batches into it. Call it when done with the records, after applying
// (and acknowledging) them: from then on the records, and every string in
// them (Message, Subsystem, Device), may be overwritten at any time, so
// copy what is kept (RecordEvent does). A batch that is never released is
// left to the garbage collector; releasing one twice does nothing.
func (b Batch) Release() {
	m := b.mem
	if m == nil || !m.gen.CompareAndSwap(b.gen, b.gen+1) {
		return
	}
	if cap(m.recs) > 64 && len(m.recs) < cap(m.recs)/4 {
		// A batch of a quiet log in the memory of a burst's: the next
		// batch sizes its own rather than keep a burst's worth for good.
		m.recs = nil
	}
	m.recs = m.recs[:0]
	m.text.reset()
	select {
	case b.r.free <- m:
	default:
	}
}

// Trim gives back the memory kept for the batches to come, all but one
// batch's. Call it when the consumer has caught up (Batches is empty after
// a release), so that a quiet log does not keep what a burst needed.
func (r *Reader) Trim() {
	for len(r.free) > 1 {
		select {
		case <-r.free:
		default:
			return
		}
	}
}

// Ack tells the reader that the batch's records have been applied, so a
// restart may resume after Last. See Reader.
func (b Batch) Ack() {
	if b.r != nil {
		b.r.Ack(b.Last)
	}
}

// Batches delivers records in order, in batches. It is closed when Run
// returns. Acknowledge each batch once applied (Batch.Ack), and release it
// once its records are no longer used (Batch.Release).
func (r *Reader) Batches() <-chan Batch { return r.out }

// saveEvery bounds how often acknowledgements are written to the cursor.
const saveEvery = 100 * time.Millisecond

// Ack records that every record up to and including seq has been applied.
// The cursor is written within saveEvery, coalescing acknowledgements in
// between. An older seq than one already acknowledged changes nothing. Safe
// to call from any goroutine.
func (r *Reader) Ack(seq uint64) {
	if r.cfg.StateDir == "" {
		return
	}
	for {
		old := r.acked.Load()
		if seq+1 <= old {
			return
		}
		if r.acked.CompareAndSwap(old, seq+1) {
			break
		}
	}
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	switch {
	case r.closed:
		// After Close nothing else will write it: write it now.
		r.saveLocked()
	case r.saveTmr == nil:
		r.saveTmr = time.AfterFunc(saveEvery, r.save)
	}
}

// AckCheckpoint is Ack with what the consumer made of the records up to
// seq (opaque to the reader): the cursor then saves seq and cp in one
// write, so that after a crash the consumer's state and the position it
// covers match. Once used, use it for every acknowledgement: a plain Ack
// after it does not move the saved cursor past the last checkpoint.
func (r *Reader) AckCheckpoint(seq uint64, cp []byte) {
	if r.cfg.StateDir == "" {
		return
	}
	r.saveMu.Lock()
	if !r.haveCP || seq > r.cpSeq {
		r.cp, r.cpSeq, r.haveCP = cp, seq, true
	}
	r.saveMu.Unlock()
	r.Ack(seq)
}

// Checkpoint is the consumer's checkpoint saved with the cursor of this
// boot (see AckCheckpoint), or nil.
func (r *Reader) Checkpoint() []byte { return r.loadedCP }

// Lost is the number of records the kernel overwrote before they were read.
func (r *Reader) Lost() uint64 { return r.lost.Load() }

// Stats returns the counters.
func (r *Reader) Stats() Stats {
	return Stats{
		Records: r.records.Load(), Lost: r.lost.Load(), Overruns: r.overruns.Load(),
		Dropped: r.dropped.Load(), Malformed: r.malformed.Load(), Truncated: r.truncated.Load(),
		Skipped: r.skipped.Load(), SaveFails: r.saveFails.Load(),
	}
}

var errDrained = errors.New("drained")

// recordBufs keeps read buffers for readers reopened after an error, so the
// buffer is warm in cache rather than fresh memory.
var recordBufs = sync.Pool{New: func() any { b := make([]byte, deviceBuf); return &b }}

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

	// The backlog held at Open while the cursor was checked goes first.
	for i := range r.held {
		r.take(&r.held[i])
	}
	r.held, r.heldText = nil, arena{}
	r.flush()

	rerr := r.readUntil(!r.cfg.NoFollow)
	if !r.perRead {
		r.endStream(errors.Is(rerr, io.EOF))
	}
	r.flush()
	r.close()
	r.save()
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

// readUntil reads on the open source until it has nothing more (follow
// false) or until reading must stop (follow true: the poller waits for
// more). It returns why it stopped; errDrained is the end of what there is.
func (r *Reader) readUntil(follow bool) error {
	if r.rc == nil {
		rc, err := r.f.SyscallConn()
		if err != nil {
			return fmt.Errorf("kernel log %s: %w", r.cfg.Path, err)
		}
		r.rc = rc
	}
	var rerr error
	for rerr == nil {
		err := r.rc.Read(func(fd uintptr) bool {
			rerr = r.readSome(int(fd), follow)
			return rerr != nil
		})
		if err != nil && rerr == nil {
			rerr = err
		}
	}
	return rerr
}

// ReadAvailable reads what the kernel log holds now, from where the reader
// is, hands it over in batches and returns, keeping the device open: a
// reader that polls (or a benchmark's passes) opens it once. It returns nil
// at the end of what there is. Do not call it while Run runs.
func (r *Reader) ReadAvailable() error {
	err := r.readUntil(false)
	if !r.perRead {
		r.pauseStream()
	}
	r.flush()
	if errors.Is(err, errDrained) || errors.Is(err, io.EOF) {
		return nil
	}
	return fmt.Errorf("read kernel log %s: %w", r.cfg.Path, err)
}

// Rewind moves the open device back to the oldest record the kernel still
// holds (lseek SEEK_SET 0 on /dev/kmsg), without reopening it. Records
// already handed over are not handed over again as new: everything up to
// the newest SEQ read is skipped (with RereadSeen, handed over as Seen), as
// a saved cursor is. The SEQ gap the rewind makes is not counted as lost.
// Only the device rewinds; a file or pipe is an error.
func (r *Reader) Rewind() error {
	if !r.perRead {
		return fmt.Errorf("rewind %s: not a kernel log device", r.cfg.Path)
	}
	if _, err := r.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind %s: %w", r.cfg.Path, err)
	}
	if r.haveLast {
		r.resume, r.resuming = r.lastSeq, true
	}
	return nil
}

// readSome reads until the source has nothing more right now. It returns nil
// to wait for more (the caller's poller does that), or why to stop.
func (r *Reader) readSome(fd int, follow bool) error {
	err := r.readBurst(fd)
	if r.perRead {
		r.parseRead()
	}
	if err != syscall.EAGAIN {
		return err // errDrained, io.EOF or a read error
	}
	if !r.perRead {
		r.pauseStream()
	}
	r.flush()
	if !follow {
		return errDrained
	}
	return nil
}

// readBurst reads until the source has nothing more right now (EAGAIN),
// reading must stop (errDrained), or a read fails.
func (r *Reader) readBurst(fd int) error {
	for {
		if r.stopping.Load() {
			return errDrained
		}
		n, err := r.read(fd)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return err
		case err == syscall.EPIPE:
			r.overrun()
			continue
		case err != nil:
			return err
		case n == 0:
			return io.EOF
		}
		if r.perRead {
			r.gotRecord(n)
		} else {
			r.splitStream(r.buf[:n])
		}
	}
}

// The device's records are read back to back into the read buffer and
// parsed together, when the device has nothing more or the buffer is
// nearly full, rather than each right after its read(2): the kernel's work
// in a read takes the caches and the branch history a parse relies on, and
// a record parsed among others costs about half what it costs alone.
const (
	// deviceBuf is the device's read buffer.
	deviceBuf = 32 << 10
	// maxDeviceRecord is the most one read(2) returns (the kernel formats a
	// record for a reader in at most CONSOLE_EXT_LOG_MAX, 8 KiB, dictionary
	// included): a read is made only with that much room, or the kernel
	// refuses it (EINVAL).
	maxDeviceRecord = 8 << 10
)

// gotRecord takes the n bytes the device's last read returned, one record,
// and parses what was read once the buffer has too little room for another.
func (r *Reader) gotRecord(n int) {
	r.pend += n
	r.ends = append(r.ends, r.pend)
	if len(r.buf)-r.pend < maxDeviceRecord {
		r.parseRead()
	}
}

// parseRead parses, in order, the records read and not yet parsed.
func (r *Reader) parseRead() {
	start := 0
	for _, end := range r.ends {
		r.parse(r.buf[start:end])
		start = end
	}
	r.ends, r.pend = r.ends[:0], 0
}

// overrun counts an EPIPE: the kernel overwrote records we had not read and
// moved us to the oldest one left; the SEQ gap on the next record says how
// many were lost.
func (r *Reader) overrun() {
	if c := r.overruns.Add(1); c == 1 || c%100 == 0 {
		r.log.Warn("kernel log overran the reader; records were lost", "path", r.cfg.Path, "overruns", c)
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
	b := r.buf[r.pend:]
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// Bounds on what the stream path keeps of a file or pipe.
const (
	// maxStreamLine bounds one line: past it the rest of the line is
	// discarded up to its newline. It is more than parseRecord looks at, so
	// a line cut here parses as Truncated.
	maxStreamLine = 256 + maxRawText + 1
	// maxStreamRecord bounds a record with its dictionary lines; dictionary
	// lines that do not fit are dropped.
	maxStreamRecord = maxStreamLine + maxDictBytes
)

// splitStream assembles records from a byte stream: a header line followed
// by dictionary lines that begin with a space. A read may end anywhere, in
// the middle of a line included (a pipe's writer paused, a file is being
// appended to): only whole lines reach a record, and the unfinished line is
// kept for the next read. Memory stays bounded whatever the input: a line
// longer than maxStreamLine is kept only up to it.
func (r *Reader) splitStream(b []byte) {
	for len(b) > 0 {
		i := indexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i+1]
		}
		b = b[len(chunk):]
		if room := maxStreamLine - len(r.line); room > 0 {
			r.line = append(r.line, chunk[:min(len(chunk), room)]...)
		}
		if i >= 0 {
			r.endLine()
		}
	}
}

// endLine adds the line just completed to the record being assembled, or
// starts the next record with it.
func (r *Reader) endLine() {
	line := r.line
	r.line = r.line[:0]
	if len(line) == 0 {
		return
	}
	if line[len(line)-1] != '\n' {
		line = append(line, '\n') // cut at maxStreamLine
	}
	switch {
	case line[0] != ' ':
		r.endRecord()
		r.partial = append(r.partial, line...)
	case len(r.partial) > 0:
		if len(r.partial)+len(line) <= maxStreamRecord {
			r.partial = append(r.partial, line...)
		}
	default:
		// A dictionary line with no record before it: its header was
		// malformed, or came before a pause at which the record was handed
		// over without it.
		r.badRecord(fmt.Errorf("%w: dictionary line without a record", ErrMalformed))
	}
}

// pauseStream is called when the source has nothing more for now (EAGAIN).
// The record being assembled is handed over then, rather than held back
// until the next one begins, unless the unfinished line is one of its
// dictionary lines. A writer that pauses exactly between a header and its
// dictionary lines gets the record without them, and the dictionary lines
// counted as malformed.
func (r *Reader) pauseStream() {
	if len(r.line) > 0 && r.line[0] == ' ' {
		return
	}
	r.endRecord()
}

// endRecord parses the record being assembled from its whole lines.
func (r *Reader) endRecord() {
	if len(r.partial) == 0 {
		return
	}
	r.parse(r.partial)
	r.partial = r.partial[:0]
}

// endStream ends the stream path when reading stops. At the end of the
// source (EOF: the end of a file, a pipe whose writers closed it) a last
// line without its newline is complete all the same and is parsed once.
// When reading stops for another reason (the context, a read error) the
// unfinished line may be half a record: a header is counted as malformed,
// half a dictionary line is dropped from its record.
func (r *Reader) endStream(eof bool) {
	switch {
	case len(r.line) == 0:
	case eof:
		r.endLine()
	case r.line[0] != ' ':
		r.endRecord()
		r.badRecord(fmt.Errorf("%w: reading stopped in the middle of a record", ErrMalformed))
	}
	r.line = r.line[:0]
	r.endRecord()
}

func (r *Reader) badRecord(err error) {
	if c := r.malformed.Add(1); c == 1 {
		r.log.Warn("skipping a malformed kernel log record", "path", r.cfg.Path, "err", err)
	}
}

// parse parses one record and takes it. The record is parsed straight into
// the batch's next slot, which only becomes part of the batch when the
// record is handed over.
func (r *Reader) parse(b []byte) {
	if r.holding {
		var rec Record
		if r.parseIntoText(&rec, b, &r.heldText) {
			r.held = append(r.held, rec)
		}
		return
	}
	if r.mem == nil {
		r.startBatch()
	}
	if len(r.batch) == cap(r.batch) {
		r.grow()
	}
	n := len(r.batch)
	rec := &r.batch[:n+1][n]
	if !r.parseIntoText(rec, b, &r.mem.text) || !r.admit(rec) {
		return
	}
	r.batch = r.batch[:n+1]
	if n+1 >= r.cfg.BatchSize {
		r.flush()
	}
}

// parseIntoText parses b into *rec, its strings into text, and counts what
// is wrong with it; false when it did not parse.
func (r *Reader) parseIntoText(rec *Record, b []byte, text *arena) bool {
	if err := parseRecordInto(rec, b, text); err != nil {
		r.badRecord(err)
		return false
	}
	if rec.Truncated {
		if c := r.truncated.Add(1); c == 1 {
			r.log.Warn("truncating an over-long kernel log record", "path", r.cfg.Path, "seq", rec.Seq, "max_bytes", MaxMessageBytes)
		}
	}
	return true
}

// take hands a parsed record over, or skips it.
func (r *Reader) take(rec *Record) {
	if r.admit(rec) {
		r.add(rec)
	}
}

// admit says whether a record is handed over: not when it is at or before
// the cursor (unless RereadSeen, which marks it Seen). It counts SEQ gaps
// as lost.
func (r *Reader) admit(rec *Record) bool {
	if r.resuming && rec.Seq <= r.resume {
		r.nSkipped++
		if r.cfg.RereadSeen {
			rec.Seen = true
			return true
		}
		return false
	}
	r.resuming = false
	if r.haveLast && rec.Seq > r.lastSeq+1 {
		r.lost.Add(rec.Seq - r.lastSeq - 1)
	}
	r.lastSeq, r.haveLast = rec.Seq, true
	return true
}

// grow makes room in the batch for one more record, never past BatchSize
// records (a batch of DefaultBatchSize stays a small allocation).
func (r *Reader) grow() {
	// A new batch is sized like the last one: one record at a time when
	// the log is quiet, whole ring buffers after a restart or in a flood,
	// without regrowing the slice record by record.
	c := max(r.nextCap, 1)
	if cap(r.batch) > 0 {
		c = max(2*cap(r.batch), len(r.batch)+1)
	}
	b := make([]Record, len(r.batch), min(c, max(r.cfg.BatchSize, len(r.batch)+1)))
	copy(b, r.batch)
	r.batch = b
}

// startBatch gives the next batch its memory: a released batch's, or new.
func (r *Reader) startBatch() {
	select {
	case r.mem = <-r.free:
	default:
		r.mem = new(batchMem)
	}
	r.batch = r.mem.recs[:0]
}

// add puts a record in the batch (by pointer: it is copied once, into the
// batch), handing the batch over when full.
func (r *Reader) add(rec *Record) {
	if r.mem == nil {
		r.startBatch()
	}
	if len(r.batch) == cap(r.batch) {
		r.grow()
	}
	r.batch = append(r.batch, *rec)
	if len(r.batch) >= r.cfg.BatchSize {
		r.flush()
	}
}

// flush hands the batch over without waiting: a full queue drops it and
// counts it. The cursor moves only when a batch is acknowledged.
func (r *Reader) flush() {
	if r.nSkipped > 0 {
		r.skipped.Add(r.nSkipped)
		r.nSkipped = 0
	}
	if len(r.batch) == 0 {
		return
	}
	n := uint64(len(r.batch))
	m := r.mem
	m.recs = r.batch // grown, perhaps: its memory is what a release keeps
	b := Batch{Records: r.batch, First: r.batch[0].Seq, Last: r.batch[len(r.batch)-1].Seq, r: r, mem: m, gen: m.gen.Load()}
	select {
	case r.out <- b:
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
		b.Release() // no one else has it
	}
	r.nextCap = min(max(2*len(r.batch), 16), r.cfg.BatchSize)
	r.batch, r.mem = nil, nil
}

// save writes the latest acknowledged SEQ to the cursor, if it moved.
func (r *Reader) save() {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.saveLocked()
}

func (r *Reader) saveLocked() {
	if r.saveTmr != nil {
		r.saveTmr.Stop()
		r.saveTmr = nil
	}
	acked := r.acked.Load()
	c := cursor{BootID: r.bootID, Seq: acked - 1}
	if r.haveCP {
		c.Seq, c.Checkpoint = r.cpSeq, r.cp
		acked = r.cpSeq + 1
	}
	if r.cfg.StateDir == "" || acked == 0 || acked == r.savedSeq {
		return
	}
	if err := saveCursor(r.cfg.StateDir, c); err != nil {
		if c := r.saveFails.Add(1); c == 1 || c%1000 == 0 {
			r.log.Warn("could not save the kernel-log cursor; a restart may report events twice", "err", err, "failures", c)
		}
		return
	}
	r.savedSeq = acked
}

func (r *Reader) close() {
	r.closeOnce.Do(func() { r.closeErr = r.f.Close() })
}

// Close writes the latest acknowledged SEQ to the cursor and releases the
// source. Call it after Run returned and the consumer acknowledged what it
// applied, or instead of Run when Run was never called. An Ack after Close
// is written at once.
func (r *Reader) Close() error {
	r.saveMu.Lock()
	r.closed = true
	r.saveLocked()
	r.saveMu.Unlock()
	r.close()
	if r.closeErr != nil && !strings.Contains(r.closeErr.Error(), "already closed") {
		return r.closeErr
	}
	return nil
}
