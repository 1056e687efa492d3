package storetest

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
)

func testDevices(t *testing.T, open opener) {
	t.Run("UpsertMovesLastSeenForwardOnly", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		for _, at := range []time.Time{T0, T0.Add(time.Minute), T0.Add(30 * time.Second)} {
			wantErr(t, "UpsertDevice", s.UpsertDevice(ctx, "edge-1", at), nil)
		}
		d, err := s.GetDevice(ctx, "edge-1")
		wantErr(t, "GetDevice", err, nil)
		if !sameTime(d.FirstSeen, T0) || !sameTime(d.LastSeen, T0.Add(time.Minute)) {
			t.Errorf("FirstSeen, LastSeen = %v, %v; want %v, %v", d.FirstSeen, d.LastSeen, T0, T0.Add(time.Minute))
		}
		if d.FirstSeen.Location() != time.UTC {
			t.Errorf("FirstSeen in %v, want UTC", d.FirstSeen.Location())
		}
		if d.Online || d.Sequence != 0 || len(d.Models) != 0 || len(d.Labels) != 0 || d.Inventory != nil || d.System != nil {
			t.Errorf("new device not empty: %+v", d)
		}
	})

	// A state report is a sign of life: the hub relies on SetDeviceState
	// to move LastSeen, without a second write.
	t.Run("StateMovesLastSeenForwardOnly", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		for _, at := range []time.Time{T0, T0.Add(time.Minute), T0.Add(30 * time.Second)} {
			st := report.State{Schema: report.Schema, Device: "edge-1", Time: at, Models: map[string]report.Model{}}
			wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-1", st, at), nil)
		}
		d, err := s.GetDevice(ctx, "edge-1")
		wantErr(t, "GetDevice", err, nil)
		if !sameTime(d.FirstSeen, T0) || !sameTime(d.LastSeen, T0.Add(time.Minute)) {
			t.Errorf("FirstSeen, LastSeen = %v, %v; want %v, %v", d.FirstSeen, d.LastSeen, T0, T0.Add(time.Minute))
		}
	})

	t.Run("InvalidInput", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		tests := []struct {
			name string
			id   string
			at   time.Time
		}{
			{"empty ID", "", T0},
			{"ID with slash", "a/b", T0},
			{"ID with wildcard", "a+", T0},
			{"zero time", "edge-1", time.Time{}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantErr(t, "UpsertDevice", s.UpsertDevice(ctx, tt.id, tt.at), store.ErrInvalid)
				wantErr(t, "SetOnline", s.SetOnline(ctx, tt.id, true, tt.at), store.ErrInvalid)
				wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, tt.id, report.State{}, tt.at), store.ErrInvalid)
			})
		}
		if ds, err := s.ListDevices(ctx, nil); err != nil || len(ds) != 0 {
			t.Errorf("ListDevices after invalid writes = %d devices, %v; want none", len(ds), err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		_, err := s.GetDevice(ctx, "ghost")
		wantErr(t, "GetDevice", err, store.ErrNotFound)
		_, err = s.SetLabels(ctx, "ghost", map[string]string{"a": "b"}, nil)
		wantErr(t, "SetLabels", err, store.ErrNotFound)
	})

	t.Run("Online", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		wantErr(t, "SetOnline true", s.SetOnline(ctx, "edge-1", true, T0), nil)
		d, _ := s.GetDevice(ctx, "edge-1")
		if !d.Online || !sameTime(d.LastSeen, T0) {
			t.Fatalf("after online: Online %t LastSeen %v", d.Online, d.LastSeen)
		}
		// The last will is published by the broker when the device is gone:
		// it must not count as a sign of life.
		wantErr(t, "SetOnline false", s.SetOnline(ctx, "edge-1", false, T0.Add(time.Hour)), nil)
		d, _ = s.GetDevice(ctx, "edge-1")
		if d.Online || !sameTime(d.LastSeen, T0) {
			t.Errorf("after last will: Online %t LastSeen %v; want false %v", d.Online, d.LastSeen, T0)
		}
		wantErr(t, "SetOnline false (unknown device)", s.SetOnline(ctx, "edge-2", false, T0), nil)
		if d, err := s.GetDevice(ctx, "edge-2"); err != nil || d.Online {
			t.Errorf("device registered by its last will: %+v, %v", d, err)
		}
	})

	t.Run("State", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		st := report.State{
			Schema: report.Schema, Device: "edge-1", Time: T0, Sequence: 4,
			Labels:  map[string]string{"site": "plant-a", "line": "1"},
			Runtime: report.Runtime{ORTVersion: "1.30.0", Variants: []string{"cuda", "cpu"}},
			Models: map[string]report.Model{
				"vibration": {Version: "1.0.0", Phase: "active", Provider: "cuda"},
				"camera":    {Version: "2.0.0", Phase: "downloading", Pending: "2.1.0", Progress: &report.Progress{Done: 1, Total: 9}},
			},
		}
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-1", st, T0), nil)
		d, err := s.GetDevice(ctx, "edge-1")
		wantErr(t, "GetDevice", err, nil)
		if !sameMap(d.Labels, st.Labels) || !sameMap(d.ReportedLabels, st.Labels) || len(d.HubLabels) != 0 {
			t.Errorf("labels = %v (reported %v, hub %v), want %v", d.Labels, d.ReportedLabels, d.HubLabels, st.Labels)
		}
		if d.AcceptedSequence != 4 {
			t.Errorf("AcceptedSequence = %d, want 4", d.AcceptedSequence)
		}
		var inv report.Runtime
		if err := json.Unmarshal(d.Inventory, &inv); err != nil || inv.ORTVersion != "1.30.0" || !slices.Equal(inv.Variants, []string{"cuda", "cpu"}) {
			t.Errorf("Inventory = %s (%v), want the reported runtime", d.Inventory, err)
		}
		want := map[string]store.DeviceModel{
			"vibration": {Version: "1.0.0", Phase: "active", Provider: "cuda", UpdatedAt: T0},
			"camera":    {Version: "2.0.0", Phase: "downloading", Pending: "2.1.0", UpdatedAt: T0},
		}
		checkModels(t, d.Models, want)

		// A minute later camera finished, vibration did not change, and a
		// report from an older agent run lowered nothing.
		st.Time, st.Sequence = T0.Add(time.Minute), 3
		st.Models = map[string]report.Model{
			"vibration": {Version: "1.0.0", Phase: "active", Provider: "cuda"},
			"camera":    {Version: "2.1.0", Phase: "active", Previous: "2.0.0"},
		}
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-1", st, T0.Add(time.Minute)), nil)
		d, _ = s.GetDevice(ctx, "edge-1")
		want["camera"] = store.DeviceModel{Version: "2.1.0", Phase: "active", Previous: "2.0.0", UpdatedAt: T0.Add(time.Minute)}
		checkModels(t, d.Models, want)
		if d.AcceptedSequence != 4 {
			t.Errorf("AcceptedSequence = %d after a lower report, want 4", d.AcceptedSequence)
		}
		if !sameTime(d.LastSeen, T0.Add(time.Minute)) {
			t.Errorf("LastSeen = %v, want %v", d.LastSeen, T0.Add(time.Minute))
		}

		// A model removed from the report is gone; failed phases keep their error.
		st.Models = map[string]report.Model{"camera": {Version: "2.0.0", Phase: "rolled-back", Error: "warm-up failed"}}
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-1", st, T0.Add(2*time.Minute)), nil)
		d, _ = s.GetDevice(ctx, "edge-1")
		checkModels(t, d.Models, map[string]store.DeviceModel{
			"camera": {Version: "2.0.0", Phase: "rolled-back", Error: "warm-up failed", UpdatedAt: T0.Add(2 * time.Minute)},
		})
	})

	t.Run("Labels", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		st := report.State{Labels: map[string]string{"site": "plant-a", "line": "1"}}
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-1", st, T0), nil)

		d, err := s.SetLabels(ctx, "edge-1", map[string]string{"site": "plant-b", "ring": "canary"}, nil)
		wantErr(t, "SetLabels", err, nil)
		checkLabels(t, "after override", d.Labels, map[string]string{"site": "plant-b", "line": "1", "ring": "canary"})

		// A later state report does not undo what the operator set.
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, "edge-1", st, T0.Add(time.Minute)), nil)
		d, _ = s.GetDevice(ctx, "edge-1")
		checkLabels(t, "after state report", d.Labels, map[string]string{"site": "plant-b", "line": "1", "ring": "canary"})

		// Removing the override reveals the reported value again.
		d, err = s.SetLabels(ctx, "edge-1", nil, []string{"site", "absent"})
		wantErr(t, "SetLabels remove", err, nil)
		checkLabels(t, "after remove", d.Labels, map[string]string{"site": "plant-a", "line": "1", "ring": "canary"})
		checkLabels(t, "hub labels", d.HubLabels, map[string]string{"ring": "canary"})

		for _, tt := range []struct {
			name   string
			set    map[string]string
			remove []string
		}{
			{"empty key", map[string]string{"": "x"}, nil},
			{"empty value", map[string]string{"k": ""}, nil},
			{"comma in value", map[string]string{"k": "a,b"}, nil},
			{"equals in key", map[string]string{"k=1": "a"}, nil},
			{"set and removed", map[string]string{"k": "a"}, []string{"k"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.SetLabels(ctx, "edge-1", tt.set, tt.remove)
				wantErr(t, "SetLabels", err, store.ErrInvalid)
			})
		}
		d, _ = s.GetDevice(ctx, "edge-1")
		checkLabels(t, "after refused changes", d.Labels, map[string]string{"site": "plant-a", "line": "1", "ring": "canary"})
	})
}

