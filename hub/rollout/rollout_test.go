package rollout

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var healthy = Metrics{MetricErrorRate: 0.001, MetricP95LatencyMS: 20, MetricRequests: 500}

func TestHappyPath(t *testing.T) {
	spec := baseSpec([]int{1, 10, 50, 100}, MustGates(t,
		"error_rate<0.01", "p95_latency_ms<50", "install_failures<=0", "requests>=10")...)
	s := newSim(t, spec, 200)
	s.metrics = healthy
	s.run(time.Minute, s.status(StatusSucceeded))

	// With a fixed fleet the Assign actions are exactly WaveTargets.
	want := WaveTargets(s.m.ID, slices.Collect(maps.Keys(s.fleet)), spec.Waves)
	got := assigns(s.log)
	if len(got) != len(want) {
		t.Fatalf("%d Assign actions, want %d:\n%s", len(got), len(want), describe(s.log))
	}
	for i := range got {
		if got[i].Wave != i || !slices.Equal(got[i].Devices, sorted(want[i])) {
			t.Errorf("Assign %d = wave %d %v, want wave %d %v", i, got[i].Wave, got[i].Devices, i, sorted(want[i]))
		}
	}
	if len(s.assigned) != 200 {
		t.Fatalf("%d devices assigned, want 200", len(s.assigned))
	}
	for d, n := range s.assigned {
		if n != 1 {
			t.Errorf("device %s assigned %d times", d, n)
		}
		if s.st.Devices[d].Previous != oldVersion || s.st.Devices[d].Result != ResultInstalled {
			t.Errorf("device %s = %+v", d, s.st.Devices[d])
		}
	}
	if n := strings.Count(s.history(), "passed its gates"); n != 4 {
		t.Errorf("%d waves passed, want 4\n%s", n, s.history())
	}
	if elapsed := s.st.Finished.Sub(s.st.Started); elapsed < 4*spec.Soak {
		t.Errorf("finished after %s, less than four soaks", elapsed)
	}
	if len(rollbacks(s.log)) != 0 {
		t.Error("happy path rolled back")
	}
	// Succeeded and nothing changes: no more actions.
	s.now = s.now.Add(time.Hour)
	if acts := s.step(""); len(acts) != 0 {
		t.Fatalf("succeeded rollout acted: %s", describe(acts))
	}
}

func TestWaveStages(t *testing.T) {
	spec := baseSpec([]int{50, 100}, MustGates(t, "install_failures<=0", "error_rate<0.01")...)
	s := newSim(t, spec, 4)
	s.metrics = healthy

	acts := s.step("")
	s.wantStatus(StatusRunning)
	if a := assigns(acts); len(a) != 1 || len(a[0].Devices) != 2 || s.st.Stage != StageInstalling {
		t.Fatalf("start: %s, stage %s", describe(acts), s.st.Stage)
	}
	wave0 := s.st.WaveDevices()

	// One device active, one still downloading: keep waiting.
	s.now = s.now.Add(time.Minute)
	s.report(PhaseActive, wave0[0])
	s.report("downloading", wave0[1])
	s.step("")
	if s.st.Stage != StageInstalling {
		t.Fatalf("stage = %s with a device downloading", s.st.Stage)
	}
	if r := s.st.Gates[0]; !r.Passed || r.Value != 0 {
		t.Errorf("install gate while installing = %+v", r)
	}

	// Both active: soak starts now.
	s.now = s.now.Add(time.Minute)
	s.report(PhaseActive, wave0[1])
	s.step("")
	if s.st.Stage != StageSoaking || !s.st.SoakStarted.Equal(s.now) {
		t.Fatalf("stage = %s soak started %v, want soaking at %v", s.st.Stage, s.st.SoakStarted, s.now)
	}

	// One second before the soak ends: still soaking.
	s.now = s.st.SoakStarted.Add(spec.Soak - time.Second)
	if acts := s.step(""); len(acts) != 0 || s.st.Wave != 0 {
		t.Fatalf("acted before the soak ended: %s", describe(acts))
	}
	// At the end of the soak: next wave.
	s.now = s.st.SoakStarted.Add(spec.Soak)
	acts = s.step("")
	if a := assigns(acts); len(a) != 1 || a[0].Wave != 1 || len(a[0].Devices) != 2 || s.st.Wave != 1 {
		t.Fatalf("after soak: %s", describe(acts))
	}
	if !s.st.WaveStarted.Equal(s.now) || !s.st.SoakStarted.IsZero() || s.st.Stage != StageInstalling {
		t.Fatalf("wave 2 state: %+v", s.st)
	}
}

func TestInstallFailureRollsBack(t *testing.T) {
	spec := baseSpec([]int{1, 10, 50, 100}, MustGates(t, "install_failures<=0", "error_rate<0.01")...)
	spec.OnFailure = OnFailureRollback
	s := newSim(t, spec, 50)
	s.metrics = healthy

	acts := s.step("")
	canary := assigns(acts)[0].Devices
	if len(canary) != 1 {
		t.Fatalf("wave 1 = %v, want one device", canary)
	}
	// The agent fails to load the model and goes back to 1.0.0.
	s.now = s.now.Add(20 * time.Second)
	s.report(PhaseRolledBack, canary...)
	acts = s.step("")
	s.wantStatus(StatusRolledBack)
	rb := rollbacks(acts)
	if len(rb) != 1 || !maps.Equal(rb[0].Previous, map[string]string{canary[0]: oldVersion}) || rb[0].Mode != ModeActive || rb[0].Model != "vibration" {
		t.Fatalf("actions = %s", describe(acts))
	}
	if !strings.Contains(s.st.Reason, "wave 1/4 (1%) failed its gates: install_failures<=0: 1 (failed)") {
		t.Errorf("reason = %q", s.st.Reason)
	}
	if s.st.Finished.Sub(s.st.Started) != 20*time.Second {
		t.Errorf("rolled back after %s; install failures should not wait for the soak", s.st.Finished.Sub(s.st.Started))
	}
	// Nothing more happens, whatever the input.
	s.now = s.now.Add(time.Hour)
	s.fleet["newcomer"] = DeviceReport{}
	if acts := s.step(""); len(acts) != 0 {
		t.Fatalf("rolled-back rollout acted: %s", describe(acts))
	}
	if err := CommandAllowed(s.st.Status, CommandRollback); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("second rollback allowed: %v", err)
	}
	if got := s.m.Reconcile(s.st); len(got) != 1 || !maps.Equal(got[0].(*RollBack).Previous, rb[0].Previous) {
		t.Errorf("Reconcile = %s", describe(got))
	}
}

