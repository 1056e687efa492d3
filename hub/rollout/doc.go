// Package rollout decides staged rollouts of a model version: which devices
// get it when, when a wave has proven itself, and what happens when it has
// not. It is a pure state machine: no I/O, no clock, no goroutines. A
// driver in the hub (the rollout controller) feeds it observations (time,
// matching devices with their install phases, the wave's telemetry,
// operator commands) through [Machine.Step], applies the returned actions
// ([Assign], [RollBack], [Record]) against MQTT and the store, and stores the
// returned [State], which is plain JSON-serialisable data.
//
// # Lifecycle
//
//	           first step                 last wave passes
//	pending ──────────────▶ running ──────────────────────▶ succeeded
//	   │                     │   ▲
//	   │ invalid spec or     │   │ resume
//	   │ no device matches   ▼   │
//	   ▼                    paused ◀── pause, or a gate fails
//	 failed                            with on_failure=pause
//
//	 running, paused, succeeded, aborted ── rollback ──▶ rolled-back
//	 running (a gate fails, on_failure=rollback) ──────▶ rolled-back
//	 pending, running, paused ──────────── abort ──────▶ aborted
//
// Within running, each wave goes through two stages:
//
//	assign ─▶ installing ─────────────────▶ soaking ───────────▶ gates pass ─▶ next wave
//	           every device active, failed        Spec.Soak                    (succeeded
//	           or timed out                       elapsed                      after the last)
//
// # Waves
//
// Devices matching the selector are ordered by a hash of rollout ID and
// device ID (see [WaveTargets]); wave i covers the first
// ceil(n × Waves[i] / 100) of them, cumulatively, so a wave never rounds
// down to nothing and a small fleet skips waves that would add no device.
// The count is recomputed from the devices matching at each step.
//
// A wave is installing until each of its devices reports the version active,
// reports it failed (or rolled back), or exceeds Spec.InstallTimeout from
// its assignment (timed out); failed and timed-out devices are counted in
// install_failures. Then it soaks for Spec.Soak, from [State.SoakStarted].
// At the end of the soak every gate must pass. install_failures is always
// known (the Machine counts it), and its gates are checked as soon as the
// wave has installed and during the soak, so a bad version trips without
// waiting for the soak to end.
//
// # Gates and telemetry
//
// The driver measures [Metrics] from the live telemetry agents report
// about the rollout's version, of the wave's devices only
// ([State.WaveDevices] that still match the selector: not the devices of
// earlier waves, not other devices), and only since the soak started: a
// resumed wave starts a fresh window, and data from before it (the
// requests that tripped the gate, say) never counts. The hub's store keeps
// telemetry per device and minute, so the hub driver records in
// [State.MetricsBaseline] what the soak's first minute held when the soak
// started and subtracts it; what remains imprecise is one telemetry
// interval (a report whose window straddles the start counts after it).
// An agent attributes the requests of the telemetry window in which it
// swapped versions to the new one.
//
// A gate whose metric has no data at the end of the soak (no request
// reached the wave's devices, no shadow comparison was made) fails with
// "no data". It pauses the rollout, even with on_failure=rollback: too
// little traffic is no evidence against the version, so nothing is
// undone; an operator resumes once traffic flows (a fresh soak), or rolls
// back or aborts. The same holds for a failed requests>=N gate, which sets
// a minimum sample. Any other failed gate is evidence against the version:
// it pauses the rollout (Reason names each failed gate and its measured
// value) or, with on_failure=rollback, emits one RollBack for every device
// assigned so far and ends rolled-back. A soak of 0 with a gate on
// telemetry is refused by [Spec.Validate]: it would judge before a single
// request.
//
// # Shadow mode
//
// With Mode shadow the rollout's version is assigned as the model's
// shadow candidate beside the serving version, which it never touches:
// agents run a sample of live requests on it too, compare the outputs, and
// report the comparisons in their telemetry. Its metrics are its own:
// shadow_agreement (the share of comparisons that agreed), requests (the
// number of comparisons) and p95/p99_latency_ms (of its shadow runs);
// error_rate does not apply (its answers are never served, and a shadow run
// that fails counts as a disagreement), so Validate refuses it. A failed
// gate with on_failure=rollback removes the shadows. A shadow rollout that
// passes its last wave succeeds and removes its shadows too: its verdict
// is in its gates and history, and it assigns nothing to late joiners.
// Promoting the version is a separate, active rollout, with its own waves
// and gates on served traffic. Rollouts claim devices per model and mode,
// so a shadow rollout does not hide devices from active rollouts of the
// model, nor the reverse.
//
// # Operator commands
//
// Pause stops a running rollout. Resume starts the current wave over:
// failed and timed-out installs of the wave are assigned again, devices
// still installing get a fresh timeout, and a fresh soak (and metrics
// window) follows before the gates are evaluated again. Abort stops for
// good without undoing anything: devices keep what they were assigned, and
// no further device (late joiners included) is assigned. Rollback undoes the
// rollout on every device it assigned, also after success or abort. Step
// ignores a command that [CommandAllowed] refuses, so the API should check
// first and report the error.
//
// # Devices that come and go
//
// A device that starts matching the selector while the rollout runs is
// assigned as soon as its place in the order falls within the current
// wave's cumulative share, that is once the rollout has reached the wave it
// would have been in; it then counts as a device of the current wave (its
// install is awaited unless the wave is already soaking, and its failures
// count in install_failures while that wave is current). While paused or
// aborted, no device is assigned. Once an active rollout succeeded, every
// device that starts matching gets the version at once. The driver stops stepping a succeeded
// rollout when a newer rollout of the same model replaces it.
//
// A device that stops matching keeps its assignment (it is still rolled back
// with the others) but leaves the wave's accounting: it is not waited for
// and its install does not count. Since the wave's share is recomputed from
// the devices matching, a device still matching may take its place in the
// wave. A wave left without devices is skipped.
//
// No device matching at the first step fails the rollout ("no device
// matches selector …") rather than succeeding with nothing done: a selector
// typo should not look like a successful release.
//
// # Restarts and idempotence
//
// Everything is in State. Step called again with the same input returns the
// same state and no action; a device is assigned once (again only to retry
// after a resume). Commands carry a number ([Input.CommandSeq]) that State
// remembers, so one delivered twice is applied once. A device is not
// observed in the step that assigns it, since its report predates the
// assignment; after that, [DeviceReport.Phase] must describe the device's
// answer to the newest assignment. The driver applies actions
// before storing the state, so a crash repeats them instead of losing them;
// on start it may also compare [Machine.Reconcile] with what it has
// published.
package rollout
