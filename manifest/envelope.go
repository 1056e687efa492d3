package manifest

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// SchemaV1 is the value of the "schema" member of every signed document of
// this format version. A document with a different schema is refused with
// ErrUnknownSchema: new fields come with a new schema, never silently.
const SchemaV1 = "modelfleet.dev/v1"

// Document kinds, the value of the "type" member of a signed document.
const (
	KindRoot       = "root"
	KindModel      = "model"
	KindAssignment = "assignment"
)

// MaxSignatures is the most signatures an envelope may carry.
const MaxSignatures = 64

// Envelope is a parsed signed document: {"signed": {…}, "signatures": [{"keyid", "sig"}]}.
type Envelope struct {
	// Signed is the canonical JSON of the "signed" member: the bytes the
	// signatures cover and the only bytes the typed document is decoded from.
	Signed []byte
	// Signatures in document order.
	Signatures []Signature
	// Schema and Type are the "schema" and "type" members of Signed, or ""
	// when absent or not strings.
	Schema, Type string

	signed *node
	raw    []byte // canonical bytes of the envelope as parsed
}

// Signature is one signature of an Envelope.
type Signature struct {
	// KeyID is the signing key's ID (see KeyID).
	KeyID string `json:"keyid"`
	// Sig is the ed25519 signature over the canonical signed bytes, base64
	// (standard, padded).
	Sig string `json:"sig"`
}

// ParseEnvelope parses and canonicalises a signed document without
// verifying it. It returns an error wrapping ErrMalformed when raw is not a
// canonicalisable JSON object with exactly the members "signed" (an object)
// and "signatures" (an array of {"keyid","sig"}), when a key ID is not 64
// lower-case hex digits, a sig is not strict base64, or an object key inside
// "signed" is not lower-case ASCII letters, digits and "_".
//
// The key rule exists because encoding/json matches member names to struct
// fields case-insensitively: without it "DEVICE" would be read as "device".
func ParseEnvelope(raw []byte) (*Envelope, error) {
	n, err := parseJSON(raw)
	if err != nil {
		return nil, err
	}
	return envelopeFromNode(n)
}

func envelopeFromNode(n *node) (*Envelope, error) {
	if n == nil || n.kind != kindObject {
		return nil, malformed("envelope is not a JSON object")
	}
	for _, m := range n.members {
		if m.key != "signed" && m.key != "signatures" {
			return nil, malformed(fmt.Sprintf("envelope has unknown member %q (want only signed and signatures)", m.key))
		}
	}
	signed, sigs := n.get("signed"), n.get("signatures")
	if signed == nil || signed.kind != kindObject {
		return nil, malformed(`envelope member "signed" is missing or not an object`)
	}
	if sigs == nil || sigs.kind != kindArray {
		return nil, malformed(`envelope member "signatures" is missing or not an array`)
	}
	if len(sigs.elems) > MaxSignatures {
		return nil, malformed(fmt.Sprintf("envelope has %d signatures, more than %d", len(sigs.elems), MaxSignatures))
	}
	if err := checkKeys(signed, 0); err != nil {
		return nil, err
	}
	// One pass emits the canonical envelope; "signed" sorts last, so the
	// signed bytes are its tail.
	b := make([]byte, 0, n.size+2)
	b = append(b, `{"signatures":`...)
	b = sigs.appendCanonical(b)
	b = append(b, `,"signed":`...)
	mark := len(b)
	b = signed.appendCanonical(b)
	end := len(b)
	b = append(b, '}')
	env := &Envelope{Signed: b[mark:end:end], signed: signed, raw: b}
	if s := signed.get("schema"); s != nil && s.kind == kindString {
		env.Schema = s.str
	}
	if s := signed.get("type"); s != nil && s.kind == kindString {
		env.Type = s.str
	}
	for i, s := range sigs.elems {
		sig, err := signatureFromNode(s)
		if err != nil {
			return nil, fmt.Errorf("signatures[%d]: %w", i, err)
		}
		env.Signatures = append(env.Signatures, sig)
	}
	return env, nil
}

func signatureFromNode(n *node) (Signature, error) {
	if n.kind != kindObject || len(n.members) != 2 {
		return Signature{}, malformed(`signature must be an object with exactly "keyid" and "sig"`)
	}
	k, s := n.get("keyid"), n.get("sig")
	if k == nil || k.kind != kindString || s == nil || s.kind != kindString {
		return Signature{}, malformed(`signature must be an object with exactly "keyid" and "sig" strings`)
	}
	if !isKeyID(k.str) {
		return Signature{}, malformed(fmt.Sprintf("key ID %q is not 64 lower-case hex digits", k.str))
	}
	if _, err := base64.StdEncoding.Strict().DecodeString(s.str); err != nil {
		return Signature{}, malformed("sig is not standard base64")
	}
	return Signature{KeyID: k.str, Sig: s.str}, nil
}