func TestGateFailureRollsBackEveryWave(t *testing.T) {
	spec := baseSpec([]int{10, 50, 100}, MustGates(t, "error_rate<0.01")...)
	spec.OnFailure = OnFailureRollback
	s := newSim(t, spec, 20)
	s.fleet["dev-000"] = DeviceReport{} // ran no version of the model before
	s.metrics = healthy
	s.run(time.Minute, func() bool { return s.st.Wave == 2 })
	s.metrics = Metrics{MetricErrorRate: 0.2, MetricRequests: 100}
	s.run(time.Minute, s.status(StatusRolledBack))

	rb := rollbacks(s.log)
	if len(rb) != 1 || len(rb[0].Previous) != 20 {
		t.Fatalf("rollbacks = %s", describe(s.log))
	}
	for d, v := range rb[0].Previous {
		want := oldVersion
		if d == "dev-000" {
			want = ""
		}
		if v != want {
			t.Errorf("%s rolls back to %q, want %q", d, v, want)
		}
	}
	if !strings.Contains(s.st.Reason, "wave 3/3 (100%) failed its gates: error_rate<0.01: 0.2 (failed)") {
		t.Errorf("reason = %q", s.st.Reason)
	}
}

func TestGatePauseResume(t *testing.T) {
	spec := baseSpec([]int{10, 50, 100}, MustGates(t, "p95_latency_ms<50", "install_failures<=0")...)
	s := newSim(t, spec, 100)
	s.metrics = Metrics{MetricP95LatencyMS: 20}
	s.run(time.Minute, func() bool { return s.st.Wave == 1 })

	// Wave 2 is slow.
	s.metrics = Metrics{MetricP95LatencyMS: 72.4}
	s.run(time.Minute, s.status(StatusPaused))
	wantReason := "wave 2/3 (50%) failed its gates: p95_latency_ms<50: 72.4 (failed)"
	if s.st.Reason != wantReason {
		t.Fatalf("reason = %q, want %q", s.st.Reason, wantReason)
	}
	if r := s.st.Gates[0]; r.Passed || r.Value != 72.4 || r.Missing {
		t.Errorf("gate result = %+v", r)
	}
	if last := s.log[len(s.log)-1].(*Record); !strings.Contains(last.Text, wantReason+"; paused") {
		t.Errorf("record = %q", last.Text)
	}
	pausedAt := s.now

	// Paused: time passes, a device joins, nothing is assigned.
	s.fleet["late-paused"] = DeviceReport{Version: oldVersion}
	for range 10 {
		s.now = s.now.Add(10 * time.Minute)
		if acts := s.step(""); len(acts) != 0 {
			t.Fatalf("paused rollout acted: %s", describe(acts))
		}
	}
	if _, ok := s.st.Devices["late-paused"]; ok {
		t.Fatal("late joiner assigned while paused")
	}
	if err := CommandAllowed(s.st.Status, CommandPause); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("pause of a paused rollout: %v", err)
	}

	// The operator fixes the noisy neighbour and resumes: the wave starts
	// over. Nothing failed to install, but with 101 devices the wave's 50%
	// share is one device larger, and that device joins the wave.
	s.metrics = Metrics{MetricP95LatencyMS: 30}
	acts := s.step(CommandResume)
	s.wantStatus(StatusRunning)
	if !hasEntry(s.st, "resumed by operator: wave 2/3 (50%) starts over, 0 failed install(s) retried") {
		t.Fatalf("history:\n%s", s.history())
	}
	a := assigns(acts)
	if len(a) != 1 || len(a[0].Devices) != 1 || !s.st.Devices[a[0].Devices[0]].Late || a[0].Wave != 1 {
		t.Fatalf("resume: %s", describe(acts))
	}
	if s.st.Stage != StageInstalling || s.st.Wave != 1 || s.st.Reason != "" {
		t.Fatalf("after resume: stage %s wave %d reason %q", s.st.Stage, s.st.Wave, s.st.Reason)
	}
	// Once it has installed, a fresh soak starts; the gates are evaluated
	// at its end.
	s.install()
	s.now = s.now.Add(time.Minute)
	s.step("")
	if s.st.Stage != StageSoaking || !s.st.SoakStarted.Equal(s.now) {
		t.Fatalf("stage %s soak started %v, want soaking from %v", s.st.Stage, s.st.SoakStarted, s.now)
	}
	s.now = s.now.Add(spec.Soak - time.Second)
	s.step("")
	if s.st.Wave != 1 {
		t.Fatal("advanced before the new soak ended")
	}
	s.run(time.Minute, s.status(StatusSucceeded))
	if _, ok := s.st.Devices["late-paused"]; !ok {
		t.Error("late joiner never assigned")
	}
	if !s.st.Finished.After(pausedAt.Add(100 * time.Minute)) {
		t.Error("finished too early")
	}
	for d, n := range s.assigned {
		if n != 1 {
			t.Errorf("device %s assigned %d times", d, n)
		}
	}
}

