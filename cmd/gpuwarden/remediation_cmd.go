package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/remediation/control"
)

// newRemediationCmd is the operator's side of the agent's control socket:
// each subcommand is one request (see remediation/control).
func newRemediationCmd() *cobra.Command {
	cmd, c := newControlCmd("remediation",
		"Ask the running agent's remediation engine: list rules, acknowledge, reset the breaker, test a rule",
		`  list                          the rules, their ledger and the circuit breaker
  ack                           acknowledge what remediation has done
  reset-breaker                 close an open circuit breaker
  test RULE --event FILE.json   what RULE would do for the event in FILE ("-": stdin)

--output json prints the agent's answer as one JSON line.`)
	call := func(cmd *cobra.Command, req control.Request, done string) error {
		return c.call(cmd, "remediation", req, done)
	}
	simple := func(op, short, done string) *cobra.Command {
		return &cobra.Command{
			Use:   op,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return call(cmd, control.Request{Op: op}, done)
			},
		}
	}
	var eventFile string
	test := &cobra.Command{
		Use:   "test RULE --event FILE.json",
		Short: "Show what a rule would do for an event, without doing it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ev, err := readEvent(eventFile, cmd.InOrStdin())
			if err != nil {
				return err
			}
			return call(cmd, control.Request{Op: control.OpTest, Rule: args[0], Event: ev}, "")
		},
	}
	test.Flags().StringVar(&eventFile, "event", "", `File holding the event as JSON ("-": stdin).`)
	test.MarkFlagRequired("event")

	cmd.AddCommand(
		simple(control.OpList, "List the rules, their ledger and the circuit breaker", ""),
		simple(control.OpAck, "Acknowledge what remediation has done", "acknowledged"),
		simple(control.OpResetBreaker, "Close an open circuit breaker", "circuit breaker reset"),
		test,
	)
	return cmd
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// readEvent reads the JSON event for test from name, or from stdin for "-".
func readEvent(name string, stdin io.Reader) (json.RawMessage, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("--event: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, control.MaxRequest+1))
	if err != nil {
		return nil, fmt.Errorf("--event %s: %w", name, err)
	}
	if len(b) > control.MaxRequest {
		return nil, fmt.Errorf("--event %s: over %d KiB, the control socket's limit", name, control.MaxRequest>>10)
	}
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		return nil, fmt.Errorf("--event %s: not JSON: %v", name, err)
	}
	return json.RawMessage(bytes.TrimSpace(b)), nil
}

// printRemediation prints an answer: in text, the result indented (or done
// when there is none); in json, the whole answer on one line.
func printRemediation(w io.Writer, output string, resp control.Response, done string) error {
	if output == "json" {
		b, err := json.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	if len(resp.Result) == 0 {
		if done == "" {
			done = "ok"
		}
		_, err := fmt.Fprintln(w, done)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, resp.Result, "", "  "); err != nil {
		return fmt.Errorf("the agent's answer: %w", err)
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}

// controlClient is what every command that talks to the agent's control
// socket shares: the --socket and --output flags, and one request.
type controlClient struct {
	socket, output string
}

// newControlCmd is such a command, with long naming its subcommands (the
// socket and its default come first).
func newControlCmd(name, short, long string) (*cobra.Command, *controlClient) {
	c := &controlClient{}
	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		Long: name + ` talks to the running agent over its control socket (--socket,
default ` + control.DefaultPath + `), which only root may use.

` + long,
		Args: cobra.NoArgs,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if c.output != "text" && c.output != "json" {
				return fmt.Errorf("--output %q: want text or json", c.output)
			}
			return nil
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.socket, "socket", control.DefaultPath, "The agent's control socket.")
	pf.StringVarP(&c.output, "output", "o", "text", "Output format: text or json (the answer as one JSON line).")
	return cmd, c
}

// call sends one request and prints the answer; done is what to say for
// an answer without a result.
func (c *controlClient) call(cmd *cobra.Command, name string, req control.Request, done string) error {
	resp, err := control.Call(cmdContext(cmd), c.socket, req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", name, req.Op, err)
	}
	return printRemediation(cmd.OutOrStdout(), c.output, resp, done)
}
