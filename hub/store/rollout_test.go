package store

import (
	"errors"
	"testing"

	"github.com/modelfleet/modelfleet/manifest"
)

func validRollout() Rollout {
	return Rollout{
		ID: 1, Model: "vibration", Version: "1.1.0", Selector: Selector{"site": "a"},
		Waves: []int{1, 10, 100}, SoakSeconds: 60, Gates: []string{"error_rate<0.01"},
		Mode: manifest.ModeShadow, OnFailure: OnFailurePause, Status: StatusRunning, Wave: 2,
	}
}

func TestRolloutValidate(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Rollout)
		wantErr bool
	}{
		{"valid", func(*Rollout) {}, false},
		{"single wave of 100", func(r *Rollout) { r.Waves, r.Wave = []int{100}, 0 }, false},
		{"no gates", func(r *Rollout) { r.Gates = nil }, false},
		{"empty selector", func(r *Rollout) { r.Selector = nil }, false},
		{"bad model name", func(r *Rollout) { r.Model = "Vibration!" }, true},
		{"bad version", func(r *Rollout) { r.Version = "1.1" }, true},
		{"decreasing waves", func(r *Rollout) { r.Waves = []int{50, 10, 100} }, true},
		{"negative wave index", func(r *Rollout) { r.Wave = -1 }, true},
		{"empty device in previous versions", func(r *Rollout) { r.PreviousVersions = map[string]string{"": "1.0.0"} }, true},
		{"too much history", func(r *Rollout) { r.History = make([]RolloutEvent, MaxRolloutHistory+1) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRollout()
			tt.change(&r)
			err := r.Validate()
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("Validate() = %v, want error %t wrapping ErrInvalid", err, tt.wantErr)
			}
		})
	}
}

func TestRolloutStatus(t *testing.T) {
	for _, s := range RolloutStatuses {
		unfinished := s == StatusPending || s == StatusRunning || s == StatusPaused
		if !s.Valid() || s.Finished() == unfinished {
			t.Errorf("%s: Valid %t Finished %t", s, s.Valid(), s.Finished())
		}
	}
	if RolloutStatus("done").Valid() || RolloutStatus("done").Finished() {
		t.Error("unknown status reported valid or finished")
	}
}

func TestRolloutHistoryIsCapped(t *testing.T) {
	r := validRollout()
	for i := range MaxRolloutHistory + 5 {
		r.AddHistory(t0, "note", string(rune('a'+i%26)))
	}
	if len(r.History) != MaxRolloutHistory || r.History[0].Detail != string(rune('a'+5%26)) {
		t.Errorf("history has %d entries starting %q; want %d, oldest dropped", len(r.History), r.History[0].Detail, MaxRolloutHistory)
	}
	if err := r.Validate(); err != nil {
		t.Errorf("capped rollout does not validate: %v", err)
	}
}

func TestRolloutClone(t *testing.T) {
	r := validRollout()
	r.PreviousVersions = map[string]string{"edge-1": "1.0.0"}
	c := r.Clone()
	c.Selector["site"], c.Waves[0], c.Gates[0], c.PreviousVersions["edge-1"] = "b", 2, "x", "0.9.0"
	if r.Selector["site"] != "a" || r.Waves[0] != 1 || r.Gates[0] != "error_rate<0.01" || r.PreviousVersions["edge-1"] != "1.0.0" {
		t.Errorf("Clone shares memory with the original: %+v", r)
	}
}
