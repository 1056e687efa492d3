package manifest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// testNow is the fixed clock of the tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// mustKey returns a deterministic key for name, so signatures (ed25519 is
// deterministic) and golden files are stable.
func mustKey(tb testing.TB, name string) *Ed25519Signer {
	tb.Helper()
	seed := sha256.Sum256([]byte("modelfleet test key " + name))
	s, err := NewEd25519Signer(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustKeys(tb testing.TB, prefix string, n int) []*Ed25519Signer {
	tb.Helper()
	keys := make([]*Ed25519Signer, n)
	for i := range keys {
		keys[i] = mustKey(tb, fmt.Sprintf("%s-%d", prefix, i+1))
	}
	return keys
}

func signers(keys ...*Ed25519Signer) []Signer {
	s := make([]Signer, len(keys))
	for i, k := range keys {
		s[i] = k
	}
	return s
}

// fixture is a trust root with its private keys.
type fixture struct {
	tb                    testing.TB
	rootKeys, releaseKeys []*Ed25519Signer
	directorKeys          []*Ed25519Signer
	root                  *Root
	rootJSON              []byte
}

type thresholds struct{ root, rootN, release, releaseN, director, directorN int }

var defaultThresholds = thresholds{root: 2, rootN: 3, release: 1, releaseN: 2, director: 1, directorN: 1}

func newFixture(tb testing.TB) *fixture { return newFixtureT(tb, defaultThresholds) }

func newFixtureT(tb testing.TB, th thresholds) *fixture {
	tb.Helper()
	f := &fixture{
		tb:           tb,
		rootKeys:     mustKeys(tb, "root", th.rootN),
		releaseKeys:  mustKeys(tb, "release", th.releaseN),
		directorKeys: mustKeys(tb, "director", th.directorN),
	}
	f.root = &Root{Version: 1, Expires: testNow.AddDate(1, 0, 0)}
	f.root.Roles.Root = mustRole(tb, f.root, th.root, f.rootKeys)
	f.root.Roles.Release = mustRole(tb, f.root, th.release, f.releaseKeys)
	f.root.Roles.Director = mustRole(tb, f.root, th.director, f.directorKeys)
	f.rootJSON = mustSign(tb, f.root, signers(f.rootKeys...)...)
	return f
}

func mustRole(tb testing.TB, r *Root, threshold int, keys []*Ed25519Signer) Role {
	tb.Helper()
	role := Role{Threshold: threshold}
	for _, k := range keys {
		id, err := r.AddKey(k.PublicKey())
		if err != nil {
			tb.Fatal(err)
		}
		role.KeyIDs = append(role.KeyIDs, id)
	}
	return role
}

func mustSign(tb testing.TB, doc Document, s ...Signer) []byte {
	tb.Helper()
	b, err := Sign(context.Background(), doc, s...)
	if err != nil {
		tb.Fatalf("sign: %v", err)
	}
	return b
}

// manifest returns a valid model manifest with cpu and cuda artifacts.
func (f *fixture) manifest(name, version string) *ModelManifest {
	return &ModelManifest{
		Name:    name,
		Version: version,
		Created: testNow.Add(-24 * time.Hour),
		Artifacts: []Artifact{
			{Variant: "cpu", Key: "models/" + name + "/" + version + "/cpu.onnx", SHA256: strings.Repeat("ab", 32), Size: 4 << 20, Format: FormatONNX},
			{Variant: "cuda", Key: "models/" + name + "/" + version + "/cuda.onnx", SHA256: strings.Repeat("cd", 32), Size: 5 << 20, Format: FormatONNX},
		},
		Inputs:  []TensorSpec{{Name: "x", ElementType: "float32", Shape: []int64{-1, 128}}},
		Outputs: []TensorSpec{{Name: "score", ElementType: "float32", Shape: []int64{-1, 1}}},
		WarmUp:  &WarmUp{Inputs: []WarmUpTensor{{Name: "x", Shape: []int64{1, 128}}}},
		Runtime: &RuntimeHints{IntraOpThreads: 2, GPUMemLimitBytes: 1 << 30},
	}
}

// signedManifest signs m with the first release key.
func (f *fixture) signedManifest(m *ModelManifest) []byte {
	return mustSign(f.tb, m, f.releaseKeys[0])
}

// assignment returns a valid assignment for device edge-1 with one active
// entry per manifest envelope.
func (f *fixture) assignment(seq uint64, manifests ...[]byte) *Assignment {
	a := &Assignment{
		Device:   "edge-1",
		Sequence: seq,
		Issued:   testNow.Add(-time.Minute),
		Expires:  testNow.Add(time.Hour),
	}
	for _, m := range manifests {
		a.Models = append(a.Models, ModelAssignment{Manifest: m, Mode: ModeActive})
	}
	return a
}

func (f *fixture) signedAssignment(a *Assignment) []byte {
	return mustSign(f.tb, a, f.directorKeys[0])
}

// verifier returns a Verifier for device edge-1 on the fixed clock.
func (f *fixture) verifier(mods ...func(*Config)) *Verifier {
	f.tb.Helper()
	cfg := DefaultConfig()
	cfg.DeviceID = "edge-1"
	cfg.Variants = []string{"cuda", "cpu"}
	cfg.Now = func() time.Time { return testNow }
	for _, m := range mods {
		m(&cfg)
	}
	v, err := NewVerifier(f.rootJSON, cfg)
	if err != nil {
		f.tb.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// resign replaces the signatures of an envelope.
func resign(tb testing.TB, raw []byte, s ...Signer) []byte {
	tb.Helper()
	env, err := ParseEnvelope(raw)
	if err != nil {
		tb.Fatal(err)
	}
	env.Signatures = nil
	out, err := AddSignatures(context.Background(), env.Bytes(), s...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// editSigned rewrites the signed part of an envelope through a generic map,
// keeping the old signatures.
func editSigned(tb testing.TB, raw []byte, edit func(m map[string]any)) []byte {
	tb.Helper()
	var env struct {
		Signed     map[string]any `json:"signed"`
		Signatures []Signature    `json:"signatures"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		tb.Fatal(err)
	}
	edit(env.Signed)
	out, err := json.Marshal(env)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// wantErr asserts that err matches want with errors.Is (nil means success)
// and, for VerifyErrors, that the failed check is check when check != "".
func wantErr(tb testing.TB, err, want error, check string) {
	tb.Helper()
	if want == nil {
		if err != nil {
			tb.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		tb.Fatalf("error = %v, want %v", err, want)
	}
	if check == "" {
		return
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		tb.Fatalf("error %v is not a *VerifyError", err)
	}
	if ve.Check != check {
		tb.Fatalf("failed check = %q, want %q (error: %v)", ve.Check, check, err)
	}
}

// rawEnvelope signs arbitrary signed JSON (canonicalised, but without the
// member-name rule of ParseEnvelope) and wraps it in an envelope: how an
// attacker holding a key would build a document our Sign refuses to make.
func rawEnvelope(tb testing.TB, signed []byte, keys ...*Ed25519Signer) []byte {
	tb.Helper()
	c, err := Canonicalize(signed)
	if err != nil {
		tb.Fatal(err)
	}
	env := &Envelope{Signed: c}
	for _, k := range keys {
		sig, err := k.Sign(context.Background(), c)
		if err != nil {
			tb.Fatal(err)
		}
		env.Signatures = append(env.Signatures, Signature{KeyID: k.KeyID(), Sig: base64.StdEncoding.EncodeToString(sig)})
	}
	return env.Bytes()
}
