package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/modelfleet/modelfleet/hub/rollout"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// RolloutInfo is a rollout as the API shows it.
type RolloutInfo struct {
	// Rollout is the stored rollout: spec fields, status, wave, history.
	Rollout store.Rollout `json:"rollout"`
	// State is the controller's state: per-device phase and result, stage,
	// last gate evaluation, reason.
	State rollout.State `json:"state"`
	// Results counts the assigned devices by install result.
	Results map[rollout.Result]int `json:"results"`
}

// StartRollout registers a rollout of spec (Spec.Selector picks the
// devices) and returns its ID; the controller starts it at its next step.
// Omitted spec fields get rollout.Spec.WithDefaults; Soak and
// InstallTimeout are rounded up to whole seconds. It returns an error
// wrapping rollout.ErrInvalidSpec (every problem listed), store.ErrInvalid
// (selector), store.ErrNotFound (no such release), ErrUnsignedRelease, or
// store.ErrConflict when another rollout of the model is unfinished.
func (h *Hub) StartRollout(ctx context.Context, spec rollout.Spec) (int64, error) {
	st, err := h.store()
	if err != nil {
		return 0, err
	}
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return 0, err
	}
	sel := store.Selector(maps.Clone(spec.Selector))
	if err := sel.Validate(); err != nil {
		return 0, err
	}
	rel, err := st.GetRelease(ctx, spec.Model, spec.Version)
	if err != nil {
		return 0, fmt.Errorf("rollout of %s@%s: %w", spec.Model, spec.Version, err)
	}
	if !rel.Signed {
		return 0, fmt.Errorf("rollout of %s: %w: sign it with the release key first", rel.Ref(), ErrUnsignedRelease)
	}
	unfinished, err := st.ListRollouts(ctx, store.StatusPending, store.StatusRunning, store.StatusPaused)
	if err != nil {
		return 0, err
	}
	for _, r := range unfinished {
		if r.Model == spec.Model {
			return 0, fmt.Errorf("%s is still %s; abort it or let it finish before starting another rollout of %s: %w",
				r.Ref(), r.Status, spec.Model, store.ErrConflict)
		}
	}
	gates := make([]string, len(spec.Gates))
	for i, g := range spec.Gates {
		gates[i] = g.String()
	}
	r, err := st.CreateRollout(ctx, store.Rollout{
		Model: spec.Model, Version: spec.Version, Selector: sel, Waves: slices.Clone(spec.Waves),
		SoakSeconds: ceilSeconds(spec.Soak), Gates: gates, Mode: spec.Mode, OnFailure: spec.OnFailure,
		InstallTimeoutSeconds: ceilSeconds(spec.InstallTimeout), Status: store.StatusPending,
	})
	if err != nil {
		return 0, err
	}
	h.log.Info("rollout created", "rollout", r.ID, "model", r.Model, "version", r.Version, "selector", sel)
	h.wake()
	return r.ID, nil
}

func ceilSeconds(d time.Duration) int64 { return int64(math.Ceil(d.Seconds())) }

// Pause stops a running rollout; see rollout.CommandPause. Errors wrap
// store.ErrNotFound, rollout.ErrNotAllowed or ErrNotRunning.
func (h *Hub) Pause(ctx context.Context, id int64) error {
	return h.command(ctx, id, rollout.CommandPause)
}

// Resume continues a paused rollout: its current wave starts over and
// failed installs are retried. Errors as Pause.
func (h *Hub) Resume(ctx context.Context, id int64) error {
	return h.command(ctx, id, rollout.CommandResume)
}

// Abort stops a rollout for good without undoing anything. Errors as Pause.
func (h *Hub) Abort(ctx context.Context, id int64) error {
	return h.command(ctx, id, rollout.CommandAbort)
}

// Rollback sends every device the rollout assigned back to the version it
// ran before (new assignments with higher sequences). Errors as Pause.
func (h *Hub) Rollback(ctx context.Context, id int64) error {
	return h.command(ctx, id, rollout.CommandRollback)
}