func TestInstallTimeoutPauseRetry(t *testing.T) {
	spec := baseSpec([]int{50, 100}, MustGates(t, "install_failures<=0")...)
	s := newSim(t, spec, 4)
	acts := s.step("")
	wave0 := assigns(acts)[0].Devices
	stuck := wave0[1]

	s.now = s.now.Add(time.Minute)
	s.report(PhaseActive, wave0[0])
	s.report("downloading", stuck)
	s.step("")
	s.now = t0.Add(spec.InstallTimeout - time.Second)
	s.step("")
	s.wantStatus(StatusRunning)
	s.now = t0.Add(spec.InstallTimeout)
	s.step("")
	s.wantStatus(StatusPaused)
	if s.st.Devices[stuck].Result != ResultTimedOut || !strings.Contains(s.st.Reason, "install_failures<=0: 1 (failed)") {
		t.Fatalf("device %+v, reason %q", s.st.Devices[stuck], s.st.Reason)
	}
	if !hasEntry(s.st, "wave 1/2 (50%) installed: 1 active, 0 failed, 1 timed out") {
		t.Errorf("history:\n%s", s.history())
	}

	// Resume retries the stuck device with a fresh timeout.
	s.now = s.now.Add(time.Hour)
	acts = s.step(CommandResume)
	if a := assigns(acts); len(a) != 1 || !slices.Equal(a[0].Devices, []string{stuck}) || a[0].Wave != 0 {
		t.Fatalf("resume actions: %s", describe(acts))
	}
	if d := s.st.Devices[stuck]; d.Result != ResultInstalling || !d.AssignedAt.Equal(s.now) {
		t.Fatalf("retried device = %+v", d)
	}
	// Its old "downloading" report is still there; the driver passes the
	// phase for the new assignment once the device answers it.
	s.now = s.now.Add(time.Minute)
	s.report(PhaseActive, stuck)
	s.step("")
	if s.st.Stage != StageSoaking {
		t.Fatalf("stage = %s", s.st.Stage)
	}
	s.run(time.Minute, s.status(StatusSucceeded))
	if s.assigned[stuck] != 2 {
		t.Errorf("stuck device assigned %d times, want 2 (once and a retry)", s.assigned[stuck])
	}
}

func TestFailedInstallRetriedOnResume(t *testing.T) {
	spec := baseSpec([]int{100}, MustGates(t, "install_failures<=1")...)
	s := newSim(t, spec, 5)
	acts := s.step("")
	all := assigns(acts)[0].Devices
	s.now = s.now.Add(time.Minute)
	s.report(PhaseActive, all[2:]...)
	s.report(PhaseFailed, all[:2]...)
	s.step("")
	s.wantStatus(StatusPaused)
	if !strings.Contains(s.st.Reason, "install_failures<=1: 2 (failed)") {
		t.Fatalf("reason = %q", s.st.Reason)
	}
	if got := s.st.DevicesWith(ResultFailed); !slices.Equal(got, all[:2]) {
		t.Fatalf("failed devices = %v", got)
	}
	s.now = s.now.Add(time.Minute)
	acts = s.step(CommandResume)
	if a := assigns(acts); len(a) != 1 || !slices.Equal(a[0].Devices, all[:2]) {
		t.Fatalf("resume: %s", describe(acts))
	}
	// The stale "failed" reports are not read in the step that retries.
	if got := s.st.DevicesWith(ResultInstalling); !slices.Equal(got, all[:2]) {
		t.Fatalf("installing after resume = %v", got)
	}
	s.report("", all[:2]...) // the driver: no answer to the new assignment yet
	s.run(time.Minute, s.status(StatusSucceeded))
}

func TestMissingMetricFailsAtSoakEnd(t *testing.T) {
	spec := baseSpec([]int{100}, MustGates(t, "error_rate<0.01", "install_failures<=0")...)
	s := newSim(t, spec, 3)
	s.step("")
	s.now = s.now.Add(time.Minute)
	s.install()
	s.step("")
	if s.st.Stage != StageSoaking {
		t.Fatalf("stage = %s", s.st.Stage)
	}
	if r := s.st.Gates[0]; !r.Missing || r.Passed {
		t.Fatalf("error_rate without data = %+v", r)
	}
	s.now = s.now.Add(spec.Soak - time.Second)
	s.step("")
	s.wantStatus(StatusRunning) // no data yet is not a failure before the soak ends
	s.now = s.now.Add(time.Second)
	s.step("")
	s.wantStatus(StatusPaused)
	if want := "wave 1/1 (100%) failed its gates: error_rate<0.01: no data at the end of the soak"; s.st.Reason != want {
		t.Fatalf("reason = %q, want %q", s.st.Reason, want)
	}
}

func TestAbort(t *testing.T) {
	spec := baseSpec([]int{10, 50, 100})
	s := newSim(t, spec, 40)
	s.run(time.Minute, func() bool { return s.st.Wave == 1 })
	s.step("")
	assigned := maps.Clone(s.st.Devices)

	acts := s.step(CommandAbort)
	s.wantStatus(StatusAborted)
	if len(assigns(acts)) != 0 || len(rollbacks(acts)) != 0 {
		t.Fatalf("abort actions: %s", describe(acts))
	}
	if !hasEntry(s.st, "aborted by operator: no more devices will be assigned; the 20 assigned keep 2.0.0") {
		t.Errorf("history:\n%s", s.history())
	}
	s.fleet["late-1"] = DeviceReport{}
	for range 20 {
		s.install()
		s.now = s.now.Add(time.Hour)
		if acts := s.step(""); len(acts) != 0 {
			t.Fatalf("aborted rollout acted: %s", describe(acts))
		}
	}
	if len(s.st.Devices) != len(assigned) {
		t.Fatalf("devices changed after abort: %d, want %d", len(s.st.Devices), len(assigned))
	}
	// Devices keep what they have: Reconcile still wants them on 2.0.0.
	var n int
	for _, a := range s.m.Reconcile(s.st) {
		n += len(a.(*Assign).Devices)
	}
	if n != len(assigned) {
		t.Errorf("Reconcile covers %d devices, want %d", n, len(assigned))
	}
	for _, c := range []Command{CommandResume, CommandPause, CommandAbort} {
		if err := CommandAllowed(StatusAborted, c); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s after abort: %v", c, err)
		}
	}
	// An operator may still undo it.
	acts = s.step(CommandRollback)
	s.wantStatus(StatusRolledBack)
	if rb := rollbacks(acts); len(rb) != 1 || len(rb[0].Previous) != len(assigned) {
		t.Fatalf("rollback after abort: %s", describe(acts))
	}
}

func TestAbortPending(t *testing.T) {
	s := newSim(t, baseSpec([]int{100}), 3)
	acts := s.step(CommandAbort)
	s.wantStatus(StatusAborted)
	if len(assigns(acts)) != 0 || len(s.st.Devices) != 0 {
		t.Fatalf("abort before start assigned: %s", describe(acts))
	}
}

