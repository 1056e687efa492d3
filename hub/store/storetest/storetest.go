// Package storetest is the conformance suite every store.Store
// implementation must pass: the SQLite store runs it against a file in a
// temporary directory, and a PostgreSQL store will run it against a fresh
// database. Tests call Run for the behaviour of one open store and
// RunReopen for what must survive closing and opening the store again.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
)

// T0 is the base time of the suite's data: a whole minute, UTC.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Run runs the conformance suite. newStore must return a new, empty store
// each time it is called; the suite closes it when the test ends (and
// implementations must accept a second Close).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	open := func(t *testing.T) store.Store {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	t.Run("Devices", func(t *testing.T) { testDevices(t, open) })
	t.Run("Selector", func(t *testing.T) { testListDevices(t, open) })
	t.Run("Releases", func(t *testing.T) { testReleases(t, open) })
	t.Run("Rollouts", func(t *testing.T) { testRollouts(t, open) })
	t.Run("Telemetry", func(t *testing.T) { testTelemetry(t, open) })
	t.Run("Events", func(t *testing.T) { testEvents(t, open) })
	t.Run("Assignments", func(t *testing.T) { testAssignments(t, open) })
	t.Run("EnrollTokens", func(t *testing.T) { testEnrollTokens(t, open) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, open) })
	t.Run("ConcurrentUse", func(t *testing.T) { testConcurrentUse(t, open) })
	t.Run("CanceledContext", func(t *testing.T) { testCanceled(t, open) })
}

// testCanceled checks that methods give up on a canceled context and say so.
func testCanceled(t *testing.T, open opener) {
	s := open(t)
	MustUpsertDevice(t, s, "edge-1")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]func() error{
		"UpsertDevice": func() error { return s.UpsertDevice(ctx, "edge-1", T0) },
		"GetDevice":    func() error { _, err := s.GetDevice(ctx, "edge-1"); return err },
		"ListDevices":  func() error { _, err := s.ListDevices(ctx, nil); return err },
		"NextSequence": func() error { _, err := s.NextSequence(ctx, "edge-1"); return err },
		"NextSequences": func() error {
			_, err := s.NextSequences(ctx, []string{"edge-1", "edge-1"})
			return err
		},
		"SaveAssignments": func() error {
			return s.SaveAssignments(ctx, []store.SignedAssignment{{Device: "edge-1", Sequence: 1, Envelope: []byte("x")}})
		},
		"AddTelemetry": func() error {
			return s.AddTelemetry(ctx, "edge-1", Payload(T0, "m", report.ModelTelemetry{Requests: 1}))
		},
		"QueryTelemetry": func() error { _, err := s.QueryTelemetry(ctx, store.TelemetryQuery{}); return err },
		"ConsumeEnrollToken": func() error {
			_, err := s.ConsumeEnrollToken(ctx, TokenHash("t"), "edge-1", T0)
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: %v, want context.Canceled", name, err)
		}
	}
	if n, err := s.NextSequence(t.Context(), "edge-1"); err != nil || n != 1 {
		t.Errorf("NextSequence after the canceled calls = %d, %v; want 1 (nothing drawn)", n, err)
	}
}

// opener returns a new, empty store closed at the end of the test.
type opener func(t *testing.T) store.Store

// MustUpsertDevice registers a device seen at T0, failing the test on error.
func MustUpsertDevice(tb testing.TB, s store.Store, id string) {
	tb.Helper()
	if err := s.UpsertDevice(context.Background(), id, T0); err != nil {
		tb.Fatalf("UpsertDevice(%s): %v", id, err)
	}
}

// MustPutRelease stores an unsigned release name@version created at T0,
// failing the test on error.
func MustPutRelease(tb testing.TB, s store.Store, name, version string) store.Release {
	tb.Helper()
	r := store.Release{
		Name: name, Version: version, Created: T0,
		Manifest: fmt.Appendf(nil, `{"signed":{"name":%q,"version":%q},"signatures":[]}`, name, version),
	}
	if err := s.PutRelease(context.Background(), r); err != nil {
		tb.Fatalf("PutRelease(%s): %v", r.Ref(), err)
	}
	return r
}

// wantErr fails the test unless err matches want (nil: no error).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: error %v, want one wrapping %q", what, err, want)
	}
}

// sameMap compares maps treating nil and empty as equal.
func sameMap[K, V comparable](a, b map[K]V) bool { return len(a) == len(b) && maps.Equal(a, b) }

// sameTime compares times to the microsecond, the precision stores keep.
func sameTime(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}
