package storetest

import (
	"bytes"
	"slices"
	"sync"
	"testing"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
)

func testAssignments(t *testing.T, open opener) {
	t.Run("NextSequence", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		_, err := s.NextSequence(ctx, "ghost")
		wantErr(t, "NextSequence unknown device", err, store.ErrNotFound)
		MustUpsertDevice(t, s, "edge-1")
		MustUpsertDevice(t, s, "edge-2")
		for want := uint64(1); want <= 3; want++ {
			got, err := s.NextSequence(ctx, "edge-1")
			wantErr(t, "NextSequence", err, nil)
			if got != want {
				t.Errorf("NextSequence = %d, want %d", got, want)
			}
		}
		if got, _ := s.NextSequence(ctx, "edge-2"); got != 1 {
			t.Errorf("NextSequence of another device = %d, want 1 (per device)", got)
		}
		d, _ := s.GetDevice(ctx, "edge-1")
		if d.Sequence != 3 {
			t.Errorf("Device.Sequence = %d, want 3", d.Sequence)
		}
	})

	t.Run("NextSequenceAboveAccepted", func(t *testing.T) {
		// The device accepted sequence 41 from an earlier hub database (a
		// restored backup): the next one must be above it or the device
		// refuses it as a replay.
		s, ctx := open(t), t.Context()
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-1", report.State{Sequence: 41}, T0), nil)
		if got, _ := s.NextSequence(ctx, "edge-1"); got != 42 {
			t.Errorf("NextSequence = %d, want 42", got)
		}
	})

	t.Run("NextSequenceConcurrent", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustUpsertDevice(t, s, "edge-1")
		const workers, each = 8, 25
		var (
			mu  sync.Mutex
			got []uint64
			wg  sync.WaitGroup
		)
		for range workers {
			wg.Go(func() {
				for range each {
					n, err := s.NextSequence(ctx, "edge-1")
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					got = append(got, n)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		slices.Sort(got)
		for i, n := range got {
			if n != uint64(i+1) {
				t.Fatalf("sequences drawn concurrently: position %d holds %d; want 1..%d each once", i, n, workers*each)
			}
		}
		if len(got) != workers*each {
			t.Errorf("%d sequences, want %d", len(got), workers*each)
		}
	})

	t.Run("SaveLast", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustUpsertDevice(t, s, "edge-1")
		_, err := s.LastAssignment(ctx, "edge-1")
		wantErr(t, "LastAssignment before any", err, store.ErrNotFound)
		save := func(seq uint64, env string) error {
			return s.SaveAssignment(ctx, store.SignedAssignment{Device: "edge-1", Sequence: seq, Envelope: []byte(env)})
		}
		wantErr(t, "SaveAssignment undrawn", save(1, "a1"), store.ErrInvalid)
		for range 3 {
			if _, err := s.NextSequence(ctx, "edge-1"); err != nil {
				t.Fatal(err)
			}
		}
		wantErr(t, "SaveAssignment 2", save(2, "a2"), nil)
		wantErr(t, "SaveAssignment 2 again", save(2, "a2'"), store.ErrConflict)
		wantErr(t, "SaveAssignment 1 after 2", save(1, "a1"), store.ErrConflict)
		wantErr(t, "SaveAssignment 4 (not drawn)", save(4, "a4"), store.ErrInvalid)
		wantErr(t, "SaveAssignment 0", save(0, "a0"), store.ErrInvalid)
		wantErr(t, "SaveAssignment empty", save(3, ""), store.ErrInvalid)
		wantErr(t, "SaveAssignment 3", save(3, "a3"), nil)
		a, err := s.LastAssignment(ctx, "edge-1")
		wantErr(t, "LastAssignment", err, nil)
		if a.Device != "edge-1" || a.Sequence != 3 || !bytes.Equal(a.Envelope, []byte("a3")) || a.Saved.IsZero() {
			t.Errorf("LastAssignment = %+v, want sequence 3 a3 with a saved time", a)
		}
		err = s.SaveAssignment(ctx, store.SignedAssignment{Device: "ghost", Sequence: 1, Envelope: []byte("x")})
		wantErr(t, "SaveAssignment unknown device", err, store.ErrNotFound)
	})
}