// command applies an operator command at once: one controller step with it.
func (h *Hub) command(ctx context.Context, id int64, c rollout.Command) error {
	st, err := h.store()
	if err != nil {
		return err
	}
	h.ctl.Lock()
	defer h.ctl.Unlock()
	r, err := st.GetRollout(ctx, id)
	if err != nil {
		return err
	}
	if err := rollout.CommandAllowed(rollout.Status(r.Status), c); err != nil {
		return fmt.Errorf("%s: %w", r.Ref(), err)
	}
	exclude, err := h.newerClaims(ctx, st, r)
	if err != nil {
		return err
	}
	if _, err := h.stepRollout(ctx, st, r, c, exclude); err != nil {
		return fmt.Errorf("%s: %s: %w", r.Ref(), c, err)
	}
	h.log.Info("rollout command applied", "rollout", r.ID, "model", r.Model, "version", r.Version, "command", c)
	return nil
}

// RolloutStatus returns the rollout with its controller state. It returns
// an error wrapping store.ErrNotFound for an unknown ID.
func (h *Hub) RolloutStatus(ctx context.Context, id int64) (RolloutInfo, error) {
	st, err := h.store()
	if err != nil {
		return RolloutInfo{}, err
	}
	r, err := st.GetRollout(ctx, id)
	if err != nil {
		return RolloutInfo{}, err
	}
	return rolloutInfo(r)
}

// ListRollouts returns the rollouts with one of the statuses (all when
// none given), newest first, with their controller state.
func (h *Hub) ListRollouts(ctx context.Context, statuses ...store.RolloutStatus) ([]RolloutInfo, error) {
	st, err := h.store()
	if err != nil {
		return nil, err
	}
	rs, err := st.ListRollouts(ctx, statuses...)
	if err != nil {
		return nil, err
	}
	out := make([]RolloutInfo, 0, len(rs))
	for _, r := range rs {
		info, err := rolloutInfo(r)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

func rolloutInfo(r store.Rollout) (RolloutInfo, error) {
	state, err := decodeState(r)
	if err != nil {
		return RolloutInfo{}, err
	}
	res := map[rollout.Result]int{}
	for _, d := range state.Devices {
		res[d.Result]++
	}
	return RolloutInfo{Rollout: r, State: state, Results: res}, nil
}

func decodeState(r store.Rollout) (rollout.State, error) {
	var s rollout.State
	if len(r.State) > 0 {
		if err := json.Unmarshal(r.State, &s); err != nil {
			return s, fmt.Errorf("%s: stored controller state: %w", r.Ref(), err)
		}
	}
	return s, nil
}

// specOf rebuilds the machine's spec from a stored rollout.
func specOf(r store.Rollout) (rollout.Spec, error) {
	spec := rollout.Spec{
		Model: r.Model, Version: r.Version, Selector: maps.Clone(r.Selector), Waves: slices.Clone(r.Waves),
		Soak: time.Duration(r.SoakSeconds) * time.Second, Mode: r.Mode, OnFailure: r.OnFailure,
		InstallTimeout: time.Duration(r.InstallTimeoutSeconds) * time.Second,
	}
	for _, g := range r.Gates {
		gate, err := rollout.ParseGate(g)
		if err != nil {
			return spec, fmt.Errorf("%s: %w", r.Ref(), err)
		}
		spec.Gates = append(spec.Gates, gate)
	}
	return spec, nil
}

// claims reports whether a rollout in status s decides the version of the
// devices its selector matches, hiding them from older rollouts of the
// same model: anything but failed (nothing assigned) and rolled-back
// (devices went back to what older rollouts gave them).
func claims(s store.RolloutStatus) bool {
	return s != store.StatusFailed && s != store.StatusRolledBack
}

// claimKey is what a rollout claims devices for: its model in its mode. A
// shadow rollout runs its version beside the serving one and decides only
// the model's shadow entry, so it hides devices from older shadow rollouts
// of the model, never from active ones, and the reverse.
func claimKey(r store.Rollout) string {
	mode := r.Mode
	if mode == "" {
		mode = manifest.ModeActive
	}
	return r.Model + "@" + mode
}

// claimStatuses are the statuses claims accepts.
var claimStatuses = []store.RolloutStatus{store.StatusPending, store.StatusRunning, store.StatusPaused, store.StatusSucceeded, store.StatusAborted}

// newestFirst sorts rollouts by descending ID.
func newestFirst(rs []store.Rollout) {
	slices.SortFunc(rs, func(a, b store.Rollout) int { return int(b.ID - a.ID) })
}

// newerClaims returns the selectors of the rollouts of r's model and mode
// newer than r that claim their devices.
func (h *Hub) newerClaims(ctx context.Context, st Store, r store.Rollout) ([]store.Selector, error) {
	rs, err := st.ListRollouts(ctx, claimStatuses...)
	if err != nil {
		return nil, err
	}
	var out []store.Selector
	for _, o := range rs {
		if claimKey(o) == claimKey(r) && o.ID > r.ID {
			out = append(out, o.Selector)
		}
	}
	return out, nil
}

// controlLoop steps the rollouts every tick and when devices report, and
// refreshes assignments, until ctx ends.
func (h *Hub) controlLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.tick())
	defer t.Stop()
	h.tick(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.wakeC:
		}
		start := time.Now()
		h.tick(ctx)
		// Every device report wakes the controller, and during a wave
		// thousands arrive within seconds, while a step reads every device
		// of its rollouts: rest as long as the step took, so stepping takes
		// at most half of the time and leaves the rest to ingesting the
		// reports the step waits for.
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Since(start), h.cfg.tick())):
		}
	}
}

