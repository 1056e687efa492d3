package rollout

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Status is where a rollout is in its life; see the package comment.
type Status string

// Statuses of a rollout.
const (
	// StatusPending: created, not stepped yet. A zero State is pending.
	StatusPending Status = "pending"
	// StatusRunning: assigning waves, waiting for installs, soaking.
	StatusRunning Status = "running"
	// StatusPaused: stopped by an operator or a failed gate; no device is
	// assigned until an operator resumes.
	StatusPaused Status = "paused"
	// StatusSucceeded: every wave passed. An active rollout keeps assigning
	// its version to devices that start matching the selector later; a
	// shadow rollout has removed its shadows and assigns nothing more.
	StatusSucceeded Status = "succeeded"
	// StatusFailed: the rollout could not start (invalid spec, no device
	// matches the selector); nothing was assigned.
	StatusFailed Status = "failed"
	// StatusRolledBack: every device the rollout assigned was sent back to
	// the version it ran before.
	StatusRolledBack Status = "rolled-back"
	// StatusAborted: stopped for good by an operator; devices keep what they
	// were assigned.
	StatusAborted Status = "aborted"
)

// Terminal reports whether the rollout runs no more waves: succeeded,
// failed, rolled-back or aborted. A succeeded rollout still assigns late
// joiners.
func (s Status) Terminal() bool {
	switch s {
	case StatusSucceeded, StatusFailed, StatusRolledBack, StatusAborted:
		return true
	}
	return false
}

// Stage is where the current wave of a running rollout is.
type Stage string

// Stages of a wave.
const (
	// StageInstalling: waiting until every device of the wave has installed,
	// failed or timed out.
	StageInstalling Stage = "installing"
	// StageSoaking: every device settled; the wave runs for Spec.Soak from
	// State.SoakStarted before its gates are evaluated.
	StageSoaking Stage = "soaking"
)

// Result is what became of one device's install of the rollout's version.
type Result string

// Install results.
const (
	// ResultInstalling: assigned, no final phase reported yet.
	ResultInstalling Result = "installing"
	// ResultInstalled: the device reported the version active.
	ResultInstalled Result = "installed"
	// ResultFailed: the device reported the install failed or rolled back.
	ResultFailed Result = "failed"
	// ResultTimedOut: no final phase within Spec.InstallTimeout of the
	// assignment; counts as an install failure.
	ResultTimedOut Result = "timed-out"
)

// Phases of the rollout's version on a device, as agents report them in
// their state (see DeviceReport.Phase). Other values (downloading,
// verifying, warming, empty) mean the install is still in progress.
const (
	PhaseActive     = "active"
	PhaseFailed     = "failed"
	PhaseRolledBack = "rolled-back"
	PhaseRemoved    = "removed"
)

// Command is an operator's request, passed to Step once.
type Command string

// Operator commands.
const (
	// CommandPause stops a running rollout (status paused).
	CommandPause Command = "pause"
	// CommandResume continues a paused rollout: the current wave starts over
	// (failed installs are assigned again, a fresh soak, gates evaluated at
	// its end).
	CommandResume Command = "resume"
	// CommandAbort stops a pending, running or paused rollout for good
	// (status aborted). Nothing is undone: devices keep what they were
	// assigned; start a rollout of another version to change that.
	CommandAbort Command = "abort"
	// CommandRollback sends every device the rollout assigned back to its
	// previous version (status rolled-back). Allowed while running, paused,
	// succeeded or aborted.
	CommandRollback Command = "rollback"
)

// CommandAllowed reports whether c applies to a rollout in status s, so the
// API can refuse it with a clear message; it returns an error wrapping
// ErrNotAllowed otherwise. Step ignores commands that are not allowed,
// silently: the API checks first and reports the error.
func CommandAllowed(s Status, c Command) error {
	if s == "" {
		s = StatusPending
	}
	var ok bool
	var why string
	switch c {
	case CommandPause:
		ok, why = s == StatusRunning, "only a running rollout can be paused"
	case CommandResume:
		ok, why = s == StatusPaused, "only a paused rollout can be resumed"
	case CommandAbort:
		ok, why = s == StatusPending || s == StatusRunning || s == StatusPaused,
			"it has finished; use rollback to undo a succeeded or aborted rollout"
	case CommandRollback:
		ok, why = s == StatusRunning || s == StatusPaused || s == StatusSucceeded || s == StatusAborted,
			"it assigned nothing yet or was already rolled back"
	default:
		return fmt.Errorf("%w: unknown command %q; want pause, resume, abort or rollback", ErrNotAllowed, c)
	}
	if !ok {
		return fmt.Errorf("%w: cannot %s a %s rollout: %s", ErrNotAllowed, c, s, why)
	}
	return nil
}

