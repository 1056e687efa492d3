// Package store is the hub's persistent memory: the device registry, model
// releases, staged rollouts, per-minute telemetry rollups, device events and
// the log of signed assignments. It holds the domain types and the Store
// interface; implementations live in subpackages named after the database
// they wrap (hub/store/sqlite first, PostgreSQL later) and must all pass the
// conformance suite in hub/store/storetest.
//
// The model, in the order data arrives:
//
//   - A Device is registered by the first message the hub receives from it
//     (online, state, telemetry or events). Its retained state report fills
//     in the models it runs (DeviceModel: version, phase, pending, previous,
//     error), its runtime inventory and the labels it was configured with;
//     an operator may add or override labels on the hub (SetLabels). Rollouts
//     target devices by their effective labels through a Selector.
//   - A Release is one model version pushed by an operator: the model
//     manifest envelope (signed by the release key, or unsigned until an
//     offline signing step) and a summary of its artifacts. Name and version
//     identify it and never change.
//   - A Rollout moves a selection of devices to a release in waves. Its whole
//     state (current wave, status, versions to roll back to, history) is kept
//     here so the controller resumes where it stopped after a hub restart.
//     Writers use optimistic concurrency: UpdateRollout succeeds only if the
//     rollout's Revision is still the one read.
//   - Telemetry payloads are merged, never averaged, into one
//     TelemetryRollup per device, model, version and UTC minute: counts add
//     up and latency histograms add bucket by bucket, so any set of devices
//     and minutes can be summed again into exact error rates and latency
//     quantiles for rollout gates.
//   - Events are the discrete things devices report (installed, rejected and
//     why, rolled back), kept for operators and for install-failure gates.
//   - Assignments: per device, the hub draws strictly increasing sequence
//     numbers (NextSequence, durable across restarts) and keeps the last
//     signed assignment it published, so it can refresh or republish it.
//     NextSequences and SaveAssignments do the same for a whole rollout
//     wave in one atomic, durable write each instead of one per device.
//   - Enrollment tokens: an operator makes a one-time token (its SHA-256
//     hash is all that is stored, with labels, an expiry and optionally the
//     one device ID it may enroll). ConsumeEnrollToken uses it exactly once,
//     atomically: it marks it used and registers the device with the
//     token's labels as hub labels, before the device ever connects.
//
// Times are stored with microsecond precision and returned in UTC. Methods
// return errors wrapping ErrNotFound, ErrConflict, ErrInvalid or ErrExpired where callers
// need to branch; other errors mean the database failed.
package store
