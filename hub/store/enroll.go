package store

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/modelfleet/modelfleet/manifest"
)

// EnrollTokenHashBytes is the length of an enrollment token hash (SHA-256).
const EnrollTokenHashBytes = 32

// EnrollToken is a one-time enrollment token as the hub keeps it: only the
// SHA-256 hash of the secret the operator handed out, never the secret
// itself, so a copy of the database enrolls nobody.
type EnrollToken struct {
	// Hash is the SHA-256 of the token (EnrollTokenHashBytes long).
	Hash []byte `json:"-"`
	// DeviceID, when set, is the only device ID the token may enroll, and
	// may be the ID of a registered device (re-enrollment). When empty, the
	// device gets an ID not registered yet.
	DeviceID string `json:"device_id,omitempty"`
	// Labels become the enrolled device's hub labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Created is when the token was made.
	Created time.Time `json:"created"`
	// Expires is when the token stops working.
	Expires time.Time `json:"expires"`
	// UsedAt is when a device enrolled with it; zero while unused.
	UsedAt time.Time `json:"used_at,omitzero"`
	// UsedBy is the device that enrolled with it; empty while unused.
	UsedBy string `json:"used_by,omitempty"`
}

// ID is a short public name of the token for logs and listings: the first
// 12 hex digits of its hash. It reveals nothing of the secret.
func (t EnrollToken) ID() string {
	h := hex.EncodeToString(t.Hash)
	return h[:min(12, len(h))]
}

// Validate checks the fields CreateEnrollToken needs; errors wrap
// ErrInvalid and name the field.
func (t EnrollToken) Validate() error {
	if len(t.Hash) != EnrollTokenHashBytes {
		return fmt.Errorf("enroll token: hash of %d bytes, want %d: %w", len(t.Hash), EnrollTokenHashBytes, ErrInvalid)
	}
	if t.DeviceID != "" {
		if err := manifest.ValidateDeviceID(t.DeviceID); err != nil {
			return fmt.Errorf("enroll token: %v: %w", err, ErrInvalid)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(t.Labels)) {
		if err := ValidateLabel(k, t.Labels[k]); err != nil {
			return fmt.Errorf("enroll token: %w", err)
		}
	}
	if t.Created.IsZero() || t.Expires.IsZero() {
		return fmt.Errorf("enroll token: created and expires are required: %w", ErrInvalid)
	}
	if !t.Expires.After(t.Created) {
		return fmt.Errorf("enroll token: expires %s is not after created %s: %w",
			t.Expires.UTC().Format(time.RFC3339), t.Created.UTC().Format(time.RFC3339), ErrInvalid)
	}
	if !t.UsedAt.IsZero() || t.UsedBy != "" {
		return fmt.Errorf("enroll token: a new token cannot be used already: %w", ErrInvalid)
	}
	return nil
}
