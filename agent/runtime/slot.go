package runtime

import (
	"context"
	"fmt"
	"sync/atomic"
)

// Slot is the serving pointer of one model name: the session requests for
// that name go to, and its version. The reconcile loop loads and warms a
// new session, [Slot.Swap]s it in, and closes the old one; requests already
// on the old session finish there, later ones get the new session, and none
// fails in between.
//
// The zero Slot is empty and ready to use; a Slot must not be copied after
// first use. All methods are safe for concurrent use, and the request path
// ([Slot.Acquire], [Slot.Run]) takes no lock: one atomic load plus the
// session's hold count.
type Slot struct {
	cur atomic.Pointer[slotEntry]
}

// slotEntry is what a Slot points at; it is never modified.
type slotEntry struct {
	s       *Session
	version string
}

// Acquire returns the current session and its version, with a hold on the
// session: until release is called, [Session.Close] waits, so the session
// stays usable, through the returned handle, even if it is swapped out and
// its Close has begun meanwhile. Call release when done with s (later calls
// do nothing); after release, s is an ordinary handle, whose Runs fail with
// [ErrClosed] once the session closes. ok is false, and release a no-op,
// when the slot is empty or its session was closed without being swapped
// out first.
//
// s is a handle of its own, not the *Session given to [Slot.Swap]; it
// shares that session's model, and closing it closes the model.
func (sl *Slot) Acquire() (s *Session, version string, release func(), ok bool) {
	e, _ := sl.acquire()
	if e == nil {
		return nil, "", func() {}, false
	}
	h := &Session{m: e.s.m, lease: new(lease)}
	return h, e.version, h.releaseLease, true
}

// acquire returns the current entry with a hold on its session, or nil and
// the reason.
func (sl *Slot) acquire() (*slotEntry, error) {
	for {
		e := sl.cur.Load()
		if e == nil {
			return nil, ErrNotLoaded
		}
		if e.s.m.hold() {
			return e, nil
		}
		// The session is closing. Closing follows the swap that replaced
		// it, so the slot has moved on: try again with the new entry. If it
		// has not, the session was closed while still serving.
		if sl.cur.Load() == e {
			return nil, ErrClosed
		}
	}
}

// Swap makes s, with its version, the session new requests get, and
// returns the previous one ("" and nil when the slot was empty). A nil s
// empties the slot, for idle unload. The caller owns old and should Close
// it, which waits for the requests still on it.
func (sl *Slot) Swap(s *Session, version string) (old *Session, oldVersion string) {
	var e *slotEntry
	if s != nil {
		e = &slotEntry{s: s, version: version}
	}
	prev := sl.cur.Swap(e)
	if prev == nil {
		return nil, ""
	}
	return prev.s, prev.version
}

// Version returns the version of the current session, and false when the
// slot is empty.
func (sl *Slot) Version() (string, bool) {
	e := sl.cur.Load()
	if e == nil {
		return "", false
	}
	return e.version, true
}

// Run runs inputs on the current session, as [Session.Run] does, and
// returns the outputs with the version that computed them (also on error,
// when a session was reached). Errors are those of [Session.Run], plus
// [ErrNotLoaded] when the slot is empty. [ErrClosed] comes only from a
// session closed while still in the slot, never from a swap.
func (sl *Slot) Run(ctx context.Context, inputs map[string]Tensor) (outputs map[string]Tensor, version string, err error) {
	e, err := sl.acquire()
	if e == nil {
		return nil, "", fmt.Errorf("run: %w", err)
	}
	defer e.s.m.release()
	outputs, err = e.s.m.run(ctx, inputs)
	return outputs, e.version, err
}