func TestLateJoiners(t *testing.T) {
	spec := baseSpec([]int{10, 50, 100}, MustGates(t, "install_failures<=0")...)
	s := newSim(t, spec, 20) // waves of 2, 10, 20 devices
	s.run(time.Minute, func() bool { return s.st.Wave == 1 })
	wave2 := s.st.WaveDevices()
	s.report("downloading", wave2...) // still installing
	if len(s.st.Devices) != 10 {
		t.Fatalf("%d devices in wave 2, want 10", len(s.st.Devices))
	}

	// Two devices join during wave 2: one ranks first (its would-be wave is
	// the first, long passed), one ranks last (its wave is still to come).
	early, last := extremeNames(s.m.ID, slices.Collect(maps.Keys(s.fleet)))
	s.fleet[early] = DeviceReport{Version: oldVersion}
	s.fleet[last] = DeviceReport{Version: oldVersion}
	acts := s.step("")
	a := assigns(acts)
	if len(a) != 1 || !slices.Equal(a[0].Devices, []string{early}) || a[0].Wave != 1 {
		t.Fatalf("late joiners: %s", describe(acts))
	}
	if d := s.st.Devices[early]; !d.Late || d.Wave != 1 || d.Previous != oldVersion {
		t.Errorf("early joiner = %+v", d)
	}
	if _, ok := s.st.Devices[last]; ok {
		t.Fatal("device assigned before its wave")
	}
	if !hasEntry(s.st, "wave 2/3 (50%): assigned 2.0.0 to 1 device(s) that joined after the wave started: "+early) {
		t.Errorf("history:\n%s", s.history())
	}
	// The late joiner is part of the wave: it is awaited like the others.
	s.report(PhaseActive, wave2...)
	s.now = s.now.Add(time.Minute)
	s.step("")
	if s.st.Stage != StageInstalling {
		t.Fatal("wave settled without its late joiner")
	}
	s.run(time.Minute, func() bool { return s.st.Wave == 2 })
	if d := s.st.Devices[last]; d.Wave != 2 || d.Late {
		t.Errorf("last joiner = %+v, want assigned at the start of wave 3", d)
	}
	s.run(time.Minute, s.status(StatusSucceeded))

	// After success, every new matching device gets the version at once.
	s.fleet["after-1"] = DeviceReport{Version: oldVersion}
	s.fleet["after-2"] = DeviceReport{}
	acts = s.step("")
	if a := assigns(acts); len(a) != 1 || !slices.Equal(a[0].Devices, []string{"after-1", "after-2"}) || a[0].Wave != 2 {
		t.Fatalf("after success: %s", describe(acts))
	}
	if d := s.st.Devices["after-2"]; !d.Late || d.Previous != "" {
		t.Errorf("after-2 = %+v", d)
	}
	s.wantStatus(StatusSucceeded)
	s.install()
	s.now = s.now.Add(time.Minute)
	if acts := s.step(""); len(acts) != 0 {
		t.Fatalf("acted again: %s", describe(acts))
	}
	if s.st.Devices["after-1"].Result != ResultInstalled {
		t.Errorf("after-1 = %+v", s.st.Devices["after-1"])
	}
}

// extremeNames returns a new device name that ranks before every device
// and one that ranks after every device, for rollout id.
func extremeNames(id string, devices []string) (first, last string) {
	lo, hi := uint64(math.MaxUint64), uint64(0)
	for _, d := range devices {
		lo, hi = min(lo, rank(id, d)), max(hi, rank(id, d))
	}
	for i := 0; first == "" || last == ""; i++ {
		name := fmt.Sprintf("late-%d", i)
		if r := rank(id, name); r < lo && first == "" {
			first = name
		} else if r > hi && last == "" {
			last = name
		}
	}
	return first, last
}

func TestDevicesLeaving(t *testing.T) {
	spec := baseSpec([]int{50, 100}, MustGates(t, "install_failures<=0")...)
	s := newSim(t, spec, 5)
	acts := s.step("")
	wave0 := assigns(acts)[0].Devices // 3 of 5
	// One device is relabelled away before it answers: the wave does not
	// wait for it, and it keeps its assignment. (50% of the 4 left is 2,
	// fewer than assigned, so nobody replaces it.)
	delete(s.fleet, wave0[0])
	s.now = s.now.Add(time.Minute)
	s.report(PhaseActive, wave0[1], wave0[2])
	acts = s.step("")
	if len(assigns(acts)) != 0 {
		t.Fatalf("a device leaving caused assignments: %s", describe(acts))
	}
	if s.st.Stage != StageSoaking {
		t.Fatalf("wave waits for a device that left: stage %s", s.st.Stage)
	}
	if _, ok := s.st.Devices[wave0[0]]; !ok {
		t.Fatal("device that left was forgotten")
	}
	// The others leave too. The wave's share is recomputed from the two
	// devices still matching: one of them joins the wave, which keeps
	// soaking (a late joiner does not restart the wave).
	delete(s.fleet, wave0[1])
	delete(s.fleet, wave0[2])
	s.now = s.now.Add(time.Minute)
	acts = s.step("")
	a := assigns(acts)
	if len(a) != 1 || len(a[0].Devices) != 1 || a[0].Wave != 0 || !s.st.Devices[a[0].Devices[0]].Late || s.st.Stage != StageSoaking {
		t.Fatalf("wave %d stage %s, actions %s", s.st.Wave, s.st.Stage, describe(acts))
	}
	s.run(time.Minute, s.status(StatusSucceeded))
	// Rollback covers the devices that left too.
	acts = s.step(CommandRollback)
	if rb := rollbacks(acts); len(rb) != 1 || len(rb[0].Previous) != 5 {
		t.Fatalf("rollback: %s", describe(acts))
	}
}