// tick steps every rollout that can still change and, when due, refreshes
// assignments.
func (h *Hub) tick(ctx context.Context) {
	st, err := h.store()
	if err != nil {
		return
	}
	h.ctl.Lock()
	defer h.ctl.Unlock()
	h.stepAll(ctx, st)
	if now := h.now(); now.Sub(h.lastRefresh) >= h.refreshInterval() {
		h.lastRefresh = now
		h.refresh(ctx)
	}
}

// stepAll steps, newest first, every unfinished rollout and every
// succeeded one (which assigns late joiners), each over the devices its
// selector matches minus those a newer rollout of the model (in the same
// mode) claims.
// Callers hold h.ctl.
func (h *Hub) stepAll(ctx context.Context, st Store) {
	rs, err := st.ListRollouts(ctx, claimStatuses...)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Error("list rollouts", "err", err)
		}
		return
	}
	newestFirst(rs)
	claimed := map[string][]store.Selector{}
	for _, r := range rs {
		k := claimKey(r)
		if r.Status != store.StatusAborted {
			if _, err := h.stepRollout(ctx, st, r, "", claimed[k]); err != nil && ctx.Err() == nil {
				h.log.Error("rollout step", "rollout", r.ID, "model", r.Model, "version", r.Version, "err", err)
			}
		}
		claimed[k] = append(claimed[k], r.Selector)
	}
}

// input builds the machine's observation of r: the matching devices not
// claimed by a newer rollout, their phase for r's version, and the wave's
// telemetry once it soaks.
// It also returns the matching devices left out because a newer rollout
// claims them.
func (h *Hub) input(ctx context.Context, st Store, r store.Rollout, spec rollout.Spec, state rollout.State, exclude []store.Selector) (rollout.Input, map[string]bool, error) {
	now := h.now()
	in := rollout.Input{Now: now, Devices: map[string]rollout.DeviceReport{}}
	claimed := map[string]bool{}
	devices, err := st.ListDevices(ctx, r.Selector)
	if err != nil {
		return in, nil, err
	}
	for _, d := range devices {
		if slices.ContainsFunc(exclude, func(s store.Selector) bool { return s.Matches(d.Labels) }) {
			claimed[d.ID] = true
			continue
		}
		in.Devices[d.ID] = deviceReport(d, spec)
	}
	if state.Status == rollout.StatusRunning && state.Stage == rollout.StageSoaking && needsTelemetry(spec) {
		var members []string
		for _, id := range state.WaveDevices() {
			if _, ok := in.Devices[id]; ok {
				members = append(members, id)
			}
		}
		in.Metrics, err = h.metrics(ctx, st, spec, state, members, now)
		if err != nil {
			return in, nil, err
		}
	}
	return in, claimed, nil
}

// deviceReport is what d reports about spec's model. The phase is the
// device's answer to the newest assignment the hub drew for it: empty
// until the device reports having accepted that sequence, so a phase left
// from an earlier assignment (a stale failure) is never taken for the
// answer.
func deviceReport(d store.Device, spec rollout.Spec) rollout.DeviceReport {
	serving := d.Models[spec.Model]
	rep := rollout.DeviceReport{Version: serving.Version, Previous: serving.Previous}
	if d.AcceptedSequence < d.Sequence {
		return rep
	}
	key := spec.Model
	if spec.Mode == manifest.ModeShadow {
		key += "@shadow"
	}
	m, ok := d.Models[key]
	if !ok {
		return rep
	}
	rep.Phase = phaseOf(m, spec.Version)
	return rep
}

