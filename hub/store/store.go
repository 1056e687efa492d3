package store

import (
	"context"
	"errors"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// Errors callers branch on with errors.Is. Store methods wrap them with the
// object concerned, e.g. "rollout 7: revision 3 is stale: conflict".
var (
	// ErrNotFound: the device, release, rollout or assignment does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write clashes with what is stored: a release name and
	// version that already exist, a rollout changed since it was read (stale
	// Revision), a second unfinished rollout for the same model, or an
	// assignment sequence that is not above the one saved.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input is malformed (bad selector, unknown status,
	// empty name, …); the message says which field and why.
	ErrInvalid = errors.New("invalid")
	// ErrExpired: an enrollment token past its expiry.
	ErrExpired = errors.New("expired")
)

// Store is everything the hub persists. Implementations are safe for
// concurrent use by multiple goroutines. Consumers should declare the smaller
// interface they need rather than depend on all of Store.
type Store interface {
	// UpsertDevice registers the device if it is unknown (FirstSeen = seen)
	// and moves LastSeen forward to seen. It returns ErrInvalid for a zero
	// time or an ID that is not a device ID (see manifest.ValidateDeviceID),
	// as do the other methods that register devices.
	UpsertDevice(ctx context.Context, id string, seen time.Time) error
	// SetOnline records the device's retained online flag received at time
	// at, registering an unknown device. Going online also moves LastSeen
	// forward; going offline (often the broker's last will) does not.
	SetOnline(ctx context.Context, id string, online bool, at time.Time) error
	// SetDeviceState records a retained state report received at time at:
	// the device's reported labels, accepted assignment sequence, runtime
	// inventory and models (models absent from the report are removed).
	// A model's UpdatedAt moves to at only when its entry changed. Unknown
	// devices are registered, and LastSeen moves forward to at, as with
	// UpsertDevice, in the same transaction.
	SetDeviceState(ctx context.Context, id string, st report.State, at time.Time) error
	// SetLabels changes the labels an operator set on the hub for a device:
	// set adds or overrides, remove deletes (revealing the device-reported
	// value, if any). It returns the updated device, ErrNotFound or
	// ErrInvalid for a label that could never be selected.
	SetLabels(ctx context.Context, id string, set map[string]string, remove []string) (Device, error)
	// GetDevice returns one device with its models, or ErrNotFound.
	GetDevice(ctx context.Context, id string) (Device, error)
	// ListDevices returns the devices whose labels match sel (all devices
	// for an empty selector), ordered by ID. It returns ErrInvalid for a
	// selector that does not validate.
	ListDevices(ctx context.Context, sel Selector) ([]Device, error)

	// PutRelease stores a new release. It returns ErrConflict if the name
	// and version exist, ErrInvalid if a required field is missing.
	PutRelease(ctx context.Context, r Release) error
	// SignRelease replaces the manifest of an unsigned release by its signed
	// envelope and marks it signed. It returns ErrNotFound, or ErrConflict
	// if the release is already signed.
	SignRelease(ctx context.Context, name, version string, envelope []byte) error
	// GetRelease returns one release, or ErrNotFound.
	GetRelease(ctx context.Context, name, version string) (Release, error)
	// ListReleases returns the releases of a model (of all models when name
	// is empty), ordered by name and then by semantic version, oldest first.
	ListReleases(ctx context.Context, name string) ([]Release, error)

	// CreateRollout stores a new rollout and returns it with ID, Revision 1,
	// Created and Updated filled in. It returns ErrInvalid (see
	// Rollout.Validate), ErrNotFound if the release does not exist, or
	// ErrConflict if another unfinished rollout exists for the model.
	CreateRollout(ctx context.Context, r Rollout) (Rollout, error)
	// UpdateRollout replaces the stored rollout r.ID if its revision is still
	// r.Revision, and returns it with the next Revision and Updated. It
	// returns ErrNotFound, ErrInvalid, or ErrConflict when someone else
	// updated it first (read it again and retry) or when it would make a
	// second unfinished rollout for the model. Model, Version and Created
	// cannot change.
	UpdateRollout(ctx context.Context, r Rollout) (Rollout, error)
	// GetRollout returns one rollout, or ErrNotFound.
	GetRollout(ctx context.Context, id int64) (Rollout, error)
	// ListRollouts returns the rollouts with one of the given statuses (all
	// when none are given), newest first.
	ListRollouts(ctx context.Context, statuses ...RolloutStatus) ([]Rollout, error)

	// AddTelemetry merges a telemetry payload from a device into the rollups
	// of the minute its window ended (see RollupsFromTelemetry), and keeps
	// its system stats as the device's latest when it is the newest payload.
	// All of it is stored or none. Like AddEvent it registers an unknown
	// device without moving LastSeen. It returns ErrInvalid for a payload
	// without a time, with an invalid histogram, or with histogram bounds
	// other than those already merged into the same rollup.
	AddTelemetry(ctx context.Context, device string, t report.Telemetry) error
	// ListTelemetry returns the rollups q selects, ordered by minute, device,
	// model and version (see SortRollups).
	ListTelemetry(ctx context.Context, q TelemetryQuery) ([]TelemetryRollup, error)
	// QueryTelemetry merges the rollups q selects into one summary (see
	// Summarize): the error rate, latency quantiles and shadow agreement
	// rollout gates check.
	QueryTelemetry(ctx context.Context, q TelemetryQuery) (TelemetrySummary, error)

	// AddEvent stores a device event and returns it with its ID. An
	// unknown device is registered with the event's time as FirstSeen;
	// LastSeen does not move, as the time is by the device's clock (ingest
	// calls UpsertDevice with the time it received the message). It returns
	// ErrInvalid for an event without a device, type or time.
	AddEvent(ctx context.Context, e Event) (Event, error)
	// ListEvents returns up to limit events (all when limit ≤ 0) at or after
	// since, newest first, of one device or of all devices when device is
	// empty.
	ListEvents(ctx context.Context, device string, since time.Time, limit int) ([]Event, error)

	// NextSequence atomically draws the next assignment sequence for a
	// device: one above both the last one drawn and the last one the device
	// reported accepting, so sequences strictly increase across restarts and
	// even after the hub's database was restored from a backup. It returns
	// ErrNotFound for an unknown device.
	NextSequence(ctx context.Context, device string) (uint64, error)
	// NextSequences draws the next sequence of each of devices, in order,
	// as NextSequence would one after the other (a device listed twice
	// draws two increasing sequences), in one atomic write that is as
	// durable as NextSequence's: all are drawn or none. The result is in the
	// order of devices; an empty list draws nothing. It returns ErrNotFound,
	// naming the device, when one is unknown.
	NextSequences(ctx context.Context, devices []string) ([]uint64, error)
	// SaveAssignment keeps a signed assignment as the device's last one. It
	// returns ErrNotFound for an unknown device, ErrInvalid for a sequence
	// that NextSequence has not drawn, and ErrConflict if the sequence is
	// not above the saved one.
	SaveAssignment(ctx context.Context, a SignedAssignment) error
	// SaveAssignments saves several signed assignments, in order, as
	// SaveAssignment would one after the other, in one atomic write as
	// durable as SaveAssignment's: all are saved or none. An error names
	// the first assignment refused, with SaveAssignment's errors.
	SaveAssignments(ctx context.Context, as []SignedAssignment) error
	// LastAssignment returns the device's last saved assignment, or ErrNotFound.
	LastAssignment(ctx context.Context, device string) (SignedAssignment, error)

	// CreateEnrollToken stores a new one-time enrollment token (only its
	// hash). It returns ErrInvalid (see EnrollToken.Validate) or ErrConflict
	// if a token with the same hash exists.
	CreateEnrollToken(ctx context.Context, t EnrollToken) error
	// GetEnrollToken returns the token with the given hash, used or not,
	// or ErrNotFound.
	GetEnrollToken(ctx context.Context, hash []byte) (EnrollToken, error)
	// ConsumeEnrollToken atomically uses the token with the given hash to
	// enroll device at time at: it marks the token used by device, registers
	// the device (FirstSeen = at if new) and sets the token's labels as the
	// device's hub labels, all or nothing, and returns the used token. Of
	// two concurrent calls with the same token exactly one succeeds. It
	// returns ErrNotFound for an unknown token, ErrConflict for a token
	// already used or, when the token names no device, for a device ID
	// already registered (a token may only re-enroll the device it names),
	// ErrExpired for a token at or past its expiry, and ErrInvalid for a
	// device ID that is not valid or not the one the token names. A failed
	// call leaves the token unused.
	ConsumeEnrollToken(ctx context.Context, hash []byte, device string, at time.Time) (EnrollToken, error)

	// Prune deletes telemetry rollups and events older than before and
	// returns how many rows went.
	Prune(ctx context.Context, before time.Time) (int64, error)
	// Close releases the database. It is safe to call more than once.
	Close() error
}