func TestSmallFleets(t *testing.T) {
	tests := []struct {
		name      string
		devices   int
		wantWaves []int // wave index of each Assign
		skipped   []string
	}{
		{name: "one device", devices: 1, wantWaves: []int{0}, skipped: []string{"wave 2/4 (10%)", "wave 3/4 (50%)", "wave 4/4 (100%)"}},
		{name: "three devices", devices: 3, wantWaves: []int{0, 2, 3}, skipped: []string{"wave 2/4 (10%)"}},
		{name: "five devices", devices: 5, wantWaves: []int{0, 2, 3}, skipped: []string{"wave 2/4 (10%)"}},
		{name: "ten devices", devices: 10, wantWaves: []int{0, 2, 3}, skipped: []string{"wave 2/4 (10%)"}},
		{name: "eleven devices", devices: 11, wantWaves: []int{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec([]int{1, 10, 50, 100}, MustGates(t, "install_failures<=0")...)
			s := newSim(t, spec, tt.devices)
			s.run(time.Minute, s.status(StatusSucceeded))
			var waves []int
			var sizes []int
			for _, a := range assigns(s.log) {
				waves = append(waves, a.Wave)
				sizes = append(sizes, len(a.Devices))
			}
			if !slices.Equal(waves, tt.wantWaves) {
				t.Errorf("Assign waves = %v (sizes %v), want %v", waves, sizes, tt.wantWaves)
			}
			for _, w := range tt.skipped {
				if !hasEntry(s.st, w+" has no devices; skipped") {
					t.Errorf("%s not skipped:\n%s", w, s.history())
				}
			}
			// One soak per wave that had devices, none for skipped ones.
			if got, want := s.st.Finished.Sub(s.st.Started), time.Duration(len(tt.wantWaves))*(spec.Soak+2*time.Minute); got > want {
				t.Errorf("took %s, more than %s", got, want)
			}
		})
	}
}

func TestNoDevices(t *testing.T) {
	s := newSim(t, baseSpec([]int{1, 10, 50, 100}), 0)
	acts := s.step("")
	s.wantStatus(StatusFailed)
	if want := "no device matches selector site=plant-a"; s.st.Reason != want {
		t.Fatalf("reason = %q, want %q", s.st.Reason, want)
	}
	if len(acts) != 1 || acts[0].(*Record).Text != "failed: "+s.st.Reason {
		t.Fatalf("actions = %s", describe(acts))
	}
	// Devices appearing later do not revive it: start a new rollout.
	s.fleet["dev-1"] = DeviceReport{}
	s.now = s.now.Add(time.Hour)
	if acts := s.step(""); len(acts) != 0 {
		t.Fatalf("failed rollout acted: %s", describe(acts))
	}
	for _, c := range []Command{CommandPause, CommandResume, CommandAbort, CommandRollback} {
		if err := CommandAllowed(StatusFailed, c); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s on failed: %v", c, err)
		}
	}
	if got := s.m.Reconcile(s.st); got != nil {
		t.Errorf("Reconcile = %s", describe(got))
	}
}

func TestInvalidSpecFails(t *testing.T) {
	spec := baseSpec([]int{50, 10}, Gate{Metric: "cpu", Op: OpLess, Threshold: 1})
	s := newSim(t, spec, 5)
	s.step("")
	s.wantStatus(StatusFailed)
	for _, want := range []string{"invalid rollout spec", "waves: wave 2 (10%) does not increase", `unknown metric "cpu"`} {
		if !strings.Contains(s.st.Reason, want) {
			t.Errorf("reason %q does not contain %q", s.st.Reason, want)
		}
	}
	if len(s.st.Devices) != 0 {
		t.Fatal("invalid spec assigned devices")
	}
}

func TestDefaultsApplied(t *testing.T) {
	// Only model, version and soak: the Machine fills in the rest.
	s := newSim(t, Spec{Model: "vibration", Version: newVersion, Soak: time.Minute}, 100)
	acts := s.step("")
	if a := assigns(acts); len(a) != 1 || len(a[0].Devices) != 1 || a[0].Mode != ModeActive {
		t.Fatalf("start with defaults: %s", describe(acts))
	}
	if !hasEntry(s.st, "waves 1,10,50,100%, soak 1m0s, gates install_failures<=0, on failure pause") {
		t.Errorf("history:\n%s", s.history())
	}
	s.run(time.Minute, s.status(StatusSucceeded))
}

func TestShadowMode(t *testing.T) {
	spec := baseSpec([]int{50, 100}, MustGates(t, "shadow_agreement>=0.99", "install_failures<=0")...)
	spec.Mode = ModeShadow
	s := newSim(t, spec, 4)
	s.metrics = Metrics{MetricShadowAgreement: 0.995}
	acts := s.step("")
	if a := assigns(acts); len(a) != 1 || a[0].Mode != ModeShadow {
		t.Fatalf("shadow start: %s", describe(acts))
	}
	s.run(time.Minute, func() bool { return s.st.Wave == 1 })
	s.metrics = Metrics{MetricShadowAgreement: 0.9}
	s.run(time.Minute, s.status(StatusPaused))
	if !strings.Contains(s.st.Reason, "shadow_agreement>=0.99: 0.9 (failed)") {
		t.Fatalf("reason = %q", s.st.Reason)
	}
	acts = s.step(CommandRollback)
	if rb := rollbacks(acts); len(rb) != 1 || rb[0].Mode != ModeShadow || rb[0].Version != newVersion || len(rb[0].Previous) != 4 {
		t.Fatalf("shadow rollback: %s", describe(acts))
	}
	if !strings.Contains(s.st.Reason, "rolled back by operator") {
		t.Errorf("reason = %q", s.st.Reason)
	}
}

func TestDriverMetricsInstallFailures(t *testing.T) {
	// The driver may know of failures the phases do not show (events); the
	// larger count wins.
	spec := baseSpec([]int{100}, MustGates(t, "install_failures<=0")...)
	s := newSim(t, spec, 2)
	s.metrics = Metrics{MetricInstallFailures: 3}
	s.step("")
	s.now = s.now.Add(time.Minute)
	s.install()
	s.step("")
	s.wantStatus(StatusPaused)
	if !strings.Contains(s.st.Reason, "install_failures<=0: 3 (failed)") {
		t.Fatalf("reason = %q", s.st.Reason)
	}
}

// script is a fixed scenario with a failure, a pause, a resume, a late
// joiner and a timeout, used to compare a hub that keeps its state in
// memory with one that restarts (state through JSON) before every step.
func script(s *sim) {
	s.metrics = healthy
	s.run(time.Minute, func() bool { return s.st.Wave == 1 })
	ids := s.st.WaveDevices()
	s.report(PhaseFailed, ids[0])
	s.report("warming", ids[1])
	s.fleet["late-a"] = DeviceReport{Version: oldVersion}
	for range 30 {
		s.now = s.now.Add(time.Minute)
		s.step("")
	}
	s.now = s.now.Add(time.Minute)
	s.step(CommandResume)
	s.report("", ids[0], ids[1])
	s.run(time.Minute, s.status(StatusSucceeded))
	s.fleet["late-b"] = DeviceReport{}
	s.step("")
}

