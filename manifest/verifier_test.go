package manifest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestThreshold(t *testing.T) {
	f := newFixtureT(t, thresholds{root: 1, rootN: 1, release: 2, releaseN: 3, director: 1, directorN: 1})
	r := f.releaseKeys
	m := f.manifest("vib", "1.0.0")
	base := mustSign(t, m, r[0]) // to take the canonical signed bytes from
	env, err := ParseEnvelope(base)
	if err != nil {
		t.Fatal(err)
	}
	sig := func(k *Ed25519Signer) Signature {
		e := *env
		e.Signatures = nil
		if err := e.addSignatures(context.Background(), []Signer{k}); err != nil {
			t.Fatal(err)
		}
		return e.Signatures[0]
	}
	badSig := func(k *Ed25519Signer) Signature {
		s := sig(mustKey(t, "someone else"))
		s.KeyID = k.KeyID()
		return s
	}
	tests := []struct {
		name    string
		sigs    []Signature
		wantErr error
	}{
		{name: "2 of 3", sigs: []Signature{sig(r[0]), sig(r[1])}},
		{name: "3 of 3", sigs: []Signature{sig(r[0]), sig(r[1]), sig(r[2])}},
		{name: "2 valid and a bad one", sigs: []Signature{sig(r[0]), badSig(r[1]), sig(r[2])}},
		{name: "2 valid and an unknown key", sigs: []Signature{sig(mustKey(t, "x")), sig(r[0]), sig(r[2])}},
		{name: "1 of 3", sigs: []Signature{sig(r[1])}, wantErr: ErrThreshold},
		{name: "same key twice", sigs: []Signature{sig(r[0]), sig(r[0])}, wantErr: ErrThreshold},
		{name: "same key three times", sigs: []Signature{sig(r[2]), sig(r[2]), sig(r[2])}, wantErr: ErrThreshold},
		{name: "none", sigs: nil, wantErr: ErrThreshold},
		{name: "1 valid and 1 bad", sigs: []Signature{sig(r[0]), badSig(r[1])}, wantErr: ErrBadSignature},
		{name: "1 valid and a director key", sigs: []Signature{sig(r[0]), sig(f.directorKeys[0])}, wantErr: ErrThreshold},
		{name: "director and root keys only", sigs: []Signature{sig(f.directorKeys[0]), sig(f.rootKeys[0])}, wantErr: ErrWrongRole},
		{name: "unknown keys only", sigs: []Signature{sig(mustKey(t, "x")), sig(mustKey(t, "y"))}, wantErr: ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := *env
			e.Signatures = tt.sigs
			_, err := f.verifier().VerifyManifest(e.Bytes())
			wantErr(t, err, tt.wantErr, "")
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr, "signatures")
			}
		})
	}
}

// rotation builds root version+1 from prev, replacing the root and release
// keys with fresh ones named after the version.
func rotation(t *testing.T, prev *Root, tag string) (*Root, []*Ed25519Signer, []*Ed25519Signer) {
	t.Helper()
	next := prev.Next(testNow.AddDate(1, 0, 0))
	rootKeys := mustKeys(t, "root-"+tag, 3)
	releaseKeys := mustKeys(t, "release-"+tag, 1)
	if err := next.SetRole(RoleRoot, mustRole(t, next, 2, rootKeys)); err != nil {
		t.Fatal(err)
	}
	if err := next.SetRole(RoleRelease, mustRole(t, next, 1, releaseKeys)); err != nil {
		t.Fatal(err)
	}
	next.PruneKeys()
	return next, rootKeys, releaseKeys
}

func TestRotateRootChain(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	oldRelease := f.signedManifest(f.manifest("vib", "1.0.0"))

	r2, root2, release2 := rotation(t, f.root, "v2")
	raw2 := mustSign(t, r2, signers(append([]*Ed25519Signer{f.rootKeys[0], f.rootKeys[2]}, root2[:2]...)...)...)
	r3, root3, release3 := rotation(t, r2, "v3")
	raw3 := mustSign(t, r3, root2[1], root2[2], root3[0], root3[1])

	for i, raw := range [][]byte{raw2, raw3} {
		got, err := v.UpdateRoot(raw)
		wantErr(t, err, nil, "")
		if got.Version != uint64(i+2) || v.Root().Version != uint64(i+2) {
			t.Fatalf("after rotation %d: version %d", i, got.Version)
		}
	}
	// The release keys of root 1 and 2 are gone: their manifests no longer verify.
	_, err := v.VerifyManifest(oldRelease)
	wantErr(t, err, ErrUnknownKey, "signatures")
	_, err = v.VerifyManifest(mustSign(t, f.manifest("vib", "1.0.0"), release2[0]))
	wantErr(t, err, ErrUnknownKey, "signatures")
	_, err = v.VerifyManifest(mustSign(t, f.manifest("vib", "1.0.0"), release3[0]))
	wantErr(t, err, nil, "")
	// Re-delivery of the trusted root (a retained message) is a no-op.
	_, err = v.UpdateRoot(raw3)
	wantErr(t, err, nil, "")
	// A restarted agent resumes from the persisted root.
	v2, err := NewVerifier(v.RootJSON(), v.cfg)
	wantErr(t, err, nil, "")
	if v2.Root().Version != 3 {
		t.Fatalf("restored root version %d", v2.Root().Version)
	}
}