func checkModels(t *testing.T, got, want map[string]store.DeviceModel) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("models = %+v, want %+v", got, want)
		return
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok || !sameTime(g.UpdatedAt, w.UpdatedAt) {
			t.Errorf("model %s = %+v, want %+v", name, g, w)
			continue
		}
		g.UpdatedAt, w.UpdatedAt = time.Time{}, time.Time{}
		if g != w {
			t.Errorf("model %s = %+v, want %+v", name, g, w)
		}
	}
}

func checkLabels(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if !sameMap(got, want) {
		t.Errorf("%s: labels = %v, want %v", what, got, want)
	}
}

func testListDevices(t *testing.T, open opener) {
	s, ctx := open(t), t.Context()
	fleet := map[string]map[string]string{
		"a1": {"site": "plant-a", "line": "1"},
		"a2": {"site": "plant-a", "line": "2"},
		"b1": {"site": "plant-b", "line": "1", "gpu": "true"},
		"b2": {"site": "plant-b", "line": "2", "gpu": "true"},
		"c0": nil,
	}
	for id, labels := range fleet {
		st := report.State{Labels: labels, Models: map[string]report.Model{"m": {Version: "1.0.0", Phase: "active"}}}
		wantErr(t, "SetDeviceState", s.SetDeviceState(ctx, id, st, T0), nil)
	}
	// The operator moves a2 to plant-b and marks it canary.
	if _, err := s.SetLabels(ctx, "a2", map[string]string{"site": "plant-b", "ring": "canary"}, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		selector string
		want     []string
	}{
		{"empty selects all", "", []string{"a1", "a2", "b1", "b2", "c0"}},
		{"one label", "site=plant-a", []string{"a1"}},
		{"hub label overrides reported", "site=plant-b", []string{"a2", "b1", "b2"}},
		{"hub-only label", "ring=canary", []string{"a2"}},
		{"two labels", "site=plant-b,line=1", []string{"b1"}},
		{"three labels with spaces", " site = plant-b , line=2, gpu=true ", []string{"b2"}},
		{"no match", "site=plant-z", nil},
		{"key nobody has", "region=eu", nil},
		{"value is case-sensitive", "site=Plant-A", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := store.ParseSelector(tt.selector)
			wantErr(t, "ParseSelector", err, nil)
			ds, err := s.ListDevices(ctx, sel)
			wantErr(t, "ListDevices", err, nil)
			var got []string
			for _, d := range ds {
				got = append(got, d.ID)
				if !sel.Matches(d.Labels) {
					t.Errorf("device %s with labels %v listed for %q", d.ID, d.Labels, tt.selector)
				}
				if d.Models["m"].Version != "1.0.0" {
					t.Errorf("device %s listed without its models: %+v", d.ID, d.Models)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ListDevices(%q) = %v, want %v", tt.selector, got, tt.want)
			}
		})
	}
	t.Run("invalid selector", func(t *testing.T) {
		_, err := s.ListDevices(ctx, store.Selector{"": "x"})
		wantErr(t, "ListDevices", err, store.ErrInvalid)
	})
}