// State is everything a rollout has done and decided. It is plain data:
// the driver stores it (as JSON) after every Step and a restarted hub
// continues from it. The zero State is a pending rollout.
type State struct {
	Status Status `json:"status"`
	// Wave is the index in Spec.Waves of the current wave (the last one once
	// succeeded).
	Wave int `json:"wave"`
	// Stage of the current wave while running or paused; empty once the
	// rollout has finished (Status tells how).
	Stage Stage `json:"stage,omitempty"`
	// Started is when the rollout started; WaveStarted when the current wave
	// did; SoakStarted when its soak did (zero while installing). The driver
	// measures the wave's Metrics from SoakStarted on.
	Started     time.Time `json:"started,omitzero"`
	WaveStarted time.Time `json:"wave_started,omitzero"`
	SoakStarted time.Time `json:"soak_started,omitzero"`
	// Finished is when the rollout succeeded, failed, rolled back or aborted.
	Finished time.Time `json:"finished,omitzero"`
	// Devices are the devices the rollout assigned its version to, by ID.
	Devices map[string]Device `json:"devices,omitempty"`
	// Gates is the last evaluation of the current wave's gates.
	Gates []GateResult `json:"gates,omitempty"`
	// Reason explains a paused, failed, rolled-back or aborted status.
	Reason string `json:"reason,omitempty"`
	// CommandSeq is the number of the last numbered command considered.
	CommandSeq uint64 `json:"command_seq,omitempty"`
	// History lists what happened, oldest first (at most maxHistory entries;
	// the oldest are dropped beyond).
	History []Entry `json:"history,omitempty"`
	// MetricsBaseline is the driver's own record, opaque to the Machine, of
	// the telemetry already counted for the wave's devices when the soak
	// started, so that the Metrics it measures cover the soak only even
	// where its telemetry store is coarser than the soak (per-minute
	// rollups). The Machine keeps it as is and drops it whenever a soak
	// starts (again) or the rollout ends; the driver records a new one when
	// it finds a soaking state without one.
	MetricsBaseline json.RawMessage `json:"metrics_baseline,omitempty"`
}

// maxHistory bounds State.History, which a succeeded rollout keeps growing
// while late joiners arrive.
const maxHistory = 1000

// Device is one device the rollout assigned its version to.
type Device struct {
	// Wave is the index of the wave the device was assigned in.
	Wave int `json:"wave"`
	// Previous is the version the device ran before (empty: none), the one
	// a rollback assigns.
	Previous string `json:"previous,omitempty"`
	// AssignedAt is when the device was (last) assigned; its install timeout
	// runs from here.
	AssignedAt time.Time `json:"assigned_at"`
	// Late is true for a device assigned after its wave started (it began
	// matching the selector later) or after the rollout succeeded.
	Late bool `json:"late,omitempty"`
	// Phase is the last phase reported for the rollout's version.
	Phase string `json:"phase,omitempty"`
	// Result is the install outcome derived from Phase and the timeout.
	Result Result `json:"result"`
}

// Entry is one line of a rollout's history.
type Entry struct {
	Time time.Time `json:"time"`
	Text string    `json:"text"`
}