// phaseOf maps a device's model entry to the phase of version.
func phaseOf(m store.DeviceModel, version string) string {
	switch {
	case m.Pending == version:
		if m.Phase == rollout.PhaseFailed || m.Phase == rollout.PhaseActive {
			// A failure with the version still pending is transient: the
			// agent retries it. Until it settles the install is in progress.
			return "installing"
		}
		return m.Phase
	case m.Version == version:
		return rollout.PhaseActive
	case m.Pending == "" && (m.Phase == rollout.PhaseFailed || m.Phase == rollout.PhaseRolledBack):
		// The device answered the newest assignment (which carries version)
		// by giving up on it; what serves is the previous version.
		return m.Phase
	}
	return ""
}

// needsTelemetry reports whether a gate tests a metric measured from
// telemetry (the machine counts install failures itself).
func needsTelemetry(spec rollout.Spec) bool {
	for _, g := range spec.WithDefaults().Gates {
		if g.Metric != rollout.MetricInstallFailures {
			return true
		}
	}
	return false
}

// metrics measures the wave's devices still matching the selector
// (members) on the rollout's version over the soak: the telemetry stored
// since the soak started (or over the last gate window), less what the
// state's baseline says had been counted in the soak's first minute before
// it started. In shadow mode the version serves no request: requests counts
// its shadow comparisons, the latency quantiles are those of its shadow
// runs, and error_rate is not measured (Spec.Validate refuses it).
func (h *Hub) metrics(ctx context.Context, st Store, spec rollout.Spec, state rollout.State, members []string, now time.Time) (rollout.Metrics, error) {
	since := state.SoakStarted
	if w := h.cfg.gateWindow(); w > 0 && now.Add(-w).After(since) {
		since = now.Add(-w)
	}
	if members == nil {
		members = []string{} // nil would select every device
	}
	rollups, err := st.ListTelemetry(ctx, store.TelemetryQuery{Model: spec.Model, Version: spec.Version, Devices: members, Since: since})
	if err != nil {
		return nil, err
	}
	var base metricsBaseline
	if len(state.MetricsBaseline) > 0 {
		if err := json.Unmarshal(state.MetricsBaseline, &base); err != nil {
			return nil, fmt.Errorf("stored metrics baseline: %w", err)
		}
	}
	if base.SoakStarted.Equal(state.SoakStarted) && store.Minute(since).Equal(base.Minute) {
		rollups = base.subtractFrom(rollups)
	}
	sum := store.Summarize(rollups)
	m := rollout.Metrics{}
	set := func(k rollout.Metric, v float64) {
		if !math.IsNaN(v) {
			m[k] = v
		}
	}
	if spec.Mode == manifest.ModeShadow {
		m[rollout.MetricRequests] = float64(sum.Shadow.Compared)
		set(rollout.MetricP95LatencyMS, sum.Shadow.Latency.Quantile(0.95))
		set(rollout.MetricP99LatencyMS, sum.Shadow.Latency.Quantile(0.99))
		set(rollout.MetricShadowAgreement, sum.ShadowAgreement())
		return m, nil
	}
	m[rollout.MetricRequests] = float64(sum.Requests)
	set(rollout.MetricErrorRate, sum.ErrorRate())
	set(rollout.MetricP95LatencyMS, sum.P95LatencyMs())
	set(rollout.MetricP99LatencyMS, sum.LatencyQuantile(0.99))
	return m, nil
}

// metricsBaseline is the hub's rollout.State.MetricsBaseline: the rollups
// of the wave's devices for the minute the soak started in, as they stood
// when it started. Telemetry is stored per device and minute, so without it
// a soak would count the requests served earlier in its first minute (the
// ones that tripped a gate before a resume, say). The precision left is one
// telemetry interval: a report whose window straddles the soak's start
// counts after it when it arrives after it.
type metricsBaseline struct {
	SoakStarted time.Time               `json:"soak_started"`
	Minute      time.Time               `json:"minute"`
	Rollups     []store.TelemetryRollup `json:"rollups,omitempty"`
}

