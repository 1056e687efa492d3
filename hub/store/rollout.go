package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/manifest"
)

// RolloutStatus is where a rollout stands.
type RolloutStatus string

// Rollout statuses. Pending, running and paused rollouts are unfinished; at
// most one unfinished rollout exists per model.
const (
	// StatusPending: created, no assignment issued yet.
	StatusPending RolloutStatus = "pending"
	// StatusRunning: waves are being issued and soaked.
	StatusRunning RolloutStatus = "running"
	// StatusPaused: stopped by an operator or a failed gate; can resume.
	StatusPaused RolloutStatus = "paused"
	// StatusSucceeded: the last wave passed its gates.
	StatusSucceeded RolloutStatus = "succeeded"
	// StatusFailed: a gate failed and the rollout could not continue.
	StatusFailed RolloutStatus = "failed"
	// StatusRolledBack: devices were sent back to their previous versions.
	StatusRolledBack RolloutStatus = "rolled-back"
	// StatusAborted: stopped for good by an operator.
	StatusAborted RolloutStatus = "aborted"
)

// RolloutStatuses lists every status.
var RolloutStatuses = []RolloutStatus{
	StatusPending, StatusRunning, StatusPaused,
	StatusSucceeded, StatusFailed, StatusRolledBack, StatusAborted,
}

// Valid reports whether s is one of RolloutStatuses.
func (s RolloutStatus) Valid() bool { return slices.Contains(RolloutStatuses, s) }

// Finished reports whether the rollout has ended for good.
func (s RolloutStatus) Finished() bool {
	return s.Valid() && s != StatusPending && s != StatusRunning && s != StatusPaused
}

// What a rollout does when a gate fails.
const (
	// OnFailurePause pauses the rollout for an operator.
	OnFailurePause = "pause"
	// OnFailureRollback sends the devices back to their previous versions.
	OnFailureRollback = "rollback"
)

// MaxRolloutHistory is how many history entries a rollout keeps; older
// entries are dropped first.
const MaxRolloutHistory = 1000

// Rollout moves the devices a selector picks to one release, in waves.
type Rollout struct {
	// ID is assigned by CreateRollout.
	ID int64 `json:"id"`
	// Model and Version name the release rolled out.
	Model   string `json:"model"`
	Version string `json:"version"`
	// Selector picks the devices; the empty selector picks all.
	Selector Selector `json:"selector"`
	// Waves are cumulative percentages of the selected devices, strictly
	// increasing, each 1–100, e.g. 1, 10, 50, 100.
	Waves []int `json:"waves"`
	// SoakSeconds is how long each wave runs before its gates are checked.
	SoakSeconds int64 `json:"soak_seconds"`
	// Gates are the gate expressions, as text (e.g. "error_rate<0.01"); the
	// rollout controller parses them.
	Gates []string `json:"gates"`
	// Mode is manifest.ModeActive or manifest.ModeShadow.
	Mode string `json:"mode"`
	// OnFailure is OnFailurePause or OnFailureRollback.
	OnFailure string `json:"on_failure"`
	// InstallTimeoutSeconds is how long each device has, from its
	// assignment, to report the version active; 0 means the controller's
	// default.
	InstallTimeoutSeconds int64 `json:"install_timeout_seconds,omitempty"`
	// Status is where the rollout stands.
	Status RolloutStatus `json:"status"`
	// Wave is the index into Waves of the current wave.
	Wave int `json:"wave"`
	// WaveStarted is when the current wave's assignments went out; zero
	// before the first wave.
	WaveStarted time.Time `json:"wave_started"`
	// PreviousVersions maps device IDs to the version each ran before the
	// rollout reached it ("" for none): the versions a rollback restores.
	PreviousVersions map[string]string `json:"previous_versions"`
	// History records what happened, oldest first, at most
	// MaxRolloutHistory entries.
	History []RolloutEvent `json:"history"`
	// State is the rollout controller's own state (hub/rollout.State as
	// JSON: per-device results, stage, gate values), stored and returned
	// as is so the controller resumes exactly after a restart; the store
	// only checks that it is JSON. Nil until the controller stores one.
	State json.RawMessage `json:"state,omitempty"`
	// Created is set by CreateRollout.
	Created time.Time `json:"created"`
	// Updated is set by CreateRollout and UpdateRollout.
	Updated time.Time `json:"updated"`
	// Revision counts the stored writes: 1 after CreateRollout, +1 for each
	// UpdateRollout. UpdateRollout requires the revision it was read with.
	Revision int64 `json:"revision"`
}

