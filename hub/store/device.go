package store

import (
	"encoding/json"
	"maps"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// Device is one agent known to the hub.
type Device struct {
	// ID is the device ID the agent uses in its topics and assignments.
	ID string `json:"id"`
	// Labels are the effective labels selectors match: those the device
	// reports, overridden and extended by HubLabels.
	Labels map[string]string `json:"labels"`
	// ReportedLabels are the labels from the device's own configuration, as
	// in its last state report.
	ReportedLabels map[string]string `json:"reported_labels,omitempty"`
	// HubLabels are the labels an operator set on the hub (SetLabels).
	HubLabels map[string]string `json:"hub_labels,omitempty"`
	// FirstSeen is when the hub first heard of the device.
	FirstSeen time.Time `json:"first_seen"`
	// LastSeen is when the hub last received a message from it.
	LastSeen time.Time `json:"last_seen"`
	// Online is the device's retained online flag (false after its last will).
	Online bool `json:"online"`
	// Inventory is the device's description of its runtime, as reported
	// (report.Runtime as JSON); nil until the first state report.
	Inventory json.RawMessage `json:"inventory,omitempty"`
	// Sequence is the last assignment sequence the hub drew for the device
	// (NextSequence); 0 if none yet.
	Sequence uint64 `json:"sequence"`
	// AcceptedSequence is the last assignment sequence the device reported
	// accepting.
	AcceptedSequence uint64 `json:"accepted_sequence"`
	// Models are the models on the device by name, from its state report.
	Models map[string]DeviceModel `json:"models"`
	// TelemetryTime is the time (device clock) of the newest telemetry
	// payload received; zero if none.
	TelemetryTime time.Time `json:"telemetry_time"`
	// System is the resource usage that payload reported; nil if none.
	System *report.DeviceStats `json:"system,omitempty"`
}

// DeviceModel is the state of one model on a device, from its state report.
type DeviceModel struct {
	// Version serving now, empty when none.
	Version string `json:"version,omitempty"`
	// Phase is downloading, verifying, warming, active, failed or
	// rolled-back (see internal/report).
	Phase string `json:"phase"`
	// Pending is the version being installed, if any.
	Pending string `json:"pending,omitempty"`
	// Previous is the version kept for rollback, if any.
	Previous string `json:"previous,omitempty"`
	// Error explains a failed or rolled-back phase.
	Error string `json:"error,omitempty"`
	// Provider is the execution provider in use ("cpu", "cuda").
	Provider string `json:"provider,omitempty"`
	// UpdatedAt is when a state report last changed this entry.
	UpdatedAt time.Time `json:"updated_at"`
}

// EffectiveLabels returns reported overlaid by hub: the labels selectors
// match. It never returns nil.
func EffectiveLabels(reported, hub map[string]string) map[string]string {
	out := make(map[string]string, len(reported)+len(hub))
	maps.Copy(out, reported)
	maps.Copy(out, hub)
	return out
}