func TestRotateRootWrongVersion(t *testing.T) {
	f := newFixture(t)
	all := signers(f.rootKeys...)
	same := f.root.Next(testNow.AddDate(2, 0, 0))
	same.Version = 1 // same version, different content
	skip := f.root.Next(testNow.AddDate(1, 0, 0))
	skip.Version = 3
	zeroth := f.root.Next(testNow.AddDate(1, 0, 0))
	tests := []struct {
		name    string
		raw     []byte
		wantErr error
		check   string
	}{
		{name: "same bytes again", raw: f.rootJSON},
		{name: "same version, other content", raw: mustSign(t, same, all...), wantErr: ErrRollback, check: "version"},
		{name: "skips a version", raw: mustSign(t, skip, all...), wantErr: ErrVersionGap, check: "version"},
		{name: "next version", raw: mustSign(t, zeroth, all...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := f.verifier()
			_, err := v.UpdateRoot(tt.raw)
			wantErr(t, err, tt.wantErr, tt.check)
		})
	}
	// A replay of version 1 once version 2 is trusted.
	v := f.verifier()
	_, err := v.UpdateRoot(mustSign(t, zeroth, all...))
	wantErr(t, err, nil, "")
	_, err = v.UpdateRoot(f.rootJSON)
	wantErr(t, err, ErrRollback, "version")
}

func TestRotateRootMissingSignatures(t *testing.T) {
	f := newFixture(t)
	r2, root2, _ := rotation(t, f.root, "v2")
	tests := []struct {
		name    string
		signers []Signer
		wantErr error
		check   string
	}{
		{name: "old and new", signers: signers(f.rootKeys[0], f.rootKeys[1], root2[0], root2[1])},
		{name: "new keys only", signers: signers(root2...), wantErr: ErrUnknownKey, check: "signatures-old-root"},
		{name: "one old key", signers: signers(f.rootKeys[0], root2[0], root2[1]), wantErr: ErrThreshold, check: "signatures-old-root"},
		{name: "old keys only", signers: signers(f.rootKeys...), wantErr: ErrUnknownKey, check: "signatures-new-root"},
		{name: "one new key", signers: signers(f.rootKeys[0], f.rootKeys[1], root2[2]), wantErr: ErrThreshold, check: "signatures-new-root"},
		{name: "old keys and release key", signers: signers(f.rootKeys[0], f.rootKeys[1], f.releaseKeys[0]), wantErr: ErrUnknownKey, check: "signatures-new-root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.verifier().UpdateRoot(mustSign(t, r2, tt.signers...))
			wantErr(t, err, tt.wantErr, tt.check)
		})
	}
}

func TestRotateRootTampered(t *testing.T) {
	f := newFixture(t)
	r2, root2, _ := rotation(t, f.root, "v2")
	raw := mustSign(t, r2, f.rootKeys[0], f.rootKeys[1], root2[0], root2[1])
	tampered := editSigned(t, raw, func(s map[string]any) { s["expires"] = "2099-01-01T00:00:00Z" })
	_, err := f.verifier().UpdateRoot(tampered)
	wantErr(t, err, ErrBadSignature, "signatures-old-root")
}

func TestRotateExpiredRootAway(t *testing.T) {
	f := newFixture(t)
	later := testNow.AddDate(1, 1, 0) // a month after root 1 expired
	v := f.verifier(func(c *Config) { c.Now = func() time.Time { return later } })
	asg := f.assignment(1)
	asg.Issued, asg.Expires = later.Add(-time.Minute), later.Add(time.Hour)
	raw := f.signedAssignment(asg)
	_, err := v.VerifyAssignment(raw)
	wantErr(t, err, ErrExpired, "root-expiry")

	r2 := f.root.Next(later.AddDate(1, 0, 0))
	_, err = v.UpdateRoot(mustSign(t, r2, signers(f.rootKeys...)...))
	wantErr(t, err, nil, "")
	_, err = v.VerifyAssignment(raw)
	wantErr(t, err, nil, "")
}

func TestRotateToExpiredRoot(t *testing.T) {
	f := newFixture(t)
	r2 := f.root.Next(testNow.Add(-time.Hour))
	_, err := f.verifier().UpdateRoot(mustSign(t, r2, signers(f.rootKeys...)...))
	wantErr(t, err, ErrExpired, "expiry")
}

