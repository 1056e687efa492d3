package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/rollout"
	"github.com/modelfleet/modelfleet/hub/store"
)

// RolloutRequest is the body of POST /api/v1/rollouts, in the operator's
// notation; empty fields get the defaults of hub/rollout.
type RolloutRequest struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Selector picks devices by label: "site=plant-a,line=1"; empty: all.
	Selector string `json:"selector,omitempty"`
	// Waves are cumulative percentages: "1,10,50,100" (the default).
	Waves string `json:"waves,omitempty"`
	// Soak is how long each wave runs before its gates are evaluated, a Go
	// duration such as "5m" (the default); "0s" evaluates at once.
	Soak string `json:"soak,omitempty"`
	// Gates are conditions on the wave's telemetry, e.g. "error_rate<0.01";
	// none means install_failures<=0.
	Gates []string `json:"gates,omitempty"`
	// Mode is "active" (default) or "shadow".
	Mode string `json:"mode,omitempty"`
	// OnFailure is "pause" (default) or "rollback".
	OnFailure string `json:"on_failure,omitempty"`
	// InstallTimeout bounds each device's install, a Go duration; default 15m.
	InstallTimeout string `json:"install_timeout,omitempty"`
}

// Spec parses the request into a rollout spec. The error wraps
// rollout.ErrInvalidSpec and lists every problem.
func (r RolloutRequest) Spec() (rollout.Spec, error) {
	spec := rollout.Spec{Model: r.Model, Version: r.Version, Mode: r.Mode, OnFailure: r.OnFailure, Soak: rollout.DefaultSoak}
	var problems []string
	add := func(field string, err error) {
		problems = append(problems, field+": "+strings.TrimPrefix(err.Error(), rollout.ErrInvalidSpec.Error()+": "))
	}
	if sel, err := store.ParseSelector(r.Selector); err != nil {
		add("selector", err)
	} else if len(sel) > 0 {
		spec.Selector = sel
	}
	if strings.TrimSpace(r.Waves) != "" {
		w, err := rollout.ParseWaves(r.Waves)
		if err != nil {
			add("waves", err)
		}
		spec.Waves = w
	}
	if r.Soak != "" {
		d, err := parseDuration(r.Soak)
		if err != nil {
			add("soak", err)
		}
		spec.Soak = d
	}
	if r.InstallTimeout != "" {
		d, err := parseDuration(r.InstallTimeout)
		if err != nil {
			add("install_timeout", err)
		}
		spec.InstallTimeout = d
	}
	for _, g := range r.Gates {
		gate, err := rollout.ParseGate(g)
		if err != nil {
			add("gate", err)
			continue
		}
		spec.Gates = append(spec.Gates, gate)
	}
	if len(problems) > 0 {
		return spec, &rollout.SpecError{Problems: problems}
	}
	return spec, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 30s, 5m or 1h", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s is negative", s)
	}
	return d, nil
}

// Rollout commands accepted by POST /api/v1/rollouts/{id}/{command}.
const (
	CommandPause    = "pause"
	CommandResume   = "resume"
	CommandAbort    = "abort"
	CommandRollback = "rollback"
)

func (s *Server) startRollout(w http.ResponseWriter, r *http.Request) error {
	var req RolloutRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	spec, err := req.Spec()
	if err != nil {
		return err
	}
	id, err := s.hub.StartRollout(r.Context(), spec)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: no such release; `fleethub model list` shows the registered ones", err)
	}
	if err != nil {
		return err
	}
	info, err := s.hub.RolloutStatus(r.Context(), id)
	if err != nil {
		return err
	}
	s.log.Info("rollout started", "rollout", id, "model", spec.Model, "version", spec.Version)
	writeJSON(w, http.StatusCreated, info)
	return nil
}

func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request) error {
	var statuses []store.RolloutStatus
	if q := r.URL.Query().Get("status"); q != "" {
		for _, v := range strings.Split(q, ",") {
			st := store.RolloutStatus(strings.TrimSpace(v))
			if !st.Valid() {
				return badRequest("status %q: want one of %v", v, store.RolloutStatuses)
			}
			statuses = append(statuses, st)
		}
	}
	infos, err := s.hub.ListRollouts(r.Context(), statuses...)
	if err != nil {
		return err
	}
	if infos == nil {
		infos = []hub.RolloutInfo{}
	}
	writeJSON(w, http.StatusOK, infos)
	return nil
}

func rolloutID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest("rollout ID %q is not a positive number", r.PathValue("id"))
	}
	return id, nil
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request) error {
	id, err := rolloutID(r)
	if err != nil {
		return err
	}
	info, err := s.hub.RolloutStatus(r.Context(), id)
	if err != nil {
		return rolloutErr(id, err)
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) rolloutCommand(w http.ResponseWriter, r *http.Request) error {
	id, err := rolloutID(r)
	if err != nil {
		return err
	}
	var do func(context.Context, int64) error
	switch c := r.PathValue("command"); c {
	case CommandPause:
		do = s.hub.Pause
	case CommandResume:
		do = s.hub.Resume
	case CommandAbort:
		do = s.hub.Abort
	case CommandRollback:
		do = s.hub.Rollback
	default:
		return &statusError{http.StatusNotFound, fmt.Sprintf("unknown rollout command %q: want pause, resume, abort or rollback", c)}
	}
	if err := do(r.Context(), id); err != nil {
		return rolloutErr(id, err)
	}
	info, err := s.hub.RolloutStatus(r.Context(), id)
	if err != nil {
		return rolloutErr(id, err)
	}
	s.log.Info("rollout command", "rollout", id, "command", r.PathValue("command"))
	writeJSON(w, http.StatusOK, info)
	return nil
}

// rolloutErr names the rollout in a bare not-found error from the store.
func rolloutErr(id int64, err error) error {
	if errors.Is(err, store.ErrNotFound) && !strings.Contains(err.Error(), "rollout") {
		return fmt.Errorf("rollout %d: %w", id, err)
	}
	return err
}