// baseline records the telemetry of the wave's devices counted so far in
// the minute the soak started in.
func (h *Hub) baseline(ctx context.Context, st Store, spec rollout.Spec, state rollout.State) (json.RawMessage, error) {
	minute := store.Minute(state.SoakStarted)
	devices := state.WaveDevices()
	if devices == nil {
		devices = []string{}
	}
	rollups, err := st.ListTelemetry(ctx, store.TelemetryQuery{
		Model: spec.Model, Version: spec.Version, Devices: devices, Since: minute, Until: minute.Add(time.Minute),
	})
	if err != nil {
		return nil, err
	}
	return json.Marshal(metricsBaseline{SoakStarted: state.SoakStarted, Minute: minute, Rollups: rollups})
}

// subtractFrom returns rollups with the baseline's counts of the same
// device, version and minute taken off.
func (b metricsBaseline) subtractFrom(rollups []store.TelemetryRollup) []store.TelemetryRollup {
	type key struct {
		device, version string
	}
	base := map[key]store.TelemetryRollup{}
	for _, r := range b.Rollups {
		if r.Minute.Equal(b.Minute) {
			base[key{r.Device, r.Version}] = r
		}
	}
	out := make([]store.TelemetryRollup, 0, len(rollups))
	for _, r := range rollups {
		if old, ok := base[key{r.Device, r.Version}]; ok && r.Minute.Equal(b.Minute) {
			r = subtractRollup(r, old)
		}
		out = append(out, r)
	}
	return out
}

// subtractRollup returns the counts r gained since it was old. Rollups only
// grow, so this is exact; the saturating arithmetic only guards against a
// store that lost data.
func subtractRollup(r, old store.TelemetryRollup) store.TelemetryRollup {
	sub := func(a, b uint64) uint64 {
		if b > a {
			return 0
		}
		return a - b
	}
	r.Reports = sub(r.Reports, old.Reports)
	r.Requests = sub(r.Requests, old.Requests)
	if len(r.Errors) > 0 {
		errs := make(map[string]uint64, len(r.Errors))
		for k, n := range r.Errors {
			if n = sub(n, old.Errors[k]); n > 0 {
				errs[k] = n
			}
		}
		r.Errors = errs
	}
	r.ColdStarts = sub(r.ColdStarts, old.ColdStarts)
	r.QueueRejections = sub(r.QueueRejections, old.QueueRejections)
	r.Latency = subtractHistogram(r.Latency, old.Latency)
	r.Shadow.Compared = sub(r.Shadow.Compared, old.Shadow.Compared)
	r.Shadow.Agreed = min(sub(r.Shadow.Agreed, old.Shadow.Agreed), r.Shadow.Compared)
	r.Shadow.Latency = subtractHistogram(r.Shadow.Latency, old.Shadow.Latency)
	return r
}

// subtractHistogram returns h less old bucket by bucket, or h unchanged
// when their bounds differ (nothing to subtract then).
func subtractHistogram(h, old report.Histogram) report.Histogram {
	if old.Count == 0 || !slices.Equal(h.Bounds, old.Bounds) || len(h.Counts) != len(old.Counts) {
		return h
	}
	out := h.Clone()
	out.Count = 0
	for i := range out.Counts {
		if old.Counts[i] >= out.Counts[i] {
			out.Counts[i] = 0
		} else {
			out.Counts[i] -= old.Counts[i]
		}
		out.Count += out.Counts[i]
	}
	out.Sum = max(h.Sum-old.Sum, 0)
	return out
}

