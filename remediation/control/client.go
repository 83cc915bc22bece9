package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"syscall"
	"time"
)

// MaxResponse bounds what Call reads back (a list of every rule and its
// ledger can be long; 16 MiB is far beyond any real one).
const MaxResponse = 16 << 20

// Call sends req to the control socket at path and returns the server's
// answer. An answer with ok false is returned together with an *Error
// carrying the server's message; a failure to reach the server or to read
// its answer is another error. Without a deadline on ctx, Call gives up
// after 30 s.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, dialError(path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)

	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	// A refused peer gets its answer without the server reading the request;
	// a failed write is then not the news, the answer is.
	_, werr := c.Write(append(b, '\n'))

	line, err := bufio.NewReader(io.LimitReader(c, MaxResponse)).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		if werr != nil {
			err = werr
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return Response{}, fmt.Errorf("control socket %s: reading the answer: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("control socket %s: malformed answer: %w", path, err)
	}
	if !resp.OK {
		msg := resp.Error
		if msg == "" {
			msg = "request failed (no message)"
		}
		return resp, &Error{Path: path, Msg: msg}
	}
	return resp, nil
}

func dialError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("control socket %s does not exist: is the agent running, as root? (%w)", path, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("control socket %s: nothing is listening: is the agent running? (%w)", path, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("control socket %s: permission denied: it is root only, run as root (%w)", path, err)
	}
	return fmt.Errorf("control socket %s: %w", path, err)
}
