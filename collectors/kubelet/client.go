package kubelet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultSocket is where the kubelet serves the pod-resources API.
const DefaultSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// DefaultTimeout bounds one List call: dial, request, answer and trailers.
const DefaultTimeout = 2 * time.Second

// listPath is the gRPC method: /<package>.<service>/<method>.
const listPath = "/v1.PodResourcesLister/List"

// Client calls the kubelet's PodResourcesLister on a unix socket. Its zero
// value with Socket set is ready; it keeps one HTTP/2 connection open
// between calls.
type Client struct {
	Socket  string
	Timeout time.Duration // per call; DefaultTimeout when 0

	once sync.Once
	tr   *http.Transport
}

func (c *Client) transport() *http.Transport {
	c.once.Do(func() {
		// HTTP/2 with prior knowledge over the socket (h2c), as gRPC
		// speaks it; net/http does this itself, without x/net.
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		var d net.Dialer
		c.tr = &http.Transport{
			Protocols: &p,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", c.Socket)
			},
			MaxResponseHeaderBytes: 64 << 10,
			IdleConnTimeout:        time.Minute,
			DisableCompression:     true,
		}
	})
	return c.tr
}

// Close drops the kept connection.
func (c *Client) Close() {
	if c.tr != nil {
		c.tr.CloseIdleConnections()
	}
}

// List asks the kubelet for every pod's devices. A missing socket is an
// error for which errors.Is(err, fs.ErrNotExist) holds; an answer that
// breaks the limits, ErrRejected; a gRPC failure, a *StatusError.
func (c *Client) List(ctx context.Context) ([]Pod, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pods, err := c.list(ctx)
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		c.Close() // a peer that hangs once gets a fresh connection next time
		return nil, fmt.Errorf("kubelet pod-resources %s: no answer within %s", c.Socket, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("kubelet pod-resources %s: %w", c.Socket, err)
	}
	return pods, nil
}

func (c *Client) list(ctx context.Context) ([]Pod, error) {
	// An empty ListPodResourcesRequest: an uncompressed frame of length 0.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost"+listPath, bytes.NewReader(make([]byte, 5)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	// No grpc-timeout header: a gRPC server would reset the stream at that
	// deadline, a hair before ours, and the error would read as the peer
	// cancelling rather than as no answer in time. List is cheap to finish.
	resp, err := c.transport().RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, reject("HTTP status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc") {
		return nil, reject("content type %q is not gRPC", clip(ct))
	}
	// A failure with no answer comes as headers only ("trailers-only").
	if s := resp.Header.Get("Grpc-Status"); s != "" {
		return nil, grpcStatus(s, resp.Header.Get("Grpc-Message"))
	}
	var head [5]byte
	if _, err := io.ReadFull(resp.Body, head[:]); err != nil {
		if errors.Is(err, io.EOF) {
			// No message: the outcome is in the trailers.
			return nil, trailerStatus(resp, errors.New("no message and no grpc-status"))
		}
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if head[0] != 0 {
		return nil, reject("the answer is compressed (flag %d); none was asked for", head[0])
	}
	n := binary.BigEndian.Uint32(head[1:])
	if n > MaxResponse {
		return nil, reject("the answer is %d bytes, over the %d-byte limit", n, MaxResponse)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, msg); err != nil {
		return nil, fmt.Errorf("reading the %d-byte answer: %w", n, err)
	}
	// A unary call answers one message; the body must end here, and the
	// trailers are read at its end.
	var extra [1]byte
	if k, err := io.ReadFull(resp.Body, extra[:]); k > 0 {
		return nil, reject("more than one message in a unary answer")
	} else if !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading the answer's end: %w", err)
	}
	if err := trailerStatus(resp, nil); err != nil {
		return nil, err
	}
	return DecodeList(msg)
}

// trailerStatus is the call's outcome from the grpc-status trailer; without
// one, missing.
func trailerStatus(resp *http.Response, missing error) error {
	s := resp.Trailer.Get("Grpc-Status")
	if s == "" {
		if missing != nil {
			return missing
		}
		return reject("no grpc-status trailer")
	}
	return grpcStatus(s, resp.Trailer.Get("Grpc-Message"))
}

// StatusError is a gRPC status other than OK.
type StatusError struct {
	Code    int // gRPC's code: 12 unimplemented, 14 unavailable, ...
	Message string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("gRPC status %d", e.Code)
	}
	return fmt.Sprintf("gRPC status %d: %q", e.Code, e.Message)
}

func grpcStatus(code, msg string) error {
	c, err := strconv.Atoi(code)
	if err != nil || c < 0 || c > 16 {
		return reject("grpc-status %q is not a gRPC code", clip(code))
	}
	if c == 0 {
		return nil
	}
	// grpc-message is percent-encoded; an undecodable one is kept as sent.
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	if len(msg) > 256 {
		msg = msg[:256]
	}
	return &StatusError{Code: c, Message: msg}
}
