package rollout

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrInvalidSpec: a wave list, gate expression or rollout spec breaks the
	// rules; the message names every problem. Returned (wrapped) by
	// ParseWaves, ParseGate, Gate.UnmarshalText and Spec.Validate.
	ErrInvalidSpec = errors.New("invalid rollout spec")
	// ErrNotAllowed: an operator command does not apply to the rollout's
	// current status (resume of a running rollout, pause of a finished one).
	// Returned (wrapped) by CommandAllowed.
	ErrNotAllowed = errors.New("command not allowed")
)

// SyntaxError is a wave list or gate expression that does not parse. It
// wraps ErrInvalidSpec.
type SyntaxError struct {
	// What is "gate" or "waves".
	What string
	// Input is the text as given.
	Input string
	// Column is the 1-based byte position of the problem in Input.
	Column int
	// Msg says what is wrong and what was expected.
	Msg string
}

// Error returns e.g. `gate "error_rate<<0.01": column 12: expected a number, found "<"`.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%s %q: column %d: %s", e.What, e.Input, e.Column, e.Msg)
}

// Unwrap returns ErrInvalidSpec.
func (e *SyntaxError) Unwrap() error { return ErrInvalidSpec }

// SpecError lists every problem Spec.Validate found. It wraps ErrInvalidSpec.
type SpecError struct {
	// Problems are operator-readable, one per broken rule, in field order.
	Problems []string
}

// Error returns "invalid rollout spec: p1; p2; …".
func (e *SpecError) Error() string {
	return ErrInvalidSpec.Error() + ": " + strings.Join(e.Problems, "; ")
}

// Unwrap returns ErrInvalidSpec.
func (e *SpecError) Unwrap() error { return ErrInvalidSpec }
