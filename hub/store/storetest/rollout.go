package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/manifest"
)

// NewRollout returns a valid pending rollout of model@version.
func NewRollout(model, version string) store.Rollout {
	return store.Rollout{
		Model: model, Version: version, Selector: store.Selector{"site": "plant-a"},
		Waves: []int{1, 10, 50, 100}, SoakSeconds: 300,
		Gates: []string{"error_rate<0.01", "p95_latency_ms<50"},
		Mode:  manifest.ModeActive, OnFailure: store.OnFailureRollback, Status: store.StatusPending,
	}
}

func testRollouts(t *testing.T, open opener) {
	t.Run("CreateGetUpdate", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustPutRelease(t, s, "vibration", "1.1.0")
		in := NewRollout("vibration", "1.1.0")
		r, err := s.CreateRollout(ctx, in)
		wantErr(t, "CreateRollout", err, nil)
		if r.ID == 0 || r.Revision != 1 || r.Created.IsZero() || !r.Updated.Equal(r.Created) {
			t.Fatalf("CreateRollout = ID %d revision %d created %v updated %v; want ID, revision 1, times", r.ID, r.Revision, r.Created, r.Updated)
		}
		checkRollout(t, "created", r, in)

		got, err := s.GetRollout(ctx, r.ID)
		wantErr(t, "GetRollout", err, nil)
		checkRollout(t, "read back", got, r)

		// The controller starts the first wave.
		got.Status, got.Wave, got.WaveStarted = store.StatusRunning, 1, T0.Add(time.Minute)
		got.PreviousVersions = map[string]string{"edge-1": "1.0.0", "edge-2": ""}
		got.InstallTimeoutSeconds = 900
		got.State = json.RawMessage(`{"status":"running","wave":1,"devices":{"edge-1":{"wave":0,"previous":"1.0.0"}}}`)
		got.AddHistory(T0.Add(time.Minute), "wave", "wave 2 (10%): 3 devices")
		updated, err := s.UpdateRollout(ctx, got)
		wantErr(t, "UpdateRollout", err, nil)
		if updated.Revision != 2 || updated.Updated.Before(r.Updated) || !updated.Created.Equal(r.Created) {
			t.Errorf("UpdateRollout = revision %d updated %v created %v", updated.Revision, updated.Updated, updated.Created)
		}
		want := got.Clone()
		want.ID = 0 // the store sets Revision and Updated
		checkRollout(t, "updated", updated, want)
		again, _ := s.GetRollout(ctx, r.ID)
		checkRollout(t, "updated, read back", again, updated)
		if again.Revision != 2 {
			t.Errorf("stored revision %d, want 2", again.Revision)
		}

		_, err = s.GetRollout(ctx, r.ID+100)
		wantErr(t, "GetRollout unknown", err, store.ErrNotFound)
		ghost := updated
		ghost.ID += 100
		_, err = s.UpdateRollout(ctx, ghost)
		wantErr(t, "UpdateRollout unknown", err, store.ErrNotFound)
		other := updated
		other.Version = "2.0.0"
		_, err = s.UpdateRollout(ctx, other)
		wantErr(t, "UpdateRollout changing the version", err, store.ErrInvalid)
	})

	t.Run("StaleRevision", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustPutRelease(t, s, "vibration", "1.1.0")
		r, err := s.CreateRollout(ctx, NewRollout("vibration", "1.1.0"))
		wantErr(t, "CreateRollout", err, nil)
		a, b := r.Clone(), r.Clone()
		a.Status = store.StatusPaused
		if _, err := s.UpdateRollout(ctx, a); err != nil {
			t.Fatal(err)
		}
		b.Status = store.StatusAborted
		_, err = s.UpdateRollout(ctx, b)
		wantErr(t, "UpdateRollout with a stale revision", err, store.ErrConflict)
		got, _ := s.GetRollout(ctx, r.ID)
		if got.Status != store.StatusPaused || got.Revision != 2 {
			t.Errorf("after the refused write: status %s revision %d; want paused 2", got.Status, got.Revision)
		}
	})

	t.Run("ConcurrentUpdatesLoseNothing", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustPutRelease(t, s, "vibration", "1.1.0")
		r, err := s.CreateRollout(ctx, NewRollout("vibration", "1.1.0"))
		wantErr(t, "CreateRollout", err, nil)
		const writers, each = 4, 5
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					for {
						cur, err := s.GetRollout(ctx, r.ID)
						if err != nil {
							errs <- err
							return
						}
						cur.AddHistory(T0, "note", fmt.Sprintf("writer %d entry %d", w, i))
						_, err = s.UpdateRollout(ctx, cur)
						if errors.Is(err, store.ErrConflict) {
							continue // someone else wrote first: read again
						}
						if err != nil {
							errs <- err
							return
						}
						break
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		got, _ := s.GetRollout(ctx, r.ID)
		if len(got.History) != writers*each || got.Revision != writers*each+1 {
			t.Errorf("after %d updates: %d history entries, revision %d; want %d and %d",
				writers*each, len(got.History), got.Revision, writers*each, writers*each+1)
		}
	})

	t.Run("OneUnfinishedPerModel", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustPutRelease(t, s, "vibration", "1.1.0")
		MustPutRelease(t, s, "vibration", "1.2.0")
		MustPutRelease(t, s, "camera", "1.0.0")
		first, err := s.CreateRollout(ctx, NewRollout("vibration", "1.1.0"))
		wantErr(t, "CreateRollout", err, nil)
		_, err = s.CreateRollout(ctx, NewRollout("vibration", "1.2.0"))
		wantErr(t, "second unfinished rollout", err, store.ErrConflict)
		_, err = s.CreateRollout(ctx, NewRollout("camera", "1.0.0"))
		wantErr(t, "rollout of another model", err, nil)
		done := NewRollout("vibration", "1.2.0")
		done.Status = store.StatusAborted
		_, err = s.CreateRollout(ctx, done)
		wantErr(t, "finished rollout beside an unfinished one", err, nil)

		first.Status = store.StatusSucceeded
		if _, err := s.UpdateRollout(ctx, first); err != nil {
			t.Fatal(err)
		}
		second, err := s.CreateRollout(ctx, NewRollout("vibration", "1.2.0"))
		wantErr(t, "rollout after the first finished", err, nil)
		first, _ = s.GetRollout(ctx, first.ID)
		first.Status = store.StatusRunning
		_, err = s.UpdateRollout(ctx, first)
		wantErr(t, "resuming a finished rollout beside an unfinished one", err, store.ErrConflict)
		_ = second
	})

	t.Run("UnknownRelease", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		_, err := s.CreateRollout(ctx, NewRollout("vibration", "9.9.9"))
		wantErr(t, "CreateRollout", err, store.ErrNotFound)
	})

	t.Run("Invalid", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustPutRelease(t, s, "vibration", "1.1.0")
		tests := []struct {
			name   string
			change func(*store.Rollout)
		}{
			{"no waves", func(r *store.Rollout) { r.Waves = nil }},
			{"wave above 100", func(r *store.Rollout) { r.Waves = []int{50, 101} }},
			{"wave of 0", func(r *store.Rollout) { r.Waves = []int{0, 100} }},
			{"waves not increasing", func(r *store.Rollout) { r.Waves = []int{10, 10, 100} }},
			{"negative soak", func(r *store.Rollout) { r.SoakSeconds = -1 }},
			{"empty gate", func(r *store.Rollout) { r.Gates = []string{" "} }},
			{"unknown mode", func(r *store.Rollout) { r.Mode = "canary" }},
			{"unknown on-failure", func(r *store.Rollout) { r.OnFailure = "ignore" }},
			{"unknown status", func(r *store.Rollout) { r.Status = "done" }},
			{"wave index out of range", func(r *store.Rollout) { r.Wave = 4 }},
			{"bad selector", func(r *store.Rollout) { r.Selector = store.Selector{"site": ""} }},
			{"not semver", func(r *store.Rollout) { r.Version = "latest" }},
			{"negative install timeout", func(r *store.Rollout) { r.InstallTimeoutSeconds = -1 }},
			{"state not JSON", func(r *store.Rollout) { r.State = json.RawMessage(`{"status":`) }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := NewRollout("vibration", "1.1.0")
				tt.change(&r)
				_, err := s.CreateRollout(ctx, r)
				wantErr(t, "CreateRollout", err, store.ErrInvalid)
			})
		}
		if rs, err := s.ListRollouts(ctx); err != nil || len(rs) != 0 {
			t.Errorf("ListRollouts after invalid creates = %d, %v; want none", len(rs), err)
		}
	})

	t.Run("List", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		var ids []int64
		for i, st := range []store.RolloutStatus{store.StatusSucceeded, store.StatusRolledBack, store.StatusRunning, store.StatusPaused} {
			v := fmt.Sprintf("1.%d.0", i)
			MustPutRelease(t, s, fmt.Sprintf("m%d", i%3), v)
			r := NewRollout(fmt.Sprintf("m%d", i%3), v)
			r.Status = st
			got, err := s.CreateRollout(ctx, r)
			wantErr(t, "CreateRollout", err, nil)
			ids = append(ids, got.ID)
		}
		tests := []struct {
			name     string
			statuses []store.RolloutStatus
			want     []int64
		}{
			{"all, newest first", nil, []int64{ids[3], ids[2], ids[1], ids[0]}},
			{"unfinished", []store.RolloutStatus{store.StatusPending, store.StatusRunning, store.StatusPaused}, []int64{ids[3], ids[2]}},
			{"one status", []store.RolloutStatus{store.StatusRolledBack}, []int64{ids[1]}},
			{"none with status", []store.RolloutStatus{store.StatusAborted}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rs, err := s.ListRollouts(ctx, tt.statuses...)
				wantErr(t, "ListRollouts", err, nil)
				var got []int64
				for _, r := range rs {
					got = append(got, r.ID)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("ListRollouts(%v) = %v, want %v", tt.statuses, got, tt.want)
				}
			})
		}
		_, err := s.ListRollouts(ctx, "finished")
		wantErr(t, "ListRollouts with an unknown status", err, store.ErrInvalid)
	})
}