func TestRotateRootStalesVerifiedAssignment(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	va, err := v.VerifyAssignment(f.signedAssignment(f.assignment(1)))
	wantErr(t, err, nil, "")
	// The rotation revokes the director key the assignment was signed with.
	r2 := f.root.Next(testNow.AddDate(1, 0, 0))
	if err := r2.SetRole(RoleDirector, mustRole(t, r2, 1, mustKeys(t, "director-v2", 1))); err != nil {
		t.Fatal(err)
	}
	_, err = v.UpdateRoot(mustSign(t, r2, signers(f.rootKeys...)...))
	wantErr(t, err, nil, "")
	wantErr(t, v.Accept(va), ErrStale, "accept")
}

func TestNewVerifier(t *testing.T) {
	f := newFixture(t)
	notSelfSigned := mustSign(t, f.root, f.rootKeys[0]) // threshold is 2
	tests := []struct {
		name    string
		root    []byte
		cfg     func(*Config)
		wantErr error
	}{
		{name: "valid", root: f.rootJSON},
		{name: "below its own threshold", root: notSelfSigned, wantErr: ErrThreshold},
		{name: "a manifest", root: f.signedManifest(f.manifest("a", "1.0.0")), wantErr: ErrWrongRole},
		{name: "empty", root: nil, wantErr: ErrMalformed},
		{name: "too large", root: f.rootJSON, cfg: func(c *Config) { c.MaxDocumentBytes = 100 }, wantErr: ErrDocTooLarge},
		{name: "bad device id", root: f.rootJSON, cfg: func(c *Config) { c.DeviceID = "a/b" }, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			_, err := NewVerifier(tt.root, cfg)
			wantErr(t, err, tt.wantErr, "")
		})
	}
}

func TestClockSkew(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		expires time.Duration // relative to now
		skew    time.Duration
		wantErr error
	}{
		{name: "valid", expires: time.Hour, skew: DefaultClockSkew},
		{name: "expired within default tolerance", expires: -4 * time.Minute, skew: DefaultClockSkew},
		{name: "expired exactly at tolerance", expires: -5 * time.Minute, skew: DefaultClockSkew},
		{name: "expired beyond default tolerance", expires: -6 * time.Minute, skew: DefaultClockSkew, wantErr: ErrExpired},
		{name: "no tolerance", expires: -time.Second, skew: 0, wantErr: ErrExpired},
		{name: "no tolerance, not yet expired", expires: time.Second, skew: 0},
		{name: "wide tolerance", expires: -50 * time.Minute, skew: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := f.assignment(1)
			a.Expires = testNow.Add(tt.expires)
			a.Issued = a.Expires.Add(-2 * time.Hour)
			v := f.verifier(func(c *Config) { c.ClockSkew = tt.skew })
			_, err := v.VerifyAssignment(f.signedAssignment(a))
			wantErr(t, err, tt.wantErr, "")
		})
	}
}

func TestVerifyManifest(t *testing.T) {
	f := newFixture(t)
	raw := f.signedManifest(f.manifest("vib", "1.2.3"))
	v := f.verifier(func(c *Config) { c.Variants = nil; c.DeviceID = "" })
	vm, err := v.VerifyManifest(raw)
	wantErr(t, err, nil, "")
	if vm.Artifact != nil || vm.Manifest.Ref() != "vib@1.2.3" {
		t.Fatalf("verified manifest = %+v", vm)
	}
	if _, err := v.VerifyAssignment(f.signedAssignment(f.assignment(1))); err == nil || errors.Is(err, ErrMalformed) {
		t.Fatalf("VerifyAssignment without a device ID: err = %v", err)
	}
	_, err = f.verifier(func(c *Config) { c.Variants = nil; c.MaxArtifactBytes = 1 << 20 }).VerifyManifest(raw)
	wantErr(t, err, ErrTooLarge, "artifact-size")
}

func TestRestoreRejectsBadState(t *testing.T) {
	v := newFixture(t).verifier()
	wantErr(t, v.Restore(State{Sequence: 3, Models: map[string]string{"vib": "v1"}}), ErrMalformed, "")
	wantErr(t, v.Restore(State{Sequence: 3, Models: map[string]string{"../x": "1.0.0"}}), ErrMalformed, "")
}

func TestVerifierConcurrent(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	m := f.signedManifest(f.manifest("vib", "1.0.0"))
	raws := make([][]byte, 20)
	for i := range raws {
		raws[i] = f.signedAssignment(f.assignment(uint64(i+1), m))
	}
	var wg sync.WaitGroup
	for _, raw := range raws {
		wg.Go(func() {
			va, err := v.VerifyAssignment(raw)
			if err != nil {
				return // a newer one may have been accepted already
			}
			if err := v.Accept(va); err != nil && !errors.Is(err, ErrStale) {
				t.Error(err)
			}
			_ = v.State()
		})
	}
	wg.Wait()
	if v.State().Sequence == 0 {
		t.Fatal("nothing accepted")
	}
}