// checkKeys enforces the member-name rule of signed documents.
func checkKeys(n *node, depth int) error {
	switch n.kind {
	case kindArray:
		for _, e := range n.elems {
			if err := checkKeys(e, depth+1); err != nil {
				return err
			}
		}
	case kindObject:
		for _, m := range n.members {
			if m.key == "" {
				return malformed("empty member name")
			}
			for i := 0; i < len(m.key); i++ {
				c := m.key[i]
				if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
					return malformed(fmt.Sprintf("member name %q: signed documents use lower-case ASCII letters, digits and _ only", m.key))
				}
			}
			if err := checkKeys(m.val, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func isKeyID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Bytes returns the canonical JSON of the whole envelope.
func (e *Envelope) Bytes() []byte {
	b := make([]byte, 0, len(e.Signed)+len(e.Signatures)*160+32)
	b = append(b, `{"signatures":[`...)
	for i, s := range e.Signatures {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"keyid":`...)
		b = appendString(b, s.KeyID)
		b = append(b, `,"sig":`...)
		b = appendString(b, s.Sig)
		b = append(b, '}')
	}
	b = append(b, `],"signed":`...)
	b = append(b, e.Signed...)
	return append(b, '}')
}

// MarshalJSON implements json.Marshaler with the canonical bytes.
func (e *Envelope) MarshalJSON() ([]byte, error) { return e.Bytes(), nil }

// Document is a signable document: *Root, *ModelManifest or *Assignment.
type Document interface {
	// Kind returns KindRoot, KindModel or KindAssignment.
	Kind() string
	// Validate checks the document's format rules.
	Validate() error
	setHeader()
}

// Sign fills in the document's schema and type, validates it and returns the
// canonical JSON of an envelope holding it and one signature per signer. It
// returns an error when there is no signer, the same key signs twice, the
// document is invalid or a signer fails.
func Sign(ctx context.Context, doc Document, signers ...Signer) ([]byte, error) {
	doc.setHeader()
	if err := doc.Validate(); err != nil {
		return nil, fmt.Errorf("sign %s: %w", doc.Kind(), err)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("sign %s: encode: %w", doc.Kind(), err)
	}
	n, err := parseJSON(b)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", doc.Kind(), err)
	}
	if err := checkKeys(n, 0); err != nil {
		return nil, fmt.Errorf("sign %s: %w", doc.Kind(), err)
	}
	env := &Envelope{Signed: n.canonical(), signed: n}
	if len(signers) == 0 {
		return nil, fmt.Errorf("sign %s: no signer", doc.Kind())
	}
	if err := env.addSignatures(ctx, signers); err != nil {
		return nil, fmt.Errorf("sign %s: %w", doc.Kind(), err)
	}
	return env.Bytes(), nil
}

// AddSignatures parses a signed envelope and returns it with a signature by
// each signer added (replacing an earlier signature by the same key), for
// roles with a threshold above one whose keys sign one after the other. It
// does not check the existing signatures.
func AddSignatures(ctx context.Context, envelope []byte, signers ...Signer) ([]byte, error) {
	env, err := ParseEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	if err := env.addSignatures(ctx, signers); err != nil {
		return nil, err
	}
	return env.Bytes(), nil
}

func (e *Envelope) addSignatures(ctx context.Context, signers []Signer) error {
	seen := map[string]bool{}
	for _, s := range signers {
		id := s.KeyID()
		if seen[id] {
			return fmt.Errorf("key %s given twice", short(id))
		}
		seen[id] = true
		sig, err := s.Sign(ctx, e.Signed)
		if err != nil {
			return fmt.Errorf("key %s: %w", short(id), err)
		}
		if len(sig) != ed25519.SignatureSize {
			return fmt.Errorf("key %s returned a %d-byte signature, want %d", short(id), len(sig), ed25519.SignatureSize)
		}
		ns := Signature{KeyID: id, Sig: base64.StdEncoding.EncodeToString(sig)}
		if i := slices.IndexFunc(e.Signatures, func(x Signature) bool { return x.KeyID == id }); i >= 0 {
			e.Signatures[i] = ns
		} else {
			e.Signatures = append(e.Signatures, ns)
		}
	}
	if len(e.Signatures) > MaxSignatures {
		return errors.New("too many signatures")
	}
	return nil
}

// short abbreviates a key ID for messages.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