func TestRestartEveryStep(t *testing.T) {
	spec := baseSpec([]int{1, 10, 50, 100}, MustGates(t, "install_failures<=0", "error_rate<0.01", "p95_latency_ms<50")...)
	mem := newSim(t, spec, 60)
	script(mem)
	restarting := newSim(t, spec, 60)
	restarting.roundTrip = true
	script(restarting)

	mem.wantStatus(StatusSucceeded)
	if a, b := describe(mem.log), describe(restarting.log); a != b {
		t.Fatalf("actions differ across restarts:\n%s\n---\n%s", a, b)
	}
	if a, b := mustJSON(t, mem.st), mustJSON(t, restarting.st); a != b {
		t.Fatalf("states differ across restarts:\n%s\n%s", a, b)
	}
	if !hasEntry(mem.st, "(10%) failed its gates: install_failures<=0: ") || !hasEntry(mem.st, "resumed by operator") {
		t.Errorf("script did not trip the install gate:\n%s", mem.history())
	}
}

func TestRestartMidWave(t *testing.T) {
	spec := baseSpec([]int{10, 50, 100}, MustGates(t, "install_failures<=0")...)
	s := newSim(t, spec, 30)
	s.run(time.Minute, func() bool { return s.st.Wave == 1 })
	s.report("downloading", s.st.WaveDevices()...)
	half := s.st.WaveDevices()[:5]
	s.report(PhaseActive, half...)
	s.now = s.now.Add(time.Minute)
	s.step("")
	if s.st.Stage != StageInstalling {
		t.Fatal("want the wave mid-install")
	}

	// The hub stops; a new process loads the stored JSON.
	stored := mustJSON(t, struct {
		M  Machine `json:"machine"`
		St State   `json:"state"`
	}{s.m, s.st})
	var loaded struct {
		M  Machine `json:"machine"`
		St State   `json:"state"`
	}
	if err := jsonUnmarshalStrict(stored, &loaded); err != nil {
		t.Fatal(err)
	}
	// Reconcile lists every assigned device, for republishing.
	var n int
	for _, a := range loaded.M.Reconcile(loaded.St) {
		n += len(a.(*Assign).Devices)
	}
	if n != len(s.st.Devices) {
		t.Fatalf("Reconcile covers %d devices, want %d", n, len(s.st.Devices))
	}
	// The first step after the restart does not reassign anything.
	in := Input{Now: s.now.Add(time.Minute), Devices: maps.Clone(s.fleet)}
	_, acts := loaded.M.Step(loaded.St, in)
	if len(assigns(acts)) != 0 {
		t.Fatalf("restart reassigned: %s", describe(acts))
	}
	s.report(PhaseActive, s.st.WaveDevices()[5:]...)
	restarted := newSim(t, spec, 30)
	restarted.m, restarted.st, restarted.now, restarted.fleet = loaded.M, loaded.St, s.now, maps.Clone(s.fleet)
	restarted.run(time.Minute, restarted.status(StatusSucceeded))
	s.run(time.Minute, s.status(StatusSucceeded))
	if a, b := mustJSON(t, s.st), mustJSON(t, restarted.st); a != b {
		t.Fatalf("restarted hub ends differently:\n%s\n%s", a, b)
	}
}

func TestCommandDeliveredTwice(t *testing.T) {
	spec := baseSpec([]int{100}, MustGates(t, "install_failures<=0")...)
	m := Machine{ID: "r1", Spec: spec}
	in := Input{Now: t0, Devices: map[string]DeviceReport{"a": {}, "b": {}}}
	st, _ := m.Step(State{}, in)

	// Pause (command 1) is applied, stored, then delivered again after a
	// crash: the second delivery changes nothing.
	in.Now, in.Command, in.CommandSeq = t0.Add(time.Minute), CommandPause, 1
	st, _ = m.Step(st, in)
	in.Command, in.CommandSeq = CommandResume, 2
	st, _ = m.Step(st, in)
	if st.Status != StatusRunning || st.CommandSeq != 2 {
		t.Fatalf("after resume: %s seq %d", st.Status, st.CommandSeq)
	}
	in.Command, in.CommandSeq = CommandPause, 1
	if st2, acts := m.Step(st, in); st2.Status != StatusRunning || len(acts) != 0 {
		t.Fatalf("redelivered pause applied: %s %s", st2.Status, describe(acts))
	}

	// A resume refused while running does not apply later, when a failed
	// gate has paused the rollout.
	in.Command, in.CommandSeq = CommandResume, 3
	st, _ = m.Step(st, in)
	in.Devices = map[string]DeviceReport{"a": {Phase: PhaseFailed}, "b": {Phase: PhaseActive}}
	in.Now = t0.Add(2 * time.Minute)
	st, _ = m.Step(st, in)
	if st.Status != StatusPaused {
		t.Fatalf("status = %s, want paused by the install gate", st.Status)
	}
	if st.CommandSeq != 3 {
		t.Fatalf("command seq = %d, want 3", st.CommandSeq)
	}
}

func TestIdempotentStart(t *testing.T) {
	m := Machine{ID: "r1", Spec: baseSpec([]int{10, 100})}
	in := Input{Now: t0, Devices: map[string]DeviceReport{}}
	for _, d := range fleet(20) {
		in.Devices[d] = DeviceReport{Version: oldVersion}
	}
	st1, acts1 := m.Step(State{}, in)
	if len(assigns(acts1)) != 1 {
		t.Fatalf("first step: %s", describe(acts1))
	}
	st2, acts2 := m.Step(st1, in)
	if len(acts2) != 0 {
		t.Fatalf("second step with the same input: %s", describe(acts2))
	}
	// Even much later with nothing reported: no duplicate assignment.
	in.Now = t0.Add(time.Hour)
	_, acts3 := m.Step(st2, in)
	if len(assigns(acts3)) != 0 {
		t.Fatalf("later step reassigned: %s", describe(acts3))
	}
}

