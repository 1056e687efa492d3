package release

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/modelfleet/modelfleet/hub/store"
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

// SignatureRegistry is where Attach reads and stores releases; store.Store
// implements it.
type SignatureRegistry interface {
	// GetRelease returns a release, or an error wrapping store.ErrNotFound.
	GetRelease(ctx context.Context, name, version string) (store.Release, error)
	// SignRelease replaces an unsigned release's manifest by its signed
	// envelope, or returns an error wrapping store.ErrConflict when the
	// release is signed already.
	SignRelease(ctx context.Context, name, version string, envelope []byte) error
}

// Attach completes the offline signing of a release pushed with SignLater:
// it checks that envelope is the registered manifest of name@version signed
// by a threshold of the release keys of rootJSON (the root the hub
// publishes, so what agents will check), and stores it. It returns the
// canonical signed envelope as stored.
//
// Nothing changes when a check fails. Errors wrap store.ErrNotFound (no
// such release), ErrAlreadySigned, ErrSignatureRejected (with the
// manifest.VerifyError saying which check failed: signature, key,
// threshold, …) or ErrManifestMismatch (the envelope signs different
// bytes: another release, or an edited manifest).
func Attach(ctx context.Context, reg SignatureRegistry, rootJSON []byte, name, version string, envelope []byte) ([]byte, error) {
	ref := name + "@" + version
	rel, err := reg.GetRelease(ctx, name, version)
	if err != nil {
		return nil, fmt.Errorf("attach signature to %s: %w", ref, err)
	}
	if rel.Signed {
		return nil, fmt.Errorf("attach signature to %s: %w; releases never change, push a new version", ref, ErrAlreadySigned)
	}
	cfg := manifest.DefaultConfig()
	// Devices enforce their own artifact cap; Push checked it already.
	cfg.MaxArtifactBytes = math.MaxInt64
	v, err := manifest.NewVerifier(rootJSON, cfg)
	if err != nil {
		return nil, fmt.Errorf("attach signature to %s: the hub's trust root: %w", ref, err)
	}
	if _, err := v.VerifyManifest(envelope); err != nil {
		return nil, fmt.Errorf("attach signature to %s: %w: %w", ref, ErrSignatureRejected, err)
	}
	got, err := manifest.ParseEnvelope(envelope)
	if err != nil { // verified above: cannot happen
		return nil, fmt.Errorf("attach signature to %s: %w: %w", ref, ErrSignatureRejected, err)
	}
	want, err := manifest.ParseEnvelope(rel.Manifest)
	if err != nil {
		return nil, fmt.Errorf("attach signature to %s: the registered manifest: %w", ref, err)
	}
	if !bytes.Equal(got.Signed, want.Signed) {
		return nil, fmt.Errorf("attach signature to %s: %w (%s); sign the manifest `fleethub model manifest %s %s` prints, unchanged",
			ref, ErrManifestMismatch, signedDiff(got.Signed, want.Signed), name, version)
	}
	out := got.Bytes()
	if err := reg.SignRelease(ctx, name, version, out); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("attach signature to %s: %w: %w", ref, ErrAlreadySigned, err)
		}
		return nil, fmt.Errorf("attach signature to %s: %w", ref, err)
	}
	return out, nil
}

// signedDiff names the top-level members in which two canonical signed
// documents differ, for the operator.
func signedDiff(got, want []byte) string {
	var g, w map[string]json.RawMessage
	if json.Unmarshal(got, &g) != nil || json.Unmarshal(want, &w) != nil {
		return "the documents differ"
	}
	var diff []string
	for k, gv := range g {
		if wv, ok := w[k]; !ok || !bytes.Equal(gv, wv) {
			diff = append(diff, k)
		}
	}
	for k := range w {
		if _, ok := g[k]; !ok {
			diff = append(diff, k)
		}
	}
	if len(diff) == 0 {
		return "the documents differ"
	}
	slices.Sort(diff)
	for i, k := range diff {
		var gs, ws string
		if v, ok := g[k]; ok && len(v) <= 80 {
			gs = string(v)
		}
		if v, ok := w[k]; ok && len(v) <= 80 {
			ws = string(v)
		}
		if gs != "" && ws != "" {
			diff[i] = fmt.Sprintf("%s is %s, registered %s", k, gs, ws)
		}
	}
	return "differs in " + strings.Join(diff, "; ")
}