// stepRollout runs one machine step for r, applies its actions and stores
// the new state (optimistic concurrency on the revision). Actions are
// applied before the state is stored, so a failure repeats them on the next
// step instead of losing them. Callers hold h.ctl.
func (h *Hub) stepRollout(ctx context.Context, st Store, r store.Rollout, cmd rollout.Command, exclude []store.Selector) (store.Rollout, error) {
	spec, err := specOf(r)
	if err != nil {
		return r, err
	}
	state, err := decodeState(r)
	if err != nil {
		return r, err
	}
	in, claimed, err := h.input(ctx, st, r, spec, state, exclude)
	if err != nil {
		return r, err
	}
	in.Command = cmd
	m := rollout.Machine{ID: strconv.FormatInt(r.ID, 10), Spec: spec}
	next, actions := m.Step(state, in)
	if err := h.apply(ctx, st, r, withoutClaimed(actions, claimed)); err != nil {
		return r, err
	}
	if next.Status == rollout.StatusRunning && next.Stage == rollout.StageSoaking && next.MetricsBaseline == nil && needsTelemetry(spec) {
		if next.MetricsBaseline, err = h.baseline(ctx, st, spec, next); err != nil {
			return r, fmt.Errorf("metrics baseline: %w", err)
		}
	}
	raw, err := json.Marshal(next)
	if err != nil {
		return r, err
	}
	if len(actions) == 0 && bytes.Equal(raw, r.State) && string(r.Status) == string(next.Status) {
		return r, nil
	}
	r.State = raw
	r.Status = store.RolloutStatus(next.Status)
	r.Wave = next.Wave
	r.WaveStarted = next.WaveStarted
	prev := make(map[string]string, len(next.Devices))
	for id, d := range next.Devices {
		prev[id] = d.Previous
	}
	r.PreviousVersions = prev
	for _, a := range actions {
		if rec, ok := a.(*rollout.Record); ok {
			r.AddHistory(in.Now, string(next.Status), rec.Text)
		}
	}
	updated, err := st.UpdateRollout(ctx, r)
	if err != nil {
		return r, fmt.Errorf("store %s: %w", r.Ref(), err)
	}
	return updated, nil
}

// withoutClaimed drops from rollbacks the devices a newer rollout of the
// model now decides: rolling back an older rollout must not undo a newer
// one on the devices they share.
func withoutClaimed(actions []rollout.Action, claimed map[string]bool) []rollout.Action {
	if len(claimed) == 0 {
		return actions
	}
	out := make([]rollout.Action, 0, len(actions))
	for _, a := range actions {
		if rb, ok := a.(*rollout.RollBack); ok {
			c := *rb
			c.Previous = maps.Clone(rb.Previous)
			maps.DeleteFunc(c.Previous, func(id, _ string) bool { return claimed[id] })
			a = &c
		}
		out = append(out, a)
	}
	return out
}

// apply carries out a step's actions. An assignment that cannot be
// published (broker down) fails the step so it is repeated; a rollback to
// a version the hub has no release of is logged and skipped, since
// retrying cannot fix it.
func (h *Hub) apply(ctx context.Context, st Store, r store.Rollout, actions []rollout.Action) error {
	log := h.log.With("rollout", r.ID, "model", r.Model, "version", r.Version)
	for _, a := range actions {
		switch a := a.(type) {
		case *rollout.Record:
			log.Info("rollout: " + a.Text)
		case *rollout.Assign:
			rel, err := st.GetRelease(ctx, a.Model, a.Version)
			if err != nil {
				return fmt.Errorf("release %s@%s: %w", a.Model, a.Version, err)
			}
			if err := h.setEntries(ctx, a.Devices, a.Model, a.Mode, rel.Manifest, false); err != nil {
				return err
			}
			log.Info("assigned wave", "wave", a.Wave+1, "devices", len(a.Devices))
		case *rollout.RollBack:
			if err := h.rollBack(ctx, st, a, log); err != nil {
				return err
			}
		}
	}
	return nil
}

