package store

import (
	"fmt"
	"time"

	"github.com/modelfleet/modelfleet/manifest"
)

// Release is one pushed model version. Name and version identify it.
type Release struct {
	// Name is the model name (see manifest.ValidateName).
	Name string `json:"name"`
	// Version is the model's semantic version.
	Version string `json:"version"`
	// Manifest is the model manifest envelope as pushed: signed by the
	// release key, or with no signatures yet when Signed is false.
	Manifest []byte `json:"manifest"`
	// Signed reports whether Manifest carries the release signatures.
	Signed bool `json:"signed"`
	// Created is when the release was registered.
	Created time.Time `json:"created"`
	// Artifacts summarises the manifest's artifacts for listings.
	Artifacts []manifest.Artifact `json:"artifacts"`
}

// Ref returns "name@version" for messages.
func (r Release) Ref() string { return r.Name + "@" + r.Version }

// Validate checks what the store needs: a valid model name, a semantic
// version, a manifest and a creation time. It returns an error wrapping
// ErrInvalid.
func (r Release) Validate() error {
	if err := manifest.ValidateName(r.Name); err != nil {
		return fmt.Errorf("release %s: %v: %w", r.Ref(), err, ErrInvalid)
	}
	if _, err := manifest.ParseSemver(r.Version); err != nil {
		return fmt.Errorf("release %s: %v: %w", r.Ref(), err, ErrInvalid)
	}
	if len(r.Manifest) == 0 {
		return fmt.Errorf("release %s has no manifest: %w", r.Ref(), ErrInvalid)
	}
	if r.Created.IsZero() {
		return fmt.Errorf("release %s has no creation time: %w", r.Ref(), ErrInvalid)
	}
	return nil
}
