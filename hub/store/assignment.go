package store

import "time"

// SignedAssignment is the last assignment the hub published to a device.
type SignedAssignment struct {
	// Device is the addressed device.
	Device string `json:"device"`
	// Sequence is the assignment's sequence, drawn with NextSequence.
	Sequence uint64 `json:"sequence"`
	// Envelope is the director-signed assignment envelope as published.
	Envelope []byte `json:"envelope"`
	// Saved is when SaveAssignment stored it; the store fills it in.
	Saved time.Time `json:"saved"`
}