// checkRollout compares the fields a caller sets (not ID, revision, times
// the store sets).
func checkRollout(t *testing.T, what string, got, want store.Rollout) {
	t.Helper()
	var diffs []string
	check := func(field string, ok bool) {
		if !ok {
			diffs = append(diffs, field)
		}
	}
	check("Model", got.Model == want.Model)
	check("Version", got.Version == want.Version)
	check("Selector", sameMap(got.Selector, want.Selector))
	check("Waves", slices.Equal(got.Waves, want.Waves))
	check("SoakSeconds", got.SoakSeconds == want.SoakSeconds)
	check("Gates", slices.Equal(got.Gates, want.Gates))
	check("Mode", got.Mode == want.Mode)
	check("OnFailure", got.OnFailure == want.OnFailure)
	check("Status", got.Status == want.Status)
	check("Wave", got.Wave == want.Wave)
	check("WaveStarted", sameTime(got.WaveStarted, want.WaveStarted))
	check("PreviousVersions", sameMap(got.PreviousVersions, want.PreviousVersions))
	check("InstallTimeoutSeconds", got.InstallTimeoutSeconds == want.InstallTimeoutSeconds)
	check("State", sameJSON(got.State, want.State))
	check("History", slices.EqualFunc(got.History, want.History, func(a, b store.RolloutEvent) bool {
		return sameTime(a.Time, b.Time) && a.Type == b.Type && a.Detail == b.Detail
	}))
	if want.ID != 0 {
		check("ID", got.ID == want.ID)
		check("Created", sameTime(got.Created, want.Created))
		check("Updated", sameTime(got.Updated, want.Updated))
		check("Revision", got.Revision == want.Revision)
	}
	if len(diffs) > 0 {
		t.Errorf("%s: fields %v differ:\n got %+v\nwant %+v", what, diffs, got, want)
	}
}

// sameJSON compares JSON documents by meaning (a store may reformat them);
// nil and empty are the same.
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
