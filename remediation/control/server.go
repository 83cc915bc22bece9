package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Server answers requests on a control socket. The zero value of each
// optional field means its default.
type Server struct {
	// Handler answers remediation's operations; nil: they are answered
	// "remediation is not configured".
	Handler Handler
	// Profiling answers the profiling operations; nil: they are answered
	// that profiling control is unavailable.
	Profiling ProfilingHandler
	Log       *slog.Logger // nil: slog.Default()
	// ReadTimeout bounds the wait for a request line; 0 means 5 s.
	ReadTimeout time.Duration
}

// maxInFlight bounds the root connections answered at once; one more is told
// the server is busy. Refused peers do not count: they are answered at once.
const maxInFlight = 8

// Serve listens on path and answers requests with h until ctx is done. See
// Server.Serve.
func Serve(ctx context.Context, path string, h Handler, log *slog.Logger) error {
	return (&Server{Handler: h, Log: log}).Serve(ctx, path)
}

// Serve listens on path until ctx is done, then removes the socket and
// returns nil once the requests in flight are answered. A missing directory
// is created mode 0700; the socket is mode 0600. A socket file nobody listens
// on (left by a crash) is replaced; a live one is an error naming path, as is
// anything at path that is not a socket.
func (s *Server) Serve(ctx context.Context, path string) error {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := removeStale(path); err != nil {
		return err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	// Between bind and chmod the socket has the umask's mode; no peer gets in
	// through that window, since every connection's credentials are checked.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	log.Info("control socket listening", "path", path)

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	lim := &refusalLog{log: log}
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isTemporary(err) { // EMFILE and the like: wait, do not spin
				log.Warn("control socket accept failed", "path", path, "err", err)
				select {
				case <-time.After(100 * time.Millisecond):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			ln.Close()
			return fmt.Errorf("control socket %s: %w", path, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.answer(conn, lim, slots, log)
		}()
	}
}

func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// removeStale removes a socket file at path that nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control socket %s: exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: another process is listening on it (is another agent running?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control socket: removing a stale socket: %w", err)
	}
	return nil
}

// peer returns the connecting process's credentials as the kernel recorded
// them at connect(2).
func peer(conn *net.UnixConn) (*unix.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, credErr
}

func (s *Server) answer(conn *net.UnixConn, lim *refusalLog, slots chan struct{}, log *slog.Logger) {
	defer conn.Close()
	timeout := s.ReadTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	reply := func(r Response) {
		b, err := json.Marshal(r)
		if err != nil { // a Result is already JSON; this cannot happen
			b = []byte(`{"ok":false,"error":"internal error: response not marshalled"}`)
		}
		conn.SetWriteDeadline(time.Now().Add(timeout))
		conn.Write(append(b, '\n'))
	}
	fail := func(format string, args ...any) { reply(Response{Error: fmt.Sprintf(format, args...)}) }

	cred, err := peer(conn)
	if err != nil {
		log.Warn("control socket: cannot read peer credentials; refusing", "err", err)
		fail("cannot read your credentials (SO_PEERCRED): %v", err)
		return
	}
	if cred.Uid != 0 {
		lim.refused(cred)
		fail("permission denied: uid %d is not root; only root (uid 0) may use the control socket", cred.Uid)
		return
	}
	who := fmt.Sprintf("uid %d pid %d", cred.Uid, cred.Pid)
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	default:
		fail("busy: %d requests already in progress; try again", maxInFlight)
		return
	}

	conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := readLine(conn)
	if err != nil {
		fail("%v", err)
		return
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail("malformed request: %v", err)
		return
	}
	result, err := s.dispatch(req, who, log)
	if err != nil {
		fail("%s: %v", req.Op, err)
		return
	}
	resp := Response{OK: true}
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			fail("%s: result not marshalled: %v", req.Op, err)
			return
		}
		resp.Result = b
	}
	reply(resp)
}

// readLine reads one request line of at most MaxRequest bytes. A request
// ended by the client closing its side instead of a newline is accepted.
func readLine(conn net.Conn) ([]byte, error) {
	br := bufio.NewReaderSize(io.LimitReader(conn, MaxRequest+1), 4096)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxRequest {
			return nil, fmt.Errorf("request over %d KiB refused", MaxRequest>>10)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(bytes.TrimSpace(line)) > 0:
			return line, nil
		case err == io.EOF:
			return nil, errors.New("empty request: send one JSON line")
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, errors.New("no request line within the read deadline")
		default:
			return nil, fmt.Errorf("reading request: %w", err)
		}
	}
}

func (s *Server) dispatch(req Request, who string, log *slog.Logger) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("control socket: handler panicked", "op", req.Op, "panic", p)
			result, err = nil, errors.New("internal error in the handler (logged by the agent)")
		}
	}()
	switch req.Op {
	case OpList, OpAck, OpResetBreaker, OpTest:
		if s.Handler == nil {
			return nil, errors.New("remediation is not configured on this agent (no remediation section in its config)")
		}
	case OpProfilingPause, OpProfilingResume, OpProfilingStatus:
		if s.Profiling == nil {
			return nil, errors.New("profiling control is not available on this agent")
		}
	}
	switch req.Op {
	case OpList:
		return s.Handler.List()
	case OpAck:
		log.Info("control socket: ack", "who", who)
		return nil, s.Handler.Ack(who)
	case OpResetBreaker:
		log.Info("control socket: reset breaker", "who", who)
		return nil, s.Handler.ResetBreaker(who)
	case OpTest:
		if req.Rule == "" {
			return nil, errors.New(`"rule" is required`)
		}
		if len(req.Event) == 0 || string(req.Event) == "null" {
			return nil, errors.New(`"event" is required`)
		}
		return s.Handler.Test(req.Rule, req.Event)
	case OpProfilingPause:
		if req.Duration == "" {
			return nil, errors.New(`"duration" is required`)
		}
		d, err := time.ParseDuration(req.Duration)
		if err != nil {
			return nil, fmt.Errorf(`"duration" %q: %v`, req.Duration, err)
		}
		return s.Profiling.PauseProfiling(d, who)
	case OpProfilingResume:
		return s.Profiling.ResumeProfiling(who)
	case OpProfilingStatus:
		return s.Profiling.ProfilingStatus()
	case "":
		return nil, fmt.Errorf(`"op" is required: one of %s`, strings.Join(ops, ", "))
	default:
		return nil, fmt.Errorf("unknown op %q: want one of %s", req.Op, strings.Join(ops, ", "))
	}
}

var ops = []string{OpList, OpAck, OpResetBreaker, OpTest, OpProfilingPause, OpProfilingResume, OpProfilingStatus}

// refusalLog logs refused peers at most once every ten seconds, with the count
// of refusals since the last line, so a local user cannot flood the log.
type refusalLog struct {
	log *slog.Logger

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *refusalLog) refused(cred *unix.Ucred) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < 10*time.Second {
		r.suppressed++
		return
	}
	r.log.Warn("control socket: refused a non-root peer", "uid", cred.Uid, "pid", cred.Pid,
		"refused_since_last_log", r.suppressed)
	r.last, r.suppressed = now, 0
}
