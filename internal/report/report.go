// Package report defines the JSON payloads agents publish to the hub: the
// retained per-device state, discrete events and periodic telemetry. Both
// sides import it, so the formats cannot drift. Payloads are versioned by
// their Schema field; readers ignore unknown fields.
package report

import "time"

// Schema is the version of the payloads in this package.
const Schema = 1

// State is the retained {prefix}/devices/{id}/state payload.
type State struct {
	Schema int       `json:"schema"`
	Device string    `json:"device"`
	Time   time.Time `json:"time"`
	// Labels are the device's configured labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Sequence is the last accepted assignment sequence.
	Sequence uint64 `json:"sequence"`
	// Runtime describes the inference runtime in use.
	Runtime Runtime `json:"runtime"`
	// Models by name.
	Models map[string]Model `json:"models"`
}

// Runtime describes the inference runtime on the device.
type Runtime struct {
	ORTVersion string `json:"ort_version,omitempty"`
	// Variants lists the artifact variants the device runs, preferred first.
	Variants []string `json:"variants,omitempty"`
	// Error is set when the runtime could not be started.
	Error string `json:"error,omitempty"`
}

// Model is the state of one model on a device.
type Model struct {
	// Version is the version serving now (empty when none).
	Version string `json:"version,omitempty"`
	// Phase is one of downloading, verifying, warming, active, failed,
	// rolled-back.
	Phase string `json:"phase"`
	// Pending is the version being installed, if any.
	Pending string `json:"pending,omitempty"`
	// Previous is the version kept for rollback, if any.
	Previous string `json:"previous,omitempty"`
	// Progress of the pending download.
	Progress *Progress `json:"progress,omitempty"`
	// Error explains a failed or rolled-back phase.
	Error string `json:"error,omitempty"`
	// Provider is the execution provider in use ("cpu", "cuda").
	Provider string `json:"provider,omitempty"`
	// Loaded is false while the model is unloaded for idleness (scale to
	// zero); the next request reloads it.
	Loaded bool `json:"loaded"`
}

// Progress is bytes done of total.
type Progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// Event types.
const (
	EventInstalled   = "installed"
	EventRejected    = "rejected"
	EventFailed      = "failed"
	EventRolledBack  = "rolled-back"
	EventRemoved     = "removed"
	EventRootUpdated = "root-updated"
	EventStarted     = "started"
	EventWarning     = "warning"
)

// Event is one {prefix}/devices/{id}/events payload.
type Event struct {
	Schema int       `json:"schema"`
	Device string    `json:"device"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	// Model and Version name the model concerned, if any.
	Model   string `json:"model,omitempty"`
	Version string `json:"version,omitempty"`
	// Sequence is the assignment sequence concerned, if any.
	Sequence uint64 `json:"sequence,omitempty"`
	// Check names the failed verification check for rejections.
	Check string `json:"check,omitempty"`
	// Reason explains the event for an operator.
	Reason string `json:"reason,omitempty"`
}