// RolloutEvent is one entry of a rollout's history.
type RolloutEvent struct {
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Type is a short word such as "started", "wave", "gate-failed",
	// "paused", "resumed", "rolled-back", "aborted", "succeeded".
	Type string `json:"type"`
	// Detail explains it for an operator.
	Detail string `json:"detail,omitempty"`
}

// Ref returns "rollout ID (model@version)" for messages.
func (r *Rollout) Ref() string { return fmt.Sprintf("rollout %d (%s@%s)", r.ID, r.Model, r.Version) }

// Validate checks the rollout's fields. It returns an error wrapping
// ErrInvalid that names the field.
func (r *Rollout) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %s: %w", r.Ref(), fmt.Sprintf(format, a...), ErrInvalid)
	}
	if err := manifest.ValidateName(r.Model); err != nil {
		return bad("%v", err)
	}
	if _, err := manifest.ParseSemver(r.Version); err != nil {
		return bad("%v", err)
	}
	if err := r.Selector.Validate(); err != nil {
		return bad("%v", err)
	}
	if len(r.Waves) == 0 {
		return bad("no waves (want cumulative percentages such as 1,10,50,100)")
	}
	for i, w := range r.Waves {
		if w < 1 || w > 100 {
			return bad("wave %d is %d%%; want 1 to 100", i+1, w)
		}
		if i > 0 && w <= r.Waves[i-1] {
			return bad("waves must increase: wave %d is %d%% after %d%%", i+1, w, r.Waves[i-1])
		}
	}
	if r.SoakSeconds < 0 {
		return bad("soak of %d seconds is negative", r.SoakSeconds)
	}
	if r.InstallTimeoutSeconds < 0 {
		return bad("install timeout of %d seconds is negative", r.InstallTimeoutSeconds)
	}
	if len(r.State) > 0 && !json.Valid(r.State) {
		return bad("controller state is not valid JSON")
	}
	for i, g := range r.Gates {
		if strings.TrimSpace(g) == "" {
			return bad("gate %d is empty", i+1)
		}
	}
	if r.Mode != manifest.ModeActive && r.Mode != manifest.ModeShadow {
		return bad("mode %q; want %q or %q", r.Mode, manifest.ModeActive, manifest.ModeShadow)
	}
	if r.OnFailure != OnFailurePause && r.OnFailure != OnFailureRollback {
		return bad("on-failure %q; want %q or %q", r.OnFailure, OnFailurePause, OnFailureRollback)
	}
	if !r.Status.Valid() {
		return bad("status %q; want one of %v", r.Status, RolloutStatuses)
	}
	if r.Wave < 0 || r.Wave >= len(r.Waves) {
		return bad("current wave index %d outside the %d waves", r.Wave, len(r.Waves))
	}
	for dev := range r.PreviousVersions {
		if dev == "" {
			return bad("previous versions list an empty device ID")
		}
	}
	if len(r.History) > MaxRolloutHistory {
		return bad("%d history entries; at most %d", len(r.History), MaxRolloutHistory)
	}
	return nil
}

// AddHistory appends an event, dropping the oldest beyond MaxRolloutHistory.
func (r *Rollout) AddHistory(at time.Time, typ, detail string) {
	r.History = append(r.History, RolloutEvent{Time: at, Type: typ, Detail: detail})
	if n := len(r.History) - MaxRolloutHistory; n > 0 {
		r.History = slices.Delete(r.History, 0, n)
	}
}

// Clone returns a deep copy of r.
func (r *Rollout) Clone() Rollout {
	c := *r
	c.Selector = maps.Clone(r.Selector)
	c.Waves = slices.Clone(r.Waves)
	c.Gates = slices.Clone(r.Gates)
	c.PreviousVersions = maps.Clone(r.PreviousVersions)
	c.History = slices.Clone(r.History)
	c.State = slices.Clone(r.State)
	return c
}
