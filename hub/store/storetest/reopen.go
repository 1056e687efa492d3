package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
)

// RunReopen runs the tests of what survives closing a store: sequences,
// rollouts and all other data, and opening an already migrated database
// (also while another Store has it open). open(t, name) opens the database
// called name, creating it empty the first time; opening the same name
// again, in the same top-level test, reaches the same data. The suite closes
// what it opens.
func RunReopen(t *testing.T, open func(t *testing.T, name string) store.Store) {
	mustOpen := func(t *testing.T, name string) store.Store {
		t.Helper()
		s := open(t, name)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	closeStore := func(t *testing.T, s store.Store) {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}

	t.Run("SequencesKeepIncreasing", func(t *testing.T) {
		ctx := t.Context()
		var last uint64
		for round := range 3 {
			s := mustOpen(t, "sequences")
			if round == 0 {
				MustUpsertDevice(t, s, "edge-1")
			}
			for range 5 {
				n, err := s.NextSequence(ctx, "edge-1")
				wantErr(t, "NextSequence", err, nil)
				if n <= last {
					t.Fatalf("round %d: NextSequence = %d after %d", round, n, last)
				}
				last = n
			}
			closeStore(t, s)
		}
		if last != 15 {
			t.Errorf("last sequence %d, want 15", last)
		}
	})

	t.Run("BatchesSurvive", func(t *testing.T) {
		// Sequences drawn in batches and one at a time keep increasing
		// across reopens, and a saved batch is there after reopening.
		ctx := t.Context()
		devices := []string{"edge-1", "edge-2"}
		last := map[string]uint64{}
		for round := range 3 {
			s := mustOpen(t, "batches")
			if round == 0 {
				for _, d := range devices {
					MustUpsertDevice(t, s, d)
				}
			} else {
				for i, d := range devices {
					a, err := s.LastAssignment(ctx, d)
					wantErr(t, "LastAssignment after reopening", err, nil)
					if want := fmt.Sprintf("round %d %s", round-1, d); a.Sequence != last[d] || string(a.Envelope) != want {
						t.Errorf("round %d: %s's last assignment %d %q, want %d %q", round, devices[i], a.Sequence, a.Envelope, last[d], want)
					}
				}
			}
			n, err := s.NextSequence(ctx, "edge-2")
			wantErr(t, "NextSequence", err, nil)
			if n <= last["edge-2"] {
				t.Fatalf("round %d: NextSequence(edge-2) = %d after %d", round, n, last["edge-2"])
			}
			last["edge-2"] = n
			seqs, err := s.NextSequences(ctx, devices)
			wantErr(t, "NextSequences", err, nil)
			var batch []store.SignedAssignment
			for i, d := range devices {
				if seqs[i] <= last[d] {
					t.Fatalf("round %d: NextSequences gave %s %d after %d", round, d, seqs[i], last[d])
				}
				last[d] = seqs[i]
				batch = append(batch, store.SignedAssignment{Device: d, Sequence: seqs[i], Envelope: fmt.Appendf(nil, "round %d %s", round, d)})
			}
			wantErr(t, "SaveAssignments", s.SaveAssignments(ctx, batch), nil)
			closeStore(t, s)
		}
		if want := map[string]uint64{"edge-1": 3, "edge-2": 6}; !sameMap(last, want) {
			t.Errorf("last sequences %v, want %v", last, want)
		}
	})

	t.Run("EnrollTokensStayUsed", func(t *testing.T) {
		ctx := t.Context()
		s := mustOpen(t, "tokens")
		wantErr(t, "CreateEnrollToken", s.CreateEnrollToken(ctx, NewEnrollToken("once", "", map[string]string{"site": "a"})), nil)
		closeStore(t, s)
		s = mustOpen(t, "tokens")
		_, err := s.ConsumeEnrollToken(ctx, TokenHash("once"), "edge-1", T0)
		wantErr(t, "ConsumeEnrollToken after reopening", err, nil)
		closeStore(t, s)
		s = mustOpen(t, "tokens")
		_, err = s.ConsumeEnrollToken(ctx, TokenHash("once"), "edge-2", T0)
		wantErr(t, "ConsumeEnrollToken again after reopening", err, store.ErrConflict)
		if d, err := s.GetDevice(ctx, "edge-1"); err != nil || d.Labels["site"] != "a" {
			t.Errorf("enrolled device after reopening: %+v, %v", d, err)
		}
	})

	t.Run("DataSurvives", func(t *testing.T) {
		ctx := t.Context()
		s := mustOpen(t, "data")
		st := report.State{Labels: map[string]string{"site": "plant-a"},
			Models: map[string]report.Model{"vibration": {Version: "1.0.0", Phase: "active"}}}
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-1", st, T0), nil)
		if _, err := s.SetLabels(ctx, "edge-1", map[string]string{"ring": "canary"}, nil); err != nil {
			t.Fatal(err)
		}
		MustPutRelease(t, s, "vibration", "1.1.0")
		r := NewRollout("vibration", "1.1.0")
		r.Status, r.Wave, r.WaveStarted = store.StatusRunning, 2, T0.Add(time.Minute)
		r.PreviousVersions = map[string]string{"edge-1": "1.0.0"}
		r.AddHistory(T0, "started", "4 waves")
		r.State = json.RawMessage(`{"status":"running","wave":2,"stage":"soaking"}`)
		r, err := s.CreateRollout(ctx, r)
		wantErr(t, "CreateRollout", err, nil)
		p := Payload(T0.Add(time.Second), "vibration", report.ModelTelemetry{Version: "1.0.0", Requests: 7, Latency: Latency(3)})
		wantErr(t, "AddTelemetry", s.AddTelemetry(ctx, "edge-1", p), nil)
		_, err = s.AddEvent(ctx, store.Event{Device: "edge-1", Time: T0, Type: report.EventInstalled})
		wantErr(t, "AddEvent", err, nil)
		seq, _ := s.NextSequence(ctx, "edge-1")
		wantErr(t, "SaveAssignment", s.SaveAssignment(ctx, store.SignedAssignment{Device: "edge-1", Sequence: seq, Envelope: []byte("env")}), nil)
		closeStore(t, s)

		s = mustOpen(t, "data")
		ds, err := s.ListDevices(ctx, store.Selector{"site": "plant-a", "ring": "canary"})
		if err != nil || len(ds) != 1 || ds[0].Models["vibration"].Phase != "active" {
			t.Errorf("device after reopen: %+v, %v", ds, err)
		}
		got, err := s.GetRollout(ctx, r.ID)
		wantErr(t, "GetRollout", err, nil)
		checkRollout(t, "rollout after reopen", got, r)
		if _, err := s.GetRelease(ctx, "vibration", "1.1.0"); err != nil {
			t.Errorf("release after reopen: %v", err)
		}
		if sum, _ := s.QueryTelemetry(ctx, store.TelemetryQuery{Model: "vibration"}); sum.Requests != 7 || sum.Latency.Count != 1 {
			t.Errorf("telemetry after reopen: %+v", sum)
		}
		if es, _ := s.ListEvents(ctx, "edge-1", time.Time{}, 0); len(es) != 1 {
			t.Errorf("events after reopen: %+v", es)
		}
		if a, err := s.LastAssignment(ctx, "edge-1"); err != nil || a.Sequence != seq || string(a.Envelope) != "env" {
			t.Errorf("assignment after reopen: %+v, %v", a, err)
		}
		// The controller resumes the rollout where it was.
		got.Wave = 3
		if _, err := s.UpdateRollout(ctx, got); err != nil {
			t.Errorf("UpdateRollout after reopen: %v", err)
		}
	})

	t.Run("OpenTwice", func(t *testing.T) {
		ctx := t.Context()
		a := mustOpen(t, "twice")
		b := mustOpen(t, "twice") // migrations already applied: nothing to do
		MustUpsertDevice(t, a, "edge-1")
		if _, err := b.GetDevice(ctx, "edge-1"); err != nil {
			t.Errorf("second store does not see the first one's write: %v", err)
		}
		na, err := a.NextSequence(ctx, "edge-1")
		wantErr(t, "NextSequence", err, nil)
		nb, err := b.NextSequence(ctx, "edge-1")
		wantErr(t, "NextSequence", err, nil)
		if na != 1 || nb != 2 {
			t.Errorf("sequences from two stores on one database = %d, %d; want 1, 2", na, nb)
		}
	})
}
