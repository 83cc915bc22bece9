package fleet

import (
	"context"
	"errors"
	"strings"
)

// Decision is a guard's answer for one action.
type Decision struct {
	Allowed bool
	// Reason says why, naming what was asked and what it answered
	// (the query, its value and the limit; the Lease slots and their
	// holders; the error when the system could not be asked).
	Reason string
	// FailedOpen is set when the action is allowed only because the guard
	// could not ask and was configured to fail open; the engine audits it.
	FailedOpen bool
}

// Release gives back what an allowing Check took (a Lease slot). It is nil
// when there is nothing to give back.
type Release func(ctx context.Context) error

// Guard is asked before a disruptive action. action names it ("drain",
// "reboot") for the reason.
//
// When the Decision allows, the caller calls the Release (if not nil) once
// the action is over, or when it decides not to act after all. The error
// is non-nil only when the guard could not apply its policy (invalid
// configuration, ctx done); the Decision then holds.
type Guard interface {
	Check(ctx context.Context, action string) (Decision, Release, error)
}

// FieldError is a configuration error in one field, named by its YAML key,
// so the caller can point at the file and line it came from.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, msg string) error { return &FieldError{Field: field, Err: errors.New(msg)} }

// All is a Guard that allows only when every guard allows, asking them in
// order. On the first hold or error it releases, in reverse order, what the
// guards before it took, and returns that guard's answer. An allowing
// Decision joins the reasons and fails open when any guard did; its Release
// gives back everything, in reverse order. All() with no guards allows.
func All(guards ...Guard) Guard { return all(guards) }

type all []Guard

func (a all) Check(ctx context.Context, action string) (Decision, Release, error) {
	var (
		releases []Release
		reasons  []string
		open     bool
	)
	giveBack := func(ctx context.Context) error {
		var errs []error
		for i := len(releases) - 1; i >= 0; i-- {
			errs = append(errs, releases[i](ctx))
		}
		return errors.Join(errs...)
	}
	for _, g := range a {
		d, rel, err := g.Check(ctx, action)
		if err != nil || !d.Allowed {
			if rerr := giveBack(context.WithoutCancel(ctx)); rerr != nil {
				d.Reason += "; and giving back what earlier guards took failed: " + rerr.Error()
			}
			d.Allowed = false
			return d, nil, err
		}
		if rel != nil {
			releases = append(releases, rel)
		}
		reasons = append(reasons, d.Reason)
		open = open || d.FailedOpen
	}
	if len(a) == 0 {
		reasons = []string{action + " allowed: no fleet guard configured"}
	}
	d := Decision{Allowed: true, Reason: strings.Join(reasons, "; "), FailedOpen: open}
	if len(releases) == 0 {
		return d, nil, nil
	}
	return d, giveBack, nil
}
