package manifest

import (
	"errors"
	"strings"
)

// Sentinel errors callers branch on with errors.Is. The Verifier returns them
// wrapped in a *VerifyError naming the document and the failed check.
var (
	// ErrBadSignature: a signature by a key of the required role does not
	// verify; the document was altered after signing or signed by someone else.
	ErrBadSignature = errors.New("bad signature")
	// ErrUnknownKey: signatures come from key IDs the trusted root does not know.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrThreshold: fewer distinct keys of the required role signed than the
	// role's threshold (the same key signing twice counts once).
	ErrThreshold = errors.New("signature threshold not met")
	// ErrWrongRole: the document was signed by keys of another role (e.g. a
	// manifest signed by the director key), or is of another kind than expected.
	ErrWrongRole = errors.New("wrong role")
	// ErrWrongDevice: an assignment addressed to another device (mix-and-match).
	ErrWrongDevice = errors.New("assignment for another device")
	// ErrRollback: an assignment whose sequence is not above the last accepted
	// one (replay or rollback), or a root whose version is not above the trusted one.
	ErrRollback = errors.New("rollback or replay")
	// ErrVersionGap: a new root whose version skips ahead of trusted+1;
	// intermediate roots must be applied one by one.
	ErrVersionGap = errors.New("root version gap")
	// ErrExpired: the document (or the trusted root) expired, beyond the clock
	// skew tolerance (freeze attack, or the hub stopped refreshing).
	ErrExpired = errors.New("expired")
	// ErrNoArtifact: the manifest has no artifact for any variant this device runs.
	ErrNoArtifact = errors.New("no artifact for this device")
	// ErrTooLarge: the artifact's declared size is above the configured maximum
	// (endless-data attack).
	ErrTooLarge = errors.New("artifact too large")
	// ErrDocTooLarge: the document is above the configured size limit and was
	// not parsed.
	ErrDocTooLarge = errors.New("document too large")
	// ErrUnknownSchema: the document's schema or type is not one this build knows.
	ErrUnknownSchema = errors.New("unknown schema")
	// ErrMalformed: the document is not valid canonicalisable JSON or violates
	// the format (missing fields, bad values, unknown fields).
	ErrMalformed = errors.New("malformed document")
	// ErrVersionNotNewer: a model manifest whose version is lower than the one
	// last accepted for that model, in an entry without allow_downgrade.
	ErrVersionNotNewer = errors.New("model version not newer")
	// ErrStale: Accept was given a result verified before the verifier's state
	// changed (another Accept, Restore or UpdateRoot); verify the bytes again.
	ErrStale = errors.New("verification result is stale")
)

// VerifyError is a refusal by the Verifier. Err is one of the sentinel errors
// above; errors.Is(err, ErrRollback) and friends see through it.
type VerifyError struct {
	// Kind is the document kind: "root", "model" or "assignment".
	Kind string
	// Name identifies the document as far as it was read, e.g.
	// "device edge-7 sequence 42" or "model vibration@1.2.0"; may be empty.
	Name string
	// Check is the check that failed, e.g. "signatures", "device", "sequence".
	Check string
	// Passed lists the checks that passed before this one, in order.
	Passed []string
	// Err is the sentinel error.
	Err error
	// Msg explains the failure for an operator.
	Msg string
}

// Error renders "<kind> <name>: <check>: <sentinel>: <msg>".
func (e *VerifyError) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind)
	if e.Name != "" {
		b.WriteString(" ")
		b.WriteString(e.Name)
	}
	b.WriteString(": ")
	if e.Check != "" {
		b.WriteString(e.Check)
		b.WriteString(" check failed: ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	return b.String()
}

// Unwrap returns the sentinel error.
func (e *VerifyError) Unwrap() error { return e.Err }

// formatError is the error type of parse and validation failures outside a
// Verifier; it wraps ErrMalformed (or another sentinel) with a message.
type formatError struct {
	err    error
	msg    string
	syntax bool // the input is not JSON at all (not merely refused by a stricter rule)
}

func (e *formatError) Error() string { return e.err.Error() + ": " + e.msg }
func (e *formatError) Unwrap() error { return e.err }

func malformed(msg string) error { return &formatError{err: ErrMalformed, msg: msg} }
