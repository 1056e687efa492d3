package manifest

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// KeyTypeEd25519 is the only key type of schema v1.
const KeyTypeEd25519 = "ed25519"

// PublicKey is a public key as listed in a Root.
type PublicKey struct {
	// KeyType is "ed25519".
	KeyType string `json:"keytype"`
	// Public is the 32-byte ed25519 public key, base64 (standard, padded).
	Public string `json:"public"`
}

// NewPublicKey wraps an ed25519 public key.
func NewPublicKey(pub ed25519.PublicKey) PublicKey {
	return PublicKey{KeyType: KeyTypeEd25519, Public: base64.StdEncoding.EncodeToString(pub)}
}

// Ed25519 decodes the key. It returns an error wrapping ErrMalformed for
// another key type or a public value that is not 32 bytes of strict base64.
func (k PublicKey) Ed25519() (ed25519.PublicKey, error) {
	if k.KeyType != KeyTypeEd25519 {
		return nil, malformed(fmt.Sprintf("key type %q not supported (want %q)", k.KeyType, KeyTypeEd25519))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(k.Public)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, malformed("public key is not 32 bytes of standard base64")
	}
	return ed25519.PublicKey(b), nil
}

// ID returns the key ID: the lower-case hex sha256 of the canonical JSON of
// {"keytype":"ed25519","public":"<base64>"}, with the public value
// re-encoded from the decoded bytes so that one key has exactly one ID.
func (k PublicKey) ID() (string, error) {
	pub, err := k.Ed25519()
	if err != nil {
		return "", err
	}
	return KeyID(pub), nil
}

// KeyID returns the key ID of an ed25519 public key (see PublicKey.ID).
func KeyID(pub ed25519.PublicKey) string {
	b := appendString([]byte(`{"keytype":`), KeyTypeEd25519)
	b = append(b, `,"public":`...)
	b = appendString(b, base64.StdEncoding.EncodeToString(pub))
	b = append(b, '}')
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Signer signs documents. Implementations may keep the private key in an HSM
// or a cloud KMS; Sign receives the exact canonical bytes to sign and returns
// a raw 64-byte ed25519 signature.
type Signer interface {
	// KeyID returns the ID of the signer's public key (see KeyID).
	KeyID() string
	// Sign signs msg.
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// Ed25519Signer is an in-memory Signer.
type Ed25519Signer struct {
	priv  ed25519.PrivateKey
	keyID string
}

// NewEd25519Signer returns a signer for priv. It returns an error when priv
// is not an ed25519 private key of the right length.
func NewEd25519Signer(priv ed25519.PrivateKey) (*Ed25519Signer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("ed25519 private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	pub, ok := priv.Public().(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("not an ed25519 private key")
	}
	return &Ed25519Signer{priv: priv, keyID: KeyID(pub)}, nil
}

// GenerateEd25519Signer creates a new key from rand (crypto/rand.Reader when nil).
func GenerateEd25519Signer(rand io.Reader) (*Ed25519Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return NewEd25519Signer(priv)
}

// KeyID implements Signer.
func (s *Ed25519Signer) KeyID() string { return s.keyID }

// Sign implements Signer.
func (s *Ed25519Signer) Sign(_ context.Context, msg []byte) ([]byte, error) {
	return s.priv.Sign(nil, msg, crypto.Hash(0))
}

// PublicKey returns the public key in Root form.
func (s *Ed25519Signer) PublicKey() PublicKey {
	return NewPublicKey(s.priv.Public().(ed25519.PublicKey))
}

// PrivateKey returns the private key, for storing it (see internal/keys).
func (s *Ed25519Signer) PrivateKey() ed25519.PrivateKey { return s.priv }