// rollBack re-assigns each device its previous version, or removes the
// model (previous ""), or drops the shadow entry in shadow mode, as one
// batch of assignments.
func (h *Hub) rollBack(ctx context.Context, st Store, a *rollout.RollBack, log interface {
	Info(string, ...any)
	Error(string, ...any)
}) error {
	var (
		errs []error
		eds  []deviceEdit
		rels = map[string]store.Release{}
	)
	for _, dev := range slices.Sorted(maps.Keys(a.Previous)) {
		prev := a.Previous[dev]
		switch {
		case a.Mode == manifest.ModeShadow:
			eds = append(eds, deviceEdit{device: dev, edit: removeEntry(a.Model, manifest.ModeShadow)})
		case prev == "":
			eds = append(eds, deviceEdit{device: dev, edit: removeEntry(a.Model, manifest.ModeActive)})
		default:
			rel, ok := rels[prev]
			if !ok {
				var gerr error
				rel, gerr = st.GetRelease(ctx, a.Model, prev)
				if errors.Is(gerr, store.ErrNotFound) {
					log.Error("cannot roll back: the hub has no release of the previous version; the device keeps its assignment",
						"device", dev, "previous", prev)
					continue
				}
				if gerr != nil {
					errs = append(errs, fmt.Errorf("roll back %s: %w", dev, gerr))
					continue
				}
				rels[prev] = rel
			}
			eds = append(eds, deviceEdit{device: dev, edit: setEntry(a.Model, manifest.ModeActive, rel.Manifest, true)})
		}
	}
	if err := h.editAll(ctx, eds); err != nil {
		errs = append(errs, fmt.Errorf("roll back: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("rolled back", "devices", len(a.Previous))
	return nil
}

// reconcileAll runs once at start: for each model, what the rollouts in
// the store want devices to run is compared with the assignments last
// published, and every difference is re-published. That covers a crash
// after the state was stored but before an assignment went out, and a
// store restored from a backup.
func (h *Hub) reconcileAll(ctx context.Context) {
	st, err := h.store()
	if err != nil {
		return
	}
	h.ctl.Lock()
	defer h.ctl.Unlock()
	rs, err := st.ListRollouts(ctx, append(slices.Clone(claimStatuses), store.StatusRolledBack)...)
	if err != nil {
		h.log.Error("reconcile: list rollouts", "err", err)
		return
	}
	newestFirst(rs)
	claimed := map[string][]store.Selector{}
	seen := map[string]bool{}
	for _, r := range rs {
		k := claimKey(r)
		newest := !seen[k]
		seen[k] = true
		if r.Status == store.StatusRolledBack && !newest {
			continue // an older rollout decides these devices now
		}
		if err := h.reconcile(ctx, st, r, claimed[k]); err != nil {
			h.log.Error("reconcile", "rollout", r.ID, "model", r.Model, "version", r.Version, "err", err)
		}
		if claims(r.Status) {
			claimed[k] = append(claimed[k], r.Selector)
		}
	}
}

func (h *Hub) reconcile(ctx context.Context, st Store, r store.Rollout, exclude []store.Selector) error {
	spec, err := specOf(r)
	if err != nil {
		return err
	}
	state, err := decodeState(r)
	if err != nil {
		return err
	}
	excluded := map[string]bool{}
	if len(exclude) > 0 {
		devices, err := st.ListDevices(ctx, nil)
		if err != nil {
			return err
		}
		for _, d := range devices {
			if slices.ContainsFunc(exclude, func(s store.Selector) bool { return s.Matches(d.Labels) }) {
				excluded[d.ID] = true
			}
		}
	}
	m := rollout.Machine{ID: strconv.FormatInt(r.ID, 10), Spec: spec}
	var fixes []rollout.Action
	for _, a := range m.Reconcile(state) {
		switch a := a.(type) {
		case *rollout.Assign:
			var ids []string
			for _, dev := range a.Devices {
				if excluded[dev] {
					continue
				}
				cur, err := h.entries(ctx, st, dev)
				if err != nil {
					return err
				}
				if entryVersion(cur, a.Model, a.Mode) != a.Version {
					ids = append(ids, dev)
				}
			}
			if len(ids) > 0 {
				fixes = append(fixes, &rollout.Assign{Model: a.Model, Version: a.Version, Mode: a.Mode, Wave: a.Wave, Devices: ids})
			}
		case *rollout.RollBack:
			prev := map[string]string{}
			for dev, v := range a.Previous {
				if excluded[dev] {
					continue
				}
				cur, err := h.entries(ctx, st, dev)
				if err != nil {
					return err
				}
				want := v
				if a.Mode == manifest.ModeShadow {
					want = ""
				}
				if entryVersion(cur, a.Model, a.Mode) != want {
					prev[dev] = v
				}
			}
			if len(prev) > 0 {
				fixes = append(fixes, &rollout.RollBack{Model: a.Model, Version: a.Version, Mode: a.Mode, Previous: prev})
			}
		}
	}
	if len(fixes) == 0 {
		return nil
	}
	h.log.Info("reconcile: republishing assignments the stored rollout wants", "rollout", r.ID, "model", r.Model, "version", r.Version)
	return h.apply(ctx, st, r, fixes)
}
