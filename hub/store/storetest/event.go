package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
)

func testEvents(t *testing.T, open opener) {
	s, ctx := open(t), t.Context()
	in := []store.Event{
		{Device: "edge-1", Time: T0, Type: report.EventStarted},
		{Device: "edge-1", Time: T0.Add(time.Second), Type: report.EventRejected, Sequence: 3, Check: "sequence", Reason: "sequence 3 is not above 4: replay"},
		{Device: "edge-2", Time: T0.Add(2 * time.Second), Type: report.EventInstalled, Model: "vibration", Version: "1.1.0", Sequence: 5},
		{Device: "edge-1", Time: T0.Add(3 * time.Second), Type: report.EventRolledBack, Model: "vibration", Version: "1.0.0", Reason: "warm-up failed"},
	}
	var ids []int64
	for _, e := range in {
		got, err := s.AddEvent(ctx, e)
		wantErr(t, "AddEvent", err, nil)
		if len(ids) > 0 && got.ID <= ids[len(ids)-1] {
			t.Errorf("event IDs not increasing: %d after %d", got.ID, ids[len(ids)-1])
		}
		ids = append(ids, got.ID)
	}
	if _, err := s.GetDevice(ctx, "edge-2"); err != nil {
		t.Errorf("AddEvent did not register its device: %v", err)
	}
	full, _ := s.ListEvents(ctx, "edge-1", time.Time{}, 0)
	if len(full) != 3 || full[1].Check != "sequence" || full[1].Reason != in[1].Reason || full[1].Sequence != 3 ||
		!sameTime(full[1].Time, in[1].Time) || full[1].Device != "edge-1" {
		t.Errorf("ListEvents(edge-1) = %+v; want its 3 events with all fields", full)
	}

	tests := []struct {
		name   string
		device string
		since  time.Time
		limit  int
		want   []int64
	}{
		{"all, newest first", "", time.Time{}, 0, []int64{ids[3], ids[2], ids[1], ids[0]}},
		{"one device", "edge-1", time.Time{}, 0, []int64{ids[3], ids[1], ids[0]}},
		{"since is inclusive", "", T0.Add(2 * time.Second), 0, []int64{ids[3], ids[2]}},
		{"limit keeps the newest", "edge-1", time.Time{}, 2, []int64{ids[3], ids[1]}},
		{"unknown device", "ghost", time.Time{}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, err := s.ListEvents(ctx, tt.device, tt.since, tt.limit)
			wantErr(t, "ListEvents", err, nil)
			var got []int64
			for _, e := range es {
				got = append(got, e.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ListEvents = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("invalid", func(t *testing.T) {
		for _, e := range []store.Event{
			{Device: "", Time: T0, Type: "started"},
			{Device: "edge-1", Time: T0},
			{Device: "edge-1", Type: "started"},
		} {
			_, err := s.AddEvent(ctx, e)
			wantErr(t, "AddEvent", err, store.ErrInvalid)
		}
	})
}
