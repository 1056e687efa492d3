package release

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

// pushUnsigned pushes an example model with SignLater and returns the
// registered (unsigned) envelope.
func (e *env) pushUnsigned(t *testing.T, name, version, file string) []byte {
	t.Helper()
	req := e.request(name, version, example("cpu", file))
	req.Signers, req.SignLater = nil, true
	res, err := Push(t.Context(), e.s3.Client, e.reg, req)
	if err != nil {
		t.Fatal(err)
	}
	return res.Envelope
}

// TestAttachOfflineSignature: a release pushed unsigned gets its offline
// signature through Attach, which refuses every envelope that is not the
// registered manifest signed by the root's release role, changing nothing.
func TestAttachOfflineSignature(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const name = "vibration-anomaly"
	unsigned := e.pushUnsigned(t, name, "1.0.0", models.FileV1)
	other := e.pushUnsigned(t, name, "1.1.0", models.FileV2)

	mustSign := func(env []byte, s ...manifest.Signer) []byte {
		t.Helper()
		out, _, err := Sign(ctx, env, s...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// A manifest edited after the push (a bigger artifact), validly signed.
	edited, err := manifest.ParseEnvelope(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.ParseModelManifest(edited.Signed)
	if err != nil {
		t.Fatal(err)
	}
	m.Artifacts[0].Size++
	tampered, err := manifest.Sign(ctx, m, e.release)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		version   string
		envelope  []byte
		wantErr   error
		wantCause error
	}{
		{"unknown release", "9.9.9", mustSign(unsigned, e.release), store.ErrNotFound, nil},
		{"still unsigned", "1.0.0", unsigned, ErrSignatureRejected, manifest.ErrThreshold},
		{"director key", "1.0.0", mustSign(unsigned, e.director), ErrSignatureRejected, nil},
		{"foreign key", "1.0.0", mustSign(unsigned, fleettest.Key(t, "foreign release")), ErrSignatureRejected, nil},
		{"not JSON", "1.0.0", []byte("not json"), ErrSignatureRejected, manifest.ErrMalformed},
		{"another release", "1.0.0", mustSign(other, e.release), ErrManifestMismatch, nil},
		{"edited manifest", "1.0.0", tampered, ErrManifestMismatch, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Attach(ctx, e.reg, e.root, name, tc.version, tc.envelope)
			if !errors.Is(err, tc.wantErr) || tc.wantCause != nil && !errors.Is(err, tc.wantCause) {
				t.Fatalf("Attach: %v; want %v (%v)", err, tc.wantErr, tc.wantCause)
			}
			rel, err := e.reg.GetRelease(ctx, name, "1.0.0")
			if err != nil || rel.Signed || !bytes.Equal(rel.Manifest, unsigned) {
				t.Fatalf("after a refused attach the release is %+v, %v; want it unchanged", rel, err)
			}
		})
	}

	// Mismatch errors say what differs.
	_, err = Attach(ctx, e.reg, e.root, name, "1.0.0", tampered)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("artifacts")) {
		t.Errorf("mismatch error %v does not name the artifacts", err)
	}

	// A re-formatted (pretty-printed) signed envelope is accepted and
	// stored canonically.
	signed := mustSign(unsigned, e.release)
	var pretty bytes.Buffer
	pretty.Write(bytes.ReplaceAll(signed, []byte(`,"`), []byte(",\n  \"")))
	stored, err := Attach(ctx, e.reg, e.root, name, "1.0.0", pretty.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, signed) {
		t.Errorf("stored envelope is not the canonical signed one:\n%s\n%s", stored, signed)
	}
	rel, err := e.reg.GetRelease(ctx, name, "1.0.0")
	if err != nil || !rel.Signed || !bytes.Equal(rel.Manifest, signed) {
		t.Fatalf("after attach: %+v, %v", rel, err)
	}
	if _, err := e.verify(t, rel.Manifest); err != nil {
		t.Errorf("stored manifest does not verify: %v", err)
	}
	if _, err := Attach(ctx, e.reg, e.root, name, "1.0.0", signed); !errors.Is(err, ErrAlreadySigned) {
		t.Errorf("second attach: %v, want ErrAlreadySigned", err)
	}
}

// TestAttachThreshold: with a release role of 2 keys, threshold 2, one
// signature is refused and two are accepted.
func TestAttachThreshold(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "keys")
	opts := keys.DefaultInitOptions()
	opts.Release = keys.RoleSpec{Keys: 2, Threshold: 2}
	res, err := keys.Init(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(res.RootPath)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := keys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var release []manifest.Signer
	for _, k := range loaded {
		if k.Role == manifest.RoleRelease {
			release = append(release, k.Signer)
		}
	}
	if len(release) != 2 {
		t.Fatalf("%d release keys", len(release))
	}
	unsigned := e.pushUnsigned(t, "detector", "2.0.0", models.FileV1)
	one, _, err := Sign(ctx, unsigned, release[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(ctx, e.reg, root, "detector", "2.0.0", one); !errors.Is(err, ErrSignatureRejected) || !errors.Is(err, manifest.ErrThreshold) {
		t.Fatalf("one of two signatures: %v; want ErrSignatureRejected and ErrThreshold", err)
	}
	// The second signer adds to the first one's envelope, as
	// `fleethub manifest sign` does on another machine.
	two, _, err := Sign(ctx, one, release[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(ctx, e.reg, root, "detector", "2.0.0", two); err != nil {
		t.Fatalf("two of two signatures: %v", err)
	}
}
