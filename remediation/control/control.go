// Package control is the operator's local control socket: a Unix stream
// socket that only root may use, answering one JSON request per connection.
// Remediation's operations list the rules and breakers, acknowledge, reset
// the circuit breaker and test a rule against an event; profiling's pause,
// resume and report the profiling pause.
//
// Root only is enforced by the kernel's account of the peer (SO_PEERCRED),
// read before a byte of the request is: the socket's file mode (0600) and its
// directory's (0700) are a second fence, not the one that counts.
package control

import (
	"encoding/json"
	"time"
)

// DefaultPath is where the agent listens unless told otherwise.
const DefaultPath = "/run/gpuwarden/control.sock"

// MaxRequest is the largest request line the server reads, newline included.
const MaxRequest = 64 << 10

// The operations a Request may name.
const (
	OpList         = "list"
	OpAck          = "ack"
	OpResetBreaker = "reset-breaker"
	OpTest         = "test"

	OpProfilingPause  = "profiling-pause"
	OpProfilingResume = "profiling-resume"
	OpProfilingStatus = "profiling-status"
)

// Request is one line of JSON from a client.
type Request struct {
	Op    string          `json:"op"`
	Rule  string          `json:"rule,omitempty"`  // for test
	Event json.RawMessage `json:"event,omitempty"` // for test: the event to run the rule on
	// Duration is how long to pause profiling, for profiling-pause: Go's
	// duration syntax ("30m", "2h").
	Duration string `json:"duration,omitempty"`
}

// Response is the server's one line of JSON back.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Handler is what the remediation engine does for each operation. who names
// the caller for the audit log: "uid 0 pid N".
type Handler interface {
	List() (any, error)
	Ack(who string) error
	ResetBreaker(who string) error
	Test(rule string, event json.RawMessage) (any, error)
}

// ProfilingHandler is what the agent does for the profiling operations. who
// names the caller for the audit log, as for Handler.
type ProfilingHandler interface {
	PauseProfiling(d time.Duration, who string) (any, error)
	ResumeProfiling(who string) (any, error)
	ProfilingStatus() (any, error)
}

// Error is a request the server answered with ok false: refused, malformed,
// or failed in the handler. Msg is the server's message.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string { return "control socket " + e.Path + ": " + e.Msg }