func TestCommandAllowed(t *testing.T) {
	all := []Status{"", StatusPending, StatusRunning, StatusPaused, StatusSucceeded, StatusFailed, StatusRolledBack, StatusAborted}
	allowed := map[Command][]Status{
		CommandPause:    {StatusRunning},
		CommandResume:   {StatusPaused},
		CommandAbort:    {"", StatusPending, StatusRunning, StatusPaused},
		CommandRollback: {StatusRunning, StatusPaused, StatusSucceeded, StatusAborted},
	}
	for c, ok := range allowed {
		for _, s := range all {
			t.Run(fmt.Sprintf("%s/%s", c, s), func(t *testing.T) {
				err := CommandAllowed(s, c)
				if want := slices.Contains(ok, s); want != (err == nil) {
					t.Fatalf("CommandAllowed(%q, %q) = %v, want allowed %v", s, c, err, want)
				}
				if err != nil && !errors.Is(err, ErrNotAllowed) {
					t.Fatalf("error %v does not wrap ErrNotAllowed", err)
				}
			})
		}
	}
	if err := CommandAllowed(StatusRunning, "restart"); !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), `unknown command "restart"`) {
		t.Errorf("unknown command: %v", err)
	}
	if err := CommandAllowed(StatusSucceeded, CommandResume); err == nil || err.Error() != "command not allowed: cannot resume a succeeded rollout: only a paused rollout can be resumed" {
		t.Errorf("message = %v", err)
	}
}

func TestStatusTerminal(t *testing.T) {
	for s, want := range map[Status]bool{StatusPending: false, StatusRunning: false, StatusPaused: false,
		StatusSucceeded: true, StatusFailed: true, StatusRolledBack: true, StatusAborted: true} {
		if s.Terminal() != want {
			t.Errorf("%s.Terminal() = %v", s, !want)
		}
	}
}

