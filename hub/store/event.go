package store

import (
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// Event is one discrete thing a device reported (see report.Event).
type Event struct {
	// ID is assigned by AddEvent and increases with every event stored.
	ID int64 `json:"id"`
	// Device is the reporting device.
	Device string `json:"device"`
	// Time is when the event happened, by the device's clock.
	Time time.Time `json:"time"`
	// Type is one of the report.Event* types.
	Type string `json:"type"`
	// Model and Version name the model concerned, if any.
	Model   string `json:"model,omitempty"`
	Version string `json:"version,omitempty"`
	// Sequence is the assignment sequence concerned, if any.
	Sequence uint64 `json:"sequence,omitempty"`
	// Check names the failed verification check of a rejection.
	Check string `json:"check,omitempty"`
	// Reason explains the event for an operator.
	Reason string `json:"reason,omitempty"`
}

// EventFromReport converts an events payload received from device.
func EventFromReport(device string, e report.Event) Event {
	return Event{
		Device: device, Time: e.Time, Type: e.Type,
		Model: e.Model, Version: e.Version, Sequence: e.Sequence,
		Check: e.Check, Reason: e.Reason,
	}
}
