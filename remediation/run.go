package remediation

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// maxOutput is how much of a hook's stdout and stderr together is kept.
const maxOutput = 16 << 10

// Result is what running a hook came to.
type Result struct {
	Argv     []string      `json:"argv"`
	ExitCode int           `json:"exit_code"`
	Duration time.Duration `json:"duration_ns"`
	Output   string        `json:"output,omitempty"` // the first maxOutput bytes
	TimedOut bool          `json:"timed_out,omitempty"`
	Err      string        `json:"error,omitempty"` // could not start, or killed
}

// runHook runs argv with stdin on its standard input and env as its whole
// environment (PATH and LANG fixed), in /, in a process group of its own.
// At the timeout the whole group is killed, children included; output is
// captured up to maxOutput. Nothing is given to a shell.
func runHook(ctx context.Context, argv []string, env map[string]string, stdin []byte, timeout time.Duration) Result {
	res := Result{Argv: argv, ExitCode: -1}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stdin = bytes.NewReader(stdin)
	out := &capped{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group: a hook's children must not outlive its timeout.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// A grandchild holding the output pipe must not hold us up either.
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err := cmd.Run()
	res.Duration = time.Since(start)
	res.Output = out.String()
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() == context.DeadlineExceeded {
		res.TimedOut = true
		res.Err = "timed out after " + timeout.String() + "; its process group was killed"
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever is left of the group
		}
		return res
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		res.Err = err.Error()
	}
	return res
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	buf     bytes.Buffer
	max     int
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		if len(p) <= room {
			c.buf.Write(p)
		} else {
			c.buf.Write(p[:room])
			c.dropped += len(p) - room
		}
	} else {
		c.dropped += len(p)
	}
	return len(p), nil
}

func (c *capped) String() string {
	if c.dropped > 0 {
		return c.buf.String() + "\n...[" + strconv.Itoa(c.dropped) + " more bytes not kept]"
	}
	return c.buf.String()
}