func TestReconcile(t *testing.T) {
	m := Machine{ID: "r", Spec: baseSpec([]int{50, 100})}
	devices := map[string]Device{
		"a": {Wave: 0, Previous: "1.0.0"}, "b": {Wave: 1, Previous: ""}, "c": {Wave: 0, Previous: "0.9.0"},
	}
	tests := []struct {
		status Status
		want   string
	}{
		{StatusPending, ""},
		{StatusFailed, ""},
		{StatusRunning, "Assign(wave 0, 2.0.0 active, [a c])\nAssign(wave 1, 2.0.0 active, [b])"},
		{StatusPaused, "Assign(wave 0, 2.0.0 active, [a c])\nAssign(wave 1, 2.0.0 active, [b])"},
		{StatusSucceeded, "Assign(wave 0, 2.0.0 active, [a c])\nAssign(wave 1, 2.0.0 active, [b])"},
		{StatusAborted, "Assign(wave 0, 2.0.0 active, [a c])\nAssign(wave 1, 2.0.0 active, [b])"},
		{StatusRolledBack, "RollBack(active, map[a:1.0.0 b: c:0.9.0])"},
	}
	for _, tt := range tests {
		t.Run(string(tt.status), func(t *testing.T) {
			if got := describe(m.Reconcile(State{Status: tt.status, Devices: devices})); got != tt.want {
				t.Errorf("Reconcile =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	if got := m.Reconcile(State{Status: StatusRolledBack}); got != nil {
		t.Errorf("Reconcile of an empty rolled-back rollout = %s", describe(got))
	}
}

func TestStateJSON(t *testing.T) {
	spec := baseSpec([]int{50, 100}, MustGates(t, "install_failures<=0", "error_rate<0.01")...)
	s := newSim(t, spec, 4)
	s.metrics = healthy
	s.run(time.Minute, func() bool { return s.st.Stage == StageSoaking })
	back := jsonRoundTrip(t, s.st)
	if a, b := mustJSON(t, s.st), mustJSON(t, back); a != b {
		t.Fatalf("round trip differs:\n%s\n%s", a, b)
	}
	for _, key := range []string{`"status":"running"`, `"stage":"soaking"`, `"gates":[{"gate":"install_failures<=0","value":0,"passed":true}`, `"result":"installed"`, `"previous":"1.0.0"`} {
		if !strings.Contains(mustJSON(t, s.st), key) {
			t.Errorf("state JSON lacks %s:\n%s", key, mustJSON(t, s.st))
		}
	}
}

func TestHistoryBounded(t *testing.T) {
	s := newSim(t, baseSpec([]int{100}), 1)
	s.run(time.Minute, s.status(StatusSucceeded))
	// Step directly: the sim's checks after each step would make this quadratic.
	in := Input{Now: s.now, Devices: maps.Clone(s.fleet)}
	for i := range maxHistory + 10 {
		in.Devices[fmt.Sprintf("joiner-%d", i)] = DeviceReport{}
		in.Now = in.Now.Add(time.Second)
		s.st, _ = s.m.Step(s.st, in)
	}
	if len(s.st.History) != maxHistory {
		t.Fatalf("history has %d entries, want %d", len(s.st.History), maxHistory)
	}
	if !strings.Contains(s.st.History[len(s.st.History)-1].Text, fmt.Sprintf("joiner-%d", maxHistory+9)) {
		t.Errorf("last entry = %q", s.st.History[len(s.st.History)-1].Text)
	}
}

// TestStepRandomised drives the Machine with random fleets, reports,
// metrics, clock jumps and commands, and checks the invariants every
// driver relies on.
func TestStepRandomised(t *testing.T) {
	phases := []string{"", "downloading", "warming", PhaseActive, PhaseActive, PhaseActive, PhaseFailed, PhaseRolledBack}
	cmds := []Command{"", "", "", "", "", "", CommandPause, CommandResume, CommandAbort, CommandRollback, "bogus"}
	seeds := uint64(150)
	if testing.Short() {
		seeds = 20
	}
	reached := map[Status]int{}
	defer func() {
		for _, s := range []Status{StatusRunning, StatusPaused, StatusSucceeded, StatusFailed, StatusRolledBack, StatusAborted} {
			if reached[s] == 0 && !t.Failed() {
				t.Errorf("no run reached %s: %v", s, reached)
			}
		}
	}()
	for seed := range seeds {
		r := rand.New(rand.NewPCG(seed, 7))
		spec := baseSpec([][]int{{1, 10, 50, 100}, {100}, {50, 100}, {5, 20, 100}}[r.IntN(4)],
			MustGates(t, []string{"install_failures<=0", "install_failures<=2", "error_rate<0.05"}[:1+r.IntN(3)]...)...)
		spec.OnFailure = []string{OnFailurePause, OnFailureRollback}[r.IntN(2)]
		spec.Soak = time.Duration(r.IntN(10)) * time.Minute
		m := Machine{ID: fmt.Sprint("rand-", seed), Spec: spec}
		var st State
		now := t0
		devices := map[string]DeviceReport{}
		n := r.IntN(30)
		if r.IntN(6) == 0 {
			n = 0 // fails at start, unless a device joins before the first step
		}
		for i := range n {
			devices[fmt.Sprintf("d%02d", i)] = DeviceReport{Version: oldVersion}
		}
		everAssigned := map[string]bool{}
		for step := range 100 {
			switch r.IntN(10) {
			case 0:
				devices[fmt.Sprintf("j%03d", r.IntN(200))] = DeviceReport{}
			case 1:
				for id := range devices {
					delete(devices, id)
					break
				}
			}
			for id := range devices {
				if r.IntN(3) == 0 {
					devices[id] = DeviceReport{Version: devices[id].Version, Phase: phases[r.IntN(len(phases))]}
				}
			}
			in := Input{Now: now, Devices: maps.Clone(devices), Command: cmds[r.IntN(len(cmds))], CommandSeq: uint64(step + 1)}
			if r.IntN(2) == 0 {
				in.Metrics = Metrics{MetricErrorRate: r.Float64() / 10}
			}
			next, acts := m.Step(st, in)
			where := fmt.Sprintf("seed %d step %d (%s→%s, cmd %q)", seed, step, st.Status, next.Status, in.Command)

			if again, acts2 := m.Step(next, in); len(acts2) != 0 || mustJSON(t, again) != mustJSON(t, next) {
				t.Fatalf("%s: not idempotent: %s", where, describe(acts2))
			}
			if rt, acts3 := m.Step(jsonRoundTrip(t, st), in); mustJSON(t, rt) != mustJSON(t, next) || describe(acts3) != describe(acts) {
				t.Fatalf("%s: JSON round trip changes the outcome", where)
			}
			if !allowedTransition(st.Status, next.Status) {
				t.Fatalf("%s: transition not in the diagram", where)
			}
			resumed := in.Command == CommandResume && st.Status == StatusPaused
			for _, a := range assigns(acts) {
				for _, d := range a.Devices {
					if everAssigned[d] && !resumed {
						t.Fatalf("%s: %s assigned twice", where, d)
					}
					everAssigned[d] = true
					if _, ok := next.Devices[d]; !ok {
						t.Fatalf("%s: assigned %s not in state", where, d)
					}
				}
				if next.Status == StatusFailed || next.Status == StatusAborted || next.Status == StatusRolledBack {
					t.Fatalf("%s: Assign in a stopping step", where)
				}
			}
			for d := range st.Devices {
				if _, ok := next.Devices[d]; !ok {
					t.Fatalf("%s: %s forgotten", where, d)
				}
			}
			if rb := rollbacks(acts); len(rb) > 0 && (next.Status != StatusRolledBack || len(rb[0].Previous) != len(next.Devices)) {
				t.Fatalf("%s: RollBack does not cover every device", where)
			}
			if next.Status != st.Status {
				reached[next.Status]++
			}
			st = next
			now = now.Add(time.Duration(r.IntN(8)) * time.Minute)
		}
	}
}

func allowedTransition(from, to Status) bool {
	if from == "" {
		from = StatusPending
	}
	if from == to {
		return true
	}
	next := map[Status][]Status{
		// pending → running → (paused|succeeded|rolled-back) can happen in one step.
		StatusPending:   {StatusRunning, StatusFailed, StatusAborted, StatusPaused, StatusSucceeded, StatusRolledBack},
		StatusRunning:   {StatusPaused, StatusSucceeded, StatusRolledBack, StatusAborted},
		StatusPaused:    {StatusRunning, StatusRolledBack, StatusAborted, StatusSucceeded},
		StatusSucceeded: {StatusRolledBack},
		StatusAborted:   {StatusRolledBack},
	}
	return slices.Contains(next[from], to)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestFinishedRolloutHasNoStage checks that every way a rollout ends
// clears the wave's stage (and soak start): a finished rollout is not
// "soaking", and status output shows its status instead.
func TestFinishedRolloutHasNoStage(t *testing.T) {
	tests := []struct {
		name string
		// end drives a rollout soaking its first wave to its end.
		end  func(s *sim)
		want Status
	}{
		{"gate failure rolls back", func(s *sim) {
			s.metrics = Metrics{MetricErrorRate: 0.5, MetricRequests: 100}
			s.now = s.now.Add(10 * time.Minute)
			s.step("")
		}, StatusRolledBack},
		{"install failure rolls back", func(s *sim) {
			for id := range s.st.Devices {
				s.report(PhaseRolledBack, id)
			}
			s.now = s.now.Add(time.Second)
			s.step("")
		}, StatusRolledBack},
		{"operator rollback", func(s *sim) { s.step(CommandRollback) }, StatusRolledBack},
		{"operator abort", func(s *sim) { s.step(CommandAbort) }, StatusAborted},
		{"every wave passed", func(s *sim) { s.run(time.Minute, s.status(StatusSucceeded)) }, StatusSucceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec([]int{50, 100}, MustGates(t, "error_rate<0.01", "install_failures<=0")...)
			spec.OnFailure = OnFailureRollback
			s := newSim(t, spec, 4)
			s.metrics = healthy
			s.run(time.Second, func() bool { return s.st.Stage == StageSoaking })
			tt.end(s)
			s.wantStatus(tt.want)
			if s.st.Stage != "" || !s.st.SoakStarted.IsZero() {
				t.Errorf("%s rollout: stage %q, soak started %v; want both cleared", s.st.Status, s.st.Stage, s.st.SoakStarted)
			}
		})
	}
	// A rollout that cannot start never had a stage.
	s := newSim(t, baseSpec([]int{100}), 0)
	s.step("")
	s.wantStatus(StatusFailed)
	if s.st.Stage != "" {
		t.Errorf("failed rollout: stage %q", s.st.Stage)
	}
}
