package release

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/modelfleet/modelfleet/manifest"
)

// UnsignedEnvelope returns the canonical envelope of m with no signatures,
// as Push registers it with SignLater. It fills in m's schema and type and
// validates it; errors wrap manifest.ErrMalformed or
// manifest.ErrUnknownSchema. Devices refuse the envelope until it carries a
// threshold of release signatures (see Sign).
func UnsignedEnvelope(m *manifest.ModelManifest) ([]byte, error) {
	m.Schema, m.Type = manifest.SchemaV1, manifest.KindModel
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("unsigned manifest: %w", err)
	}
	signed, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("unsigned manifest: %w", err)
	}
	raw := make([]byte, 0, len(signed)+32)
	raw = append(raw, `{"signatures":[],"signed":`...)
	raw = append(raw, signed...)
	raw = append(raw, '}')
	// Parsing canonicalises: the bytes are those Sign will sign later.
	env, err := manifest.ParseEnvelope(raw)
	if err != nil {
		return nil, fmt.Errorf("unsigned manifest: %w", err)
	}
	return env.Bytes(), nil
}

// Sign is the offline signing step of a release pushed with SignLater: it
// adds a signature by each signer (release keys) to the model manifest
// envelope and returns the canonical signed envelope and the manifest. The
// manifest itself is not changed, so the artifacts' digests stay those Push
// computed. An envelope that is already signed gets the further signatures
// (for a release threshold above one); a signature by the same key is
// replaced.
//
// Run it where the release keys are, e.g. with keys loaded by
// internal/keys.LoadDir, then give the result to the hub
// (store.Store.SignRelease). Errors wrap manifest.ErrMalformed when the
// input is not a model manifest envelope, or ErrInvalid without a signer.
func Sign(ctx context.Context, envelope []byte, signers ...manifest.Signer) ([]byte, *manifest.ModelManifest, error) {
	if len(signers) == 0 {
		return nil, nil, fmt.Errorf("sign release: %w: no release key given", ErrInvalid)
	}
	env, err := manifest.ParseEnvelope(envelope)
	if err != nil {
		return nil, nil, fmt.Errorf("sign release: %w", err)
	}
	if env.Type != manifest.KindModel {
		return nil, nil, fmt.Errorf("sign release: %w: the envelope holds a %q document, not a model manifest", manifest.ErrMalformed, env.Type)
	}
	out, m, err := manifest.SignModelManifest(ctx, envelope, signers...)
	if err != nil {
		return nil, nil, fmt.Errorf("sign release: %w", err)
	}
	return out, m, nil
}
