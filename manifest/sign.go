package manifest

import (
	"context"
	"fmt"
)

// ParseModelManifest reads an unsigned model manifest, as an operator writes
// it before signing: the JSON of ModelManifest, where "schema" and "type"
// may be left out. Member names must match exactly and unknown members are
// refused. The result is validated. Errors wrap ErrMalformed or
// ErrUnknownSchema.
func ParseModelManifest(raw []byte) (*ModelManifest, error) {
	n, err := parseJSON(raw)
	if err != nil {
		return nil, err
	}
	if err := checkKeys(n, 0); err != nil {
		return nil, err
	}
	m, err := decodeModel(n, false)
	if err != nil {
		return nil, err
	}
	if m.Schema == "" && m.Type == "" {
		m.setHeader()
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// SignModelManifest signs a model manifest given as JSON: either an unsigned
// manifest (see ParseModelManifest), which becomes a new envelope, or a
// signed envelope, which gets the signers' signatures added (for a release
// role whose threshold is above one). It returns the canonical envelope and
// the manifest. It does not check existing signatures.
func SignModelManifest(ctx context.Context, raw []byte, signers ...Signer) ([]byte, *ModelManifest, error) {
	n, err := parseJSON(raw)
	if err != nil {
		return nil, nil, err
	}
	if n.kind == kindObject && n.get("signed") != nil && n.get("signatures") != nil {
		env, err := envelopeFromNode(n)
		if err != nil {
			return nil, nil, err
		}
		if env.Type != KindModel {
			return nil, nil, malformed(fmt.Sprintf("the envelope holds a %q document, not a model manifest", env.Type))
		}
		m, err := decodeModel(env.signed, true)
		if err != nil {
			return nil, nil, err
		}
		if err := m.Validate(); err != nil {
			return nil, nil, err
		}
		if len(signers) == 0 {
			return nil, nil, fmt.Errorf("sign %s: no signer", KindModel)
		}
		if err := env.addSignatures(ctx, signers); err != nil {
			return nil, nil, fmt.Errorf("sign %s: %w", KindModel, err)
		}
		return env.Bytes(), m, nil
	}
	m, err := ParseModelManifest(raw)
	if err != nil {
		return nil, nil, err
	}
	out, err := Sign(ctx, m, signers...)
	if err != nil {
		return nil, nil, err
	}
	return out, m, nil
}