// WaveDevices returns the sorted IDs of the devices assigned in the current
// wave: the ones whose telemetry makes the wave's Metrics.
func (st State) WaveDevices() []string {
	var out []string
	for id, d := range st.Devices {
		if d.Wave == st.Wave {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// DevicesWith returns the sorted IDs of the assigned devices with result r.
func (st State) DevicesWith(r Result) []string {
	var out []string
	for id, d := range st.Devices {
		if d.Result == r {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (st State) clone() State {
	st.Devices = maps.Clone(st.Devices)
	st.Gates = slices.Clone(st.Gates)
	st.History = slices.Clone(st.History)
	st.MetricsBaseline = slices.Clone(st.MetricsBaseline)
	return st
}

// Input is what the driver observed since the last Step.
type Input struct {
	// Now is the current time; the Machine reads no clock.
	Now time.Time
	// Devices are all devices matching the selector now, by ID, with what
	// they report about the rollout's model.
	Devices map[string]DeviceReport
	// Metrics are measured over the current wave's devices (State.WaveDevices)
	// that still match the selector, on the rollout's version, since
	// State.SoakStarted (see "Gates and telemetry" in the package comment). The Machine counts
	// install_failures itself; a value given here counts if it is larger.
	Metrics Metrics
	// Command is an operator command to apply in this step, or empty.
	Command Command
	// CommandSeq numbers Command: the store hands out increasing numbers.
	// Step considers a command only when its number is above
	// State.CommandSeq and records it, so a command delivered again (the
	// driver crashed before dropping it from its queue) is applied once,
	// and one that was not allowed does not apply later when it would be.
	// 0 means unnumbered: the command is considered on every step it is
	// passed to, so the driver must pass it once.
	CommandSeq uint64
}

// DeviceReport is what one matching device reports about the rollout's
// model, from its latest state report.
type DeviceReport struct {
	// Version is the version of the model the device serves now (empty:
	// none) and Previous the one it keeps for rollback. They are read when
	// the device is assigned, to know what a rollback returns it to.
	Version  string
	Previous string
	// Phase is the phase of the rollout's version on the device (PhaseActive,
	// PhaseFailed, PhaseRolledBack, or an in-progress phase), and must
	// describe the device's answer to the newest assignment the driver
	// published for this rollout: until the device reports a state with that
	// assignment's sequence, the driver passes "". A stale "failed" would
	// otherwise fail a retried install at once. A device that serves the
	// version in the rollout's mode is active.
	Phase string
}

// Action is an instruction for the driver: *Assign, *RollBack or *Record.
// The driver applies a step's actions in order before storing the new
// State, so a crash in between repeats them rather than losing them.
type Action interface{ action() }

// Assign tells the driver to sign and publish assignments that give Devices
// Model at Version in Mode (keeping the other models of each device).
type Assign struct {
	Model   string
	Version string
	Mode    string
	// Wave is the index of the wave the devices belong to.
	Wave int
	// Devices are sorted device IDs.
	Devices []string
}

// RollBack tells the driver to undo the rollout on devices. In active mode
// each device of Previous is assigned its previous version of Model, or
// has Model removed from its assignment when the previous version is
// empty. In shadow mode the shadow entry of Model at Version is removed and
// the serving version, never touched, stays.
type RollBack struct {
	Model   string
	Version string
	Mode    string
	// Previous maps device ID to the version to return to.
	Previous map[string]string
}

// Record tells the driver to store an event of the rollout (and log it).
// The same text is in State.History.
type Record struct {
	Text string
}

func (*Assign) action()   {}
func (*RollBack) action() {}
func (*Record) action()   {}

// Machine decides a rollout. It holds only the rollout's ID (the seed of
// the device order) and its spec; all progress is in State. Its methods are
// pure: no I/O, no clock, no goroutines; a Machine value is safe for
// concurrent use.
type Machine struct {
	ID   string `json:"id"`
	Spec Spec   `json:"spec"`
}

// Step applies one observation to a rollout and returns its next state and
// what the driver must do. It does not modify st or in. The driver calls it
// on every change it sees (state reports, telemetry, operator commands) and
// periodically (soak and install timeouts are checked against in.Now).
//
// Step is idempotent: called again with the returned state and the same
// input it returns the same state and no action (a command counts once when
// numbered, see Input.CommandSeq), and it never assigns a device twice
// except to retry its install after a resume. See the package
// comment for the rules it applies.
func (m Machine) Step(st State, in Input) (State, []Action) {
	s := &stepper{id: m.ID, spec: m.Spec.WithDefaults(), st: st.clone(), in: in}
	if s.st.Status == "" {
		s.st.Status = StatusPending
	}
	if s.st.Devices == nil {
		s.st.Devices = map[string]Device{}
	}
	// A stored state always fits its spec; clamp anyway so a mismatch
	// cannot index out of range.
	s.st.Wave = min(max(s.st.Wave, 0), len(s.spec.Waves)-1)
	s.observe()
	s.command()
	switch s.st.Status {
	case StatusPending:
		s.start()
		if s.st.Status == StatusRunning {
			s.progress()
		}
	case StatusRunning:
		s.progress()
	case StatusSucceeded:
		if s.spec.Mode != ModeShadow {
			s.lateJoiners()
		}
	}
	if len(s.st.Devices) == 0 {
		s.st.Devices = nil
	}
	if s.st.Status.Terminal() || s.st.Stage != StageSoaking {
		s.st.MetricsBaseline = nil
	}
	return s.st, s.actions
}

// Reconcile returns, from st alone, what the rollout wants its devices to
// run: one Assign per wave for the devices it assigned (running, paused,
// succeeded or aborted), or one RollBack (rolled back); nothing when
// pending or failed. A restarted driver compares these with the
// assignments it has published and republishes the ones that differ, which
// covers a crash between publishing and storing the state.
func (m Machine) Reconcile(st State) []Action {
	spec := m.Spec.WithDefaults()
	if st.Status == StatusSucceeded && spec.Mode == ModeShadow {
		// A shadow rollout that succeeded removed its shadows.
		if len(st.Devices) == 0 {
			return nil
		}
		return []Action{rollBackAction(spec, st.Devices)}
	}
	switch st.Status {
	case StatusRunning, StatusPaused, StatusSucceeded, StatusAborted:
		byWave := map[int][]string{}
		for id, d := range st.Devices {
			byWave[d.Wave] = append(byWave[d.Wave], id)
		}
		var out []Action
		for _, w := range slices.Sorted(maps.Keys(byWave)) {
			ids := byWave[w]
			slices.Sort(ids)
			out = append(out, &Assign{Model: spec.Model, Version: spec.Version, Mode: spec.Mode, Wave: w, Devices: ids})
		}
		return out
	case StatusRolledBack:
		if len(st.Devices) == 0 {
			return nil
		}
		return []Action{rollBackAction(spec, st.Devices)}
	}
	return nil
}

func rollBackAction(spec Spec, devices map[string]Device) *RollBack {
	prev := make(map[string]string, len(devices))
	for id, d := range devices {
		prev[id] = d.Previous
	}
	return &RollBack{Model: spec.Model, Version: spec.Version, Mode: spec.Mode, Previous: prev}
}

// stepper carries one Step's working copy.
type stepper struct {
	id      string
	spec    Spec
	st      State
	in      Input
	actions []Action
}

func (s *stepper) now() time.Time { return s.in.Now }

func (s *stepper) record(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	s.st.History = append(s.st.History, Entry{Time: s.now(), Text: text})
	if n := len(s.st.History) - maxHistory; n > 0 {
		s.st.History = slices.Delete(s.st.History, 0, n)
	}
	s.actions = append(s.actions, &Record{Text: text})
}

func (s *stepper) waveLabel(w int) string {
	return fmt.Sprintf("wave %d/%d (%d%%)", w+1, len(s.spec.Waves), s.spec.Waves[w])
}

// observe updates the assigned devices from their reports. A device
// assigned in this very step is not observed: its report predates the
// assignment.
func (s *stepper) observe() {
	switch s.st.Status {
	case StatusRunning, StatusPaused, StatusSucceeded, StatusAborted:
	default:
		return
	}
	if s.st.Status == StatusSucceeded && s.spec.Mode == ModeShadow {
		return // its shadows are removed: the results are final
	}
	for id, d := range s.st.Devices {
		rep, ok := s.in.Devices[id]
		if !ok || !d.AssignedAt.Before(s.now()) {
			continue
		}
		d.Phase = rep.Phase
		switch rep.Phase {
		case PhaseActive:
			d.Result = ResultInstalled
		case PhaseFailed, PhaseRolledBack, PhaseRemoved:
			d.Result = ResultFailed
		default:
			d.Result = ResultInstalling
			if !s.now().Before(d.AssignedAt.Add(s.spec.InstallTimeout)) {
				d.Result = ResultTimedOut
			}
		}
		s.st.Devices[id] = d
	}
}

func (s *stepper) command() {
	c := s.in.Command
	if c == "" {
		return
	}
	if seq := s.in.CommandSeq; seq != 0 {
		if seq <= s.st.CommandSeq {
			return
		}
		s.st.CommandSeq = seq
	}
	if CommandAllowed(s.st.Status, c) != nil {
		return
	}
	switch c {
	case CommandPause:
		s.st.Status, s.st.Reason = StatusPaused, "paused by operator"
		s.record("paused by operator in %s", s.waveLabel(s.st.Wave))
	case CommandResume:
		s.resume()
	case CommandAbort:
		s.finish(StatusAborted, "aborted by operator")
		s.record("aborted by operator: no more devices will be assigned; the %d assigned keep %s", len(s.st.Devices), s.spec.Version)
	case CommandRollback:
		s.rollback("rolled back by operator")
	}
}

// resume starts the current wave over: failed and timed-out installs are
// assigned again, every unsettled device gets a fresh install timeout, and
// the soak (and the driver's metrics window) starts again once all settled.
func (s *stepper) resume() {
	s.st.Status, s.st.Reason = StatusRunning, ""
	s.st.Stage, s.st.SoakStarted, s.st.Gates, s.st.MetricsBaseline = StageInstalling, time.Time{}, nil, nil
	var retry []string
	for _, id := range s.members() {
		d := s.st.Devices[id]
		switch d.Result {
		case ResultInstalled:
			continue
		case ResultFailed, ResultTimedOut:
			retry = append(retry, id)
			d.Phase, d.Result = "", ResultInstalling
		}
		d.AssignedAt = s.now()
		s.st.Devices[id] = d
	}
	s.record("resumed by operator: %s starts over, %d failed install(s) retried", s.waveLabel(s.st.Wave), len(retry))
	if len(retry) > 0 {
		s.assignAction(s.st.Wave, retry)
	}
}

func (s *stepper) assignAction(wave int, ids []string) {
	s.actions = append(s.actions, &Assign{Model: s.spec.Model, Version: s.spec.Version, Mode: s.spec.Mode, Wave: wave, Devices: ids})
}

func (s *stepper) start() {
	if err := s.spec.Validate(); err != nil {
		s.fail(err.Error())
		return
	}
	if len(s.in.Devices) == 0 {
		s.fail("no device matches selector " + formatSelector(s.spec.Selector))
		return
	}
	s.st.Status, s.st.Started = StatusRunning, s.now()
	s.st.Wave, s.st.Stage, s.st.WaveStarted = 0, StageInstalling, s.now()
	gates := make([]string, len(s.spec.Gates))
	for i, g := range s.spec.Gates {
		gates[i] = g.String()
	}
	s.record("started %s@%s (%s) on %d device(s) matching %s: waves %s%%, soak %s, gates %s, on failure %s",
		s.spec.Model, s.spec.Version, s.spec.Mode, len(s.in.Devices), formatSelector(s.spec.Selector),
		FormatWaves(s.spec.Waves), s.spec.Soak, strings.Join(gates, " "), s.spec.OnFailure)
}

func (s *stepper) fail(reason string) {
	s.finish(StatusFailed, reason)
	s.record("failed: %s", reason)
}

// finish ends the rollout in the terminal status, with reason: no wave is
// installing or soaking any more, so the stage and soak start are cleared
// (status output shows the status instead of a stale stage).
func (s *stepper) finish(status Status, reason string) {
	s.st.Status, s.st.Reason, s.st.Finished = status, reason, s.now()
	s.st.Stage, s.st.SoakStarted = "", time.Time{}
}

// progress drives a running rollout as far as this input allows: assign
// the wave, settle it, soak it, evaluate its gates, and on to the next wave
// in the same step when nothing is left to wait for.
func (s *stepper) progress() {
	ordered := order(s.id, slices.Collect(maps.Keys(s.in.Devices)))
	for s.st.Status == StatusRunning {
		s.assignWave(ordered)
		members := s.members()
		if len(members) == 0 {
			// A wave that adds no device (small fleet), or whose devices all
			// stopped matching the selector, has nothing to wait for.
			s.record("%s has no devices; skipped", s.waveLabel(s.st.Wave))
			s.nextWave()
			continue
		}
		if s.st.Stage == StageInstalling {
			if !s.settled(members) {
				s.st.Gates = s.evaluate(members)
				return
			}
			s.st.Stage, s.st.SoakStarted, s.st.MetricsBaseline = StageSoaking, s.now(), nil
			ok, failed, timedOut := s.tally(members)
			s.record("%s installed: %d active, %d failed, %d timed out; soaking %s", s.waveLabel(s.st.Wave), ok, failed, timedOut, s.spec.Soak)
		}
		results := s.evaluate(members)
		s.st.Gates = results
		// Failed installs do not heal while soaking: trip at once.
		if bad := failedGates(results, true); len(bad) > 0 {
			s.gatesFailed(bad)
			return
		}
		if s.now().Before(s.st.SoakStarted.Add(s.spec.Soak)) {
			return
		}
		if bad := failedGates(results, false); len(bad) > 0 {
			s.gatesFailed(bad)
			return
		}
		passed := make([]string, len(results))
		for i, r := range results {
			passed[i] = r.String()
		}
		s.record("%s passed its gates: %s", s.waveLabel(s.st.Wave), strings.Join(passed, "; "))
		s.nextWave()
	}
}

// assignWave assigns the rollout's version to the devices of the current
// wave's cumulative share that have not got it: at the start of the wave,
// and later to devices that started matching since (late joiners whose
// place in the order falls within the share).
func (s *stepper) assignWave(ordered []string) {
	c := waveCount(len(ordered), s.spec.Waves[s.st.Wave])
	late := s.now().After(s.st.WaveStarted)
	if ids := s.assignNew(ordered[:c], s.st.Wave, late); len(ids) > 0 {
		if late {
			s.record("%s: assigned %s to %d device(s) that joined after the wave started: %s", s.waveLabel(s.st.Wave), s.spec.Version, len(ids), brief(ids))
		} else {
			s.record("%s: assigned %s to %d device(s): %s", s.waveLabel(s.st.Wave), s.spec.Version, len(ids), brief(ids))
		}
	}
}

// lateJoiners gives a succeeded rollout's version to every matching device
// that does not have it yet.
func (s *stepper) lateJoiners() {
	ordered := order(s.id, slices.Collect(maps.Keys(s.in.Devices)))
	if ids := s.assignNew(ordered, len(s.spec.Waves)-1, true); len(ids) > 0 {
		s.record("assigned %s to %d device(s) that joined after the rollout succeeded: %s", s.spec.Version, len(ids), brief(ids))
	}
}

// assignNew assigns the devices of ids not assigned yet and returns them, sorted.
func (s *stepper) assignNew(ids []string, wave int, late bool) []string {
	var added []string
	for _, id := range ids {
		if _, ok := s.st.Devices[id]; ok {
			continue
		}
		rep := s.in.Devices[id]
		prev := rep.Version
		if prev == s.spec.Version {
			prev = rep.Previous
		}
		s.st.Devices[id] = Device{Wave: wave, Previous: prev, AssignedAt: s.now(), Late: late, Result: ResultInstalling}
		added = append(added, id)
	}
	if len(added) == 0 {
		return nil
	}
	slices.Sort(added)
	s.assignAction(wave, added)
	return added
}

// members are the current wave's devices that still match the selector.
func (s *stepper) members() []string {
	var out []string
	for id, d := range s.st.Devices {
		if _, ok := s.in.Devices[id]; ok && d.Wave == s.st.Wave {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (s *stepper) settled(members []string) bool {
	for _, id := range members {
		if r := s.st.Devices[id].Result; r != ResultInstalled && r != ResultFailed && r != ResultTimedOut {
			return false
		}
	}
	return true
}

func (s *stepper) tally(members []string) (ok, failed, timedOut int) {
	for _, id := range members {
		switch s.st.Devices[id].Result {
		case ResultInstalled:
			ok++
		case ResultFailed:
			failed++
		case ResultTimedOut:
			timedOut++
		}
	}
	return ok, failed, timedOut
}

// evaluate checks the gates on the driver's metrics plus the install
// failures counted here.
func (s *stepper) evaluate(members []string) []GateResult {
	_, failed, timedOut := s.tally(members)
	m := maps.Clone(s.in.Metrics)
	if m == nil {
		m = Metrics{}
	}
	m[MetricInstallFailures] = max(m[MetricInstallFailures], float64(failed+timedOut))
	return Evaluate(s.spec.Gates, m)
}

// failedGates returns the results that fail: with installOnly, only the
// install_failures gates (checked at any time); otherwise every gate not
// passed, a missing metric included (checked at the end of the soak).
func failedGates(results []GateResult, installOnly bool) []GateResult {
	var out []GateResult
	for _, r := range results {
		if r.Passed || installOnly && r.Gate.Metric != MetricInstallFailures {
			continue
		}
		out = append(out, r)
	}
	return out
}

func (s *stepper) gatesFailed(bad []GateResult) {
	parts := make([]string, len(bad))
	for i, r := range bad {
		parts[i] = r.String()
		if r.Missing {
			parts[i] += " at the end of the soak"
		}
	}
	reason := fmt.Sprintf("%s failed its gates: %s", s.waveLabel(s.st.Wave), strings.Join(parts, "; "))
	if s.spec.OnFailure == OnFailureRollback && !onlyEvidence(bad) {
		s.rollback(reason)
		return
	}
	s.st.Status, s.st.Reason = StatusPaused, reason
	if s.spec.OnFailure == OnFailureRollback {
		s.record("%s; paused rather than rolled back, since too little traffic is no evidence against %s: resume once the wave's devices serve requests, or roll back or abort", reason, s.spec.Version)
		return
	}
	s.record("%s; paused until an operator resumes, rolls back or aborts", reason)
}

// onlyEvidence reports whether every failed gate says the wave saw too
// little traffic to judge (a metric without data, or a minimum on
// requests) rather than that the version did badly.
func onlyEvidence(bad []GateResult) bool {
	for _, r := range bad {
		if !r.Missing && r.Gate.Metric != MetricRequests {
			return false
		}
	}
	return true
}

func (s *stepper) rollback(reason string) {
	s.finish(StatusRolledBack, reason)
	s.record("%s; rolling back %d device(s)", reason, len(s.st.Devices))
	if len(s.st.Devices) > 0 {
		s.actions = append(s.actions, rollBackAction(s.spec, s.st.Devices))
	}
}

// nextWave moves to the next wave, or succeeds after the last.
func (s *stepper) nextWave() {
	if s.st.Wave == len(s.spec.Waves)-1 {
		s.finish(StatusSucceeded, "")
		if s.spec.Mode == ModeShadow {
			// The candidate has proven itself beside the serving version on
			// every wave: the comparison is over, and the shadows stop.
			s.record("succeeded: %s agreed with the serving version on %d device(s) in shadow; shadows removed, serving versions untouched; start an active rollout of %s to serve it",
				s.spec.Version, len(s.st.Devices), s.spec.Version)
			s.actions = append(s.actions, rollBackAction(s.spec, s.st.Devices))
			return
		}
		s.record("succeeded: %d device(s) assigned %s", len(s.st.Devices), s.spec.Version)
		return
	}
	s.st.Wave++
	s.st.Stage, s.st.WaveStarted, s.st.SoakStarted, s.st.Gates = StageInstalling, s.now(), time.Time{}, nil
}

// formatSelector returns "k=v,k2=v2" sorted by key, or a note for an empty
// selector.
func formatSelector(sel map[string]string) string {
	if len(sel) == 0 {
		return "(empty selector: every device)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ",")
}

// brief lists up to 5 IDs for history text.
func brief(ids []string) string {
	if len(ids) <= 5 {
		return strings.Join(ids, " ")
	}
	return strings.Join(ids[:5], " ") + fmt.Sprintf(" and %d more", len(ids)-5)
}
