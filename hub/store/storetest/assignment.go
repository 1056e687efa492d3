package storetest

import (
	"bytes"
	"errors"
	"slices"
	"strings"
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

	t.Run("NextSequencesBatch", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustUpsertDevice(t, s, "edge-1")
		MustUpsertDevice(t, s, "edge-2")
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-3", report.State{Sequence: 41}, T0), nil)
		if got, err := s.NextSequences(ctx, nil); err != nil || len(got) != 0 {
			t.Errorf("NextSequences of no devices = %v, %v; want none", got, err)
		}
		// Batches and single draws interleave; a device listed twice draws
		// twice; the accepted sequence of edge-3 is the floor.
		last := map[string]uint64{}
		draws := [][]string{
			{"edge-1", "edge-2", "edge-3"},
			{"edge-1"},
			{"edge-2", "edge-1", "edge-2"},
			{"edge-3"},
			{"edge-3", "edge-1"},
		}
		for i, devices := range draws {
			var got []uint64
			if i%2 == 1 {
				n, err := s.NextSequence(ctx, devices[0])
				wantErr(t, "NextSequence", err, nil)
				got = []uint64{n}
			} else {
				var err error
				got, err = s.NextSequences(ctx, devices)
				wantErr(t, "NextSequences", err, nil)
			}
			if len(got) != len(devices) {
				t.Fatalf("draw %d %v: %d sequences, want %d", i, devices, len(got), len(devices))
			}
			for j, dev := range devices {
				if got[j] <= last[dev] {
					t.Errorf("draw %d: %s got %d after %d; want strictly increasing", i, dev, got[j], last[dev])
				}
				last[dev] = got[j]
			}
		}
		want := map[string]uint64{"edge-1": 4, "edge-2": 3, "edge-3": 44}
		if !sameMap(last, want) {
			t.Errorf("last sequences %v, want %v (one step per draw)", last, want)
		}
		for dev, seq := range want {
			if d, _ := s.GetDevice(ctx, dev); d.Sequence != seq {
				t.Errorf("%s: Device.Sequence = %d, want %d", dev, d.Sequence, seq)
			}
		}
	})

	t.Run("NextSequencesAllOrNothing", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustUpsertDevice(t, s, "edge-1")
		MustUpsertDevice(t, s, "edge-2")
		got, err := s.NextSequences(ctx, []string{"edge-1", "ghost", "edge-2"})
		wantErr(t, "NextSequences with an unknown device", err, store.ErrNotFound)
		if got != nil {
			t.Errorf("NextSequences failed but returned %v", got)
		}
		if !strings.Contains(err.Error(), "ghost") {
			t.Errorf("error %q does not name the unknown device", err)
		}
		// Nothing was drawn, not even for the devices before the unknown one.
		got, err = s.NextSequences(ctx, []string{"edge-2", "edge-1"})
		wantErr(t, "NextSequences", err, nil)
		if !slices.Equal(got, []uint64{1, 1}) {
			t.Errorf("NextSequences after a failed batch = %v, want [1 1]", got)
		}
	})

	t.Run("SaveAssignmentsBatch", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		devices := []string{"edge-1", "edge-2", "edge-3"}
		for _, d := range devices {
			MustUpsertDevice(t, s, d)
		}
		wantErr(t, "SaveAssignments of none", s.SaveAssignments(ctx, nil), nil)
		seqs, err := s.NextSequences(ctx, devices)
		wantErr(t, "NextSequences", err, nil)
		var batch []store.SignedAssignment
		for i, d := range devices {
			batch = append(batch, store.SignedAssignment{Device: d, Sequence: seqs[i], Envelope: []byte("b1-" + d)})
		}
		wantErr(t, "SaveAssignments", s.SaveAssignments(ctx, batch), nil)
		for i, d := range devices {
			a, err := s.LastAssignment(ctx, d)
			wantErr(t, "LastAssignment", err, nil)
			if a.Sequence != seqs[i] || string(a.Envelope) != "b1-"+d || a.Saved.IsZero() {
				t.Errorf("LastAssignment(%s) = %+v, want sequence %d b1-%s with a saved time", d, a, seqs[i], d)
			}
		}
		// A device twice in one batch: saved in order, the later one last.
		two, err := s.NextSequences(ctx, []string{"edge-1", "edge-1"})
		wantErr(t, "NextSequences", err, nil)
		wantErr(t, "SaveAssignments with a device twice", s.SaveAssignments(ctx, []store.SignedAssignment{
			{Device: "edge-1", Sequence: two[0], Envelope: []byte("first")},
			{Device: "edge-1", Sequence: two[1], Envelope: []byte("second")},
		}), nil)
		if a, _ := s.LastAssignment(ctx, "edge-1"); a.Sequence != two[1] || string(a.Envelope) != "second" {
			t.Errorf("LastAssignment(edge-1) = %d %s, want %d second", a.Sequence, a.Envelope, two[1])
		}
		// A single save after a batch still has to go above it.
		err = s.SaveAssignment(ctx, store.SignedAssignment{Device: "edge-2", Sequence: seqs[1], Envelope: []byte("again")})
		wantErr(t, "SaveAssignment at the batch's sequence", err, store.ErrConflict)
	})

	t.Run("SaveAssignmentsAllOrNothing", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		devices := []string{"edge-1", "edge-2", "edge-3"}
		for _, d := range devices {
			MustUpsertDevice(t, s, d)
		}
		seqs, err := s.NextSequences(ctx, devices)
		wantErr(t, "NextSequences", err, nil)
		wantErr(t, "SaveAssignment edge-3", s.SaveAssignment(ctx, store.SignedAssignment{Device: "edge-3", Sequence: seqs[2], Envelope: []byte("kept")}), nil)
		good := func(i int) store.SignedAssignment {
			return store.SignedAssignment{Device: devices[i], Sequence: seqs[i], Envelope: []byte("new")}
		}
		for _, c := range []struct {
			name string
			bad  store.SignedAssignment
			want error
		}{
			{"undrawn sequence", store.SignedAssignment{Device: "edge-3", Sequence: seqs[2] + 1, Envelope: []byte("x")}, store.ErrInvalid},
			{"sequence not above the saved", good(2), store.ErrConflict},
			{"unknown device", store.SignedAssignment{Device: "ghost", Sequence: 1, Envelope: []byte("x")}, store.ErrNotFound},
			{"empty envelope", store.SignedAssignment{Device: "edge-3", Sequence: seqs[2], Envelope: nil}, store.ErrInvalid},
			{"same device, lower sequence later", store.SignedAssignment{Device: "edge-1", Sequence: seqs[0], Envelope: []byte("x")}, store.ErrConflict},
		} {
			err := s.SaveAssignments(ctx, []store.SignedAssignment{good(0), good(1), c.bad})
			wantErr(t, "SaveAssignments with "+c.name, err, c.want)
			if !strings.Contains(err.Error(), c.bad.Device) {
				t.Errorf("%s: error %q does not name device %s", c.name, err, c.bad.Device)
			}
			for _, d := range devices[:2] {
				if a, err := s.LastAssignment(ctx, d); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("%s: %s was saved (%+v, %v) although its batch failed", c.name, d, a, err)
				}
			}
			if a, _ := s.LastAssignment(ctx, "edge-3"); a.Sequence != seqs[2] || string(a.Envelope) != "kept" {
				t.Errorf("%s: edge-3's saved assignment changed to %d %s", c.name, a.Sequence, a.Envelope)
			}
		}
		// The same batch without the bad one goes through.
		wantErr(t, "SaveAssignments", s.SaveAssignments(ctx, []store.SignedAssignment{good(0), good(1)}), nil)
	})

	t.Run("BatchesConcurrent", func(t *testing.T) {
		// Batches and single draws from many goroutines: every sequence of
		// every device is drawn exactly once.
		s, ctx := open(t), t.Context()
		devices := []string{"edge-1", "edge-2", "edge-3"}
		for _, d := range devices {
			MustUpsertDevice(t, s, d)
		}
		const workers, each = 8, 10
		var (
			mu  sync.Mutex
			got = map[string][]uint64{}
			wg  sync.WaitGroup
		)
		for w := range workers {
			wg.Go(func() {
				for range each {
					var (
						ds   = devices
						seqs []uint64
						err  error
					)
					if w%2 == 0 {
						ds = devices[w%3 : w%3+1]
						var n uint64
						n, err = s.NextSequence(ctx, ds[0])
						seqs = []uint64{n}
					} else {
						seqs, err = s.NextSequences(ctx, ds)
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for i, d := range ds {
						got[d] = append(got[d], seqs[i])
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, d := range devices {
			seqs := got[d]
			slices.Sort(seqs)
			for i, n := range seqs {
				if n != uint64(i+1) {
					t.Fatalf("%s: position %d holds %d; want 1..%d each once", d, i, n, len(seqs))
				}
			}
		}
	})
}
