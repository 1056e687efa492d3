package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// Each TestAttack* builds the malicious document an attacker (or a broken
// hub) could send and asserts the exact refusal. docs/trust.md links here.

func TestAttackTamperedManifest(t *testing.T) {
	f := newFixture(t)
	m := f.signedManifest(f.manifest("vib", "1.0.0"))
	// Point the artifact at other bytes but keep the release signature; a
	// compromised director then wraps it in a validly signed assignment.
	tampered := editSigned(t, m, func(s map[string]any) {
		s["artifacts"].([]any)[0].(map[string]any)["sha256"] = strings.Repeat("ee", 32)
	})
	_, err := f.verifier().VerifyAssignment(f.signedAssignment(f.assignment(1, tampered)))
	wantErr(t, err, ErrBadSignature, "models[0].signatures")
}

func TestAttackTamperedAssignment(t *testing.T) {
	f := newFixture(t)
	raw := f.signedAssignment(f.assignment(1, f.signedManifest(f.manifest("vib", "1.0.0"))))
	tampered := editSigned(t, raw, func(s map[string]any) { s["expires"] = testNow.AddDate(10, 0, 0).Format(time.RFC3339) })
	_, err := f.verifier().VerifyAssignment(tampered)
	wantErr(t, err, ErrBadSignature, "signatures")
}

func TestAttackUnsignedAssignment(t *testing.T) {
	f := newFixture(t)
	raw := f.signedAssignment(f.assignment(1))
	env, err := ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	env.Signatures = nil
	_, err = f.verifier().VerifyAssignment(env.Bytes())
	wantErr(t, err, ErrThreshold, "signatures")
}

func TestAttackWrongDevice(t *testing.T) {
	f := newFixture(t)
	a := f.assignment(1, f.signedManifest(f.manifest("vib", "1.0.0")))
	a.Device = "edge-2" // a valid assignment for a sibling device
	_, err := f.verifier().VerifyAssignment(f.signedAssignment(a))
	wantErr(t, err, ErrWrongDevice, "device")
}

func TestAttackReplay(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	m := f.signedManifest(f.manifest("vib", "1.0.0"))
	old := f.signedAssignment(f.assignment(4, m))
	cur := f.signedAssignment(f.assignment(5, m))
	va, err := v.VerifyAssignment(cur)
	wantErr(t, err, nil, "")
	wantErr(t, v.Accept(va), nil, "")

	_, err = v.VerifyAssignment(cur) // the same bytes again
	wantErr(t, err, ErrRollback, "sequence")
	_, err = v.VerifyAssignment(old) // an older assignment
	wantErr(t, err, ErrRollback, "sequence")
}

func TestAttackReplayAfterRestart(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	raw := f.signedAssignment(f.assignment(7, f.signedManifest(f.manifest("vib", "1.0.0"))))
	va, err := v.VerifyAssignment(raw)
	wantErr(t, err, nil, "")
	wantErr(t, v.Accept(va), nil, "")
	persisted, err := json.Marshal(v.State())
	if err != nil {
		t.Fatal(err)
	}

	var st State
	if err := json.Unmarshal(persisted, &st); err != nil {
		t.Fatal(err)
	}
	v2, err := NewVerifier(v.RootJSON(), v.cfg)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, v2.Restore(st), nil, "")
	_, err = v2.VerifyAssignment(raw)
	wantErr(t, err, ErrRollback, "sequence")
}

func TestAttackFreeze(t *testing.T) {
	f := newFixture(t)
	a := f.assignment(1)
	a.Issued = testNow.Add(-3 * time.Hour)
	a.Expires = testNow.Add(-time.Hour) // the hub stopped refreshing it
	_, err := f.verifier().VerifyAssignment(f.signedAssignment(a))
	wantErr(t, err, ErrExpired, "expiry")
}

func TestAttackExpiredRoot(t *testing.T) {
	f := newFixture(t)
	raw := f.signedAssignment(f.assignment(1))
	v := f.verifier(func(c *Config) { c.Now = func() time.Time { return testNow.AddDate(2, 0, 0) } })
	_, err := v.VerifyAssignment(raw)
	wantErr(t, err, ErrExpired, "root-expiry")
}

func TestAttackManifestSignedByDirector(t *testing.T) {
	f := newFixture(t)
	m := mustSign(t, f.manifest("vib", "1.0.0"), f.directorKeys[0]) // the online key inventing a release
	_, err := f.verifier().VerifyAssignment(f.signedAssignment(f.assignment(1, m)))
	wantErr(t, err, ErrWrongRole, "models[0].signatures")
}

func TestAttackAssignmentSignedByRoot(t *testing.T) {
	f := newFixture(t)
	raw := mustSign(t, f.assignment(1), signers(f.rootKeys...)...)
	_, err := f.verifier().VerifyAssignment(raw)
	wantErr(t, err, ErrWrongRole, "signatures")
}

func TestAttackAssignmentSignedByRelease(t *testing.T) {
	f := newFixture(t)
	raw := mustSign(t, f.assignment(1), f.releaseKeys[0])
	_, err := f.verifier().VerifyAssignment(raw)
	wantErr(t, err, ErrWrongRole, "signatures")
}

func TestAttackTypeConfusion(t *testing.T) {
	f := newFixture(t)
	// A release-signed manifest offered where an assignment belongs.
	_, err := f.verifier().VerifyAssignment(f.signedManifest(f.manifest("vib", "1.0.0")))
	wantErr(t, err, ErrWrongRole, "schema")
	// And the root offered as an assignment.
	_, err = f.verifier().VerifyAssignment(f.rootJSON)
	wantErr(t, err, ErrWrongRole, "schema")
}

func TestAttackUnknownKey(t *testing.T) {
	f := newFixture(t)
	raw := mustSign(t, f.assignment(1), mustKey(t, "attacker"))
	_, err := f.verifier().VerifyAssignment(raw)
	wantErr(t, err, ErrUnknownKey, "signatures")
}

func TestAttackForgedKeyIDOnSignature(t *testing.T) {
	f := newFixture(t)
	// The attacker signs with their key but claims the director's key ID.
	raw := mustSign(t, f.assignment(1), mustKey(t, "attacker"))
	env, err := ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	env.Signatures[0].KeyID = f.directorKeys[0].KeyID()
	_, err = f.verifier().VerifyAssignment(env.Bytes())
	wantErr(t, err, ErrBadSignature, "signatures")
}

func TestAttackEndlessData(t *testing.T) {
	f := newFixture(t)
	m := f.manifest("vib", "1.0.0")
	m.Artifacts[1].Size = 1 << 40 // the cuda artifact claims a terabyte
	raw := f.signedAssignment(f.assignment(1, f.signedManifest(m)))
	_, err := f.verifier(func(c *Config) { c.MaxArtifactBytes = 1 << 30 }).VerifyAssignment(raw)
	wantErr(t, err, ErrTooLarge, "models[0].artifact-size")
}

func TestAttackNoArtifactForDevice(t *testing.T) {
	f := newFixture(t)
	m := f.manifest("vib", "1.0.0")
	m.Artifacts = m.Artifacts[1:] // cuda only
	raw := f.signedAssignment(f.assignment(1, f.signedManifest(m)))
	_, err := f.verifier(func(c *Config) { c.Variants = []string{"cpu"} }).VerifyAssignment(raw)
	wantErr(t, err, ErrNoArtifact, "models[0].artifact")
}

func TestAttackModelDowngrade(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	va, err := v.VerifyAssignment(f.signedAssignment(f.assignment(1, f.signedManifest(f.manifest("vib", "2.0.0")))))
	wantErr(t, err, nil, "")
	wantErr(t, v.Accept(va), nil, "")

	old := f.signedManifest(f.manifest("vib", "1.4.0")) // a validly released but older version
	_, err = v.VerifyAssignment(f.signedAssignment(f.assignment(2, old)))
	wantErr(t, err, ErrVersionNotNewer, "models[0].version")

	// The hub rolls back on purpose: allowed, and reported as a downgrade.
	a := f.assignment(3, old)
	a.Models[0].AllowDowngrade = true
	va, err = v.VerifyAssignment(f.signedAssignment(a))
	wantErr(t, err, nil, "")
	if !va.Models[0].Downgrade {
		t.Fatal("Downgrade = false for an allowed rollback")
	}
	wantErr(t, v.Accept(va), nil, "")
	if got := v.State().Models["vib"]; got != "1.4.0" {
		t.Fatalf("accepted version = %q, want 1.4.0", got)
	}
}

func TestAttackOversizedDocument(t *testing.T) {
	f := newFixture(t)
	raw := append(f.signedAssignment(f.assignment(1)), bytes.Repeat([]byte(" "), 2<<20)...)
	_, err := f.verifier().VerifyAssignment(raw)
	wantErr(t, err, ErrDocTooLarge, "size")
}

func TestAttackUnknownSchema(t *testing.T) {
	f := newFixture(t)
	raw := editSigned(t, f.signedAssignment(f.assignment(1)), func(s map[string]any) { s["schema"] = "modelfleet.dev/v2" })
	raw = resign(t, raw, f.directorKeys[0])
	_, err := f.verifier().VerifyAssignment(raw)
	wantErr(t, err, ErrUnknownSchema, "schema")
}

func TestAttackUnknownField(t *testing.T) {
	f := newFixture(t)
	// A field this agent does not understand must not be silently ignored.
	raw := editSigned(t, f.signedAssignment(f.assignment(1)), func(s map[string]any) { s["run_as_root"] = true })
	raw = resign(t, raw, f.directorKeys[0])
	_, err := f.verifier().VerifyAssignment(raw)
	wantErr(t, err, ErrMalformed, "structure")
}

func TestAttackCaseFoldedField(t *testing.T) {
	f := newFixture(t)
	// encoding/json would read "DEVICE" as "device"; signed documents refuse
	// member names outside [a-z0-9_].
	env, err := ParseEnvelope(f.signedAssignment(f.assignment(1)))
	if err != nil {
		t.Fatal(err)
	}
	signed := bytes.Replace(env.Signed, []byte(`"device":`), []byte(`"DEVICE":`), 1)
	raw := rawEnvelope(t, signed, f.directorKeys[0])
	_, err = f.verifier().VerifyAssignment(raw)
	wantErr(t, err, ErrMalformed, "parse")
}

func TestAttackDuplicateJSONKey(t *testing.T) {
	f := newFixture(t)
	raw := f.signedAssignment(f.assignment(1))
	// Two "device" members: parsers disagree on which one wins.
	dup := bytes.Replace(raw, []byte(`"device":"edge-1"`), []byte(`"device":"edge-1","device":"edge-2"`), 1)
	if bytes.Equal(dup, raw) {
		t.Fatal("test did not change the document")
	}
	_, err := f.verifier().VerifyAssignment(dup)
	wantErr(t, err, ErrMalformed, "parse")
}

func TestAttackDuplicateSignatureThreshold(t *testing.T) {
	f := newFixtureT(t, thresholds{root: 1, rootN: 1, release: 2, releaseN: 3, director: 1, directorN: 1})
	m := f.manifest("vib", "1.0.0")
	one := mustSign(t, m, f.releaseKeys[0])
	env, err := ParseEnvelope(one)
	if err != nil {
		t.Fatal(err)
	}
	env.Signatures = append(env.Signatures, env.Signatures[0]) // same key twice
	_, err = f.verifier().VerifyAssignment(f.signedAssignment(f.assignment(1, env.Bytes())))
	wantErr(t, err, ErrThreshold, "models[0].signatures")
}

func TestAttackStaleAccept(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	a5 := f.signedAssignment(f.assignment(5))
	a6 := f.signedAssignment(f.assignment(6))
	va5, err := v.VerifyAssignment(a5)
	wantErr(t, err, nil, "")
	va6, err := v.VerifyAssignment(a6)
	wantErr(t, err, nil, "")
	wantErr(t, v.Accept(va6), nil, "")
	// Accepting the older result now would move the sequence backwards.
	wantErr(t, v.Accept(va5), ErrStale, "accept")
	if got := v.State().Sequence; got != 6 {
		t.Fatalf("sequence = %d, want 6", got)
	}
	// A result from another verifier is refused too.
	other := f.verifier()
	va7, err := other.VerifyAssignment(f.signedAssignment(f.assignment(7)))
	wantErr(t, err, nil, "")
	wantErr(t, v.Accept(va7), ErrStale, "accept")
}

func TestAttackFloatInSignedData(t *testing.T) {
	f := newFixture(t)
	raw := f.signedAssignment(f.assignment(1))
	float := bytes.Replace(raw, []byte(`"sequence":1`), []byte(`"sequence":1.0`), 1)
	_, err := f.verifier().VerifyAssignment(float)
	wantErr(t, err, ErrMalformed, "parse")
}

func TestVerifyAssignmentSuccess(t *testing.T) {
	f := newFixture(t)
	m1 := f.signedManifest(f.manifest("vib", "1.0.0"))
	m2 := f.signedManifest(f.manifest("vib", "1.1.0-rc.1"))
	cpuOnly := f.manifest("temp", "0.3.0")
	cpuOnly.Artifacts = cpuOnly.Artifacts[:1]
	m3 := f.signedManifest(cpuOnly)
	a := f.assignment(3, m1, m2, m3)
	a.Models[0].Bindings = []Binding{{Input: "factory/line1/vibration/+", Output: "factory/line1/anomaly/{4}"}}
	a.Models[0].MaxErrorRatePPM = 50_000
	a.Models[1].Mode = ModeShadow
	a.Models[1].ShadowSamplePPM = 100_000
	v := f.verifier()
	va, err := v.VerifyAssignment(f.signedAssignment(a))
	wantErr(t, err, nil, "")
	if got := len(va.Models); got != 3 {
		t.Fatalf("models = %d", got)
	}
	if got := va.Models[0].Artifact.Variant; got != "cuda" {
		t.Errorf("models[0] variant = %q, want cuda (first preference)", got)
	}
	if got := va.Models[2].Artifact.Variant; got != "cpu" {
		t.Errorf("models[2] variant = %q, want cpu (fallback)", got)
	}
	if got := va.Models[1].Entry.ShadowSampleRate(); got != 0.1 {
		t.Errorf("shadow rate = %v", got)
	}
	if va.Models[0].Digest == va.Models[1].Digest || len(va.Models[0].Digest) != 64 {
		t.Errorf("digests %q %q", va.Models[0].Digest, va.Models[1].Digest)
	}
	if v.State().Sequence != 0 {
		t.Fatal("VerifyAssignment changed the state")
	}
	wantErr(t, v.Accept(va), nil, "")
	st := v.State()
	if st.Sequence != 3 || st.Models["vib"] != "1.0.0" || st.Models["temp"] != "0.3.0" {
		t.Fatalf("state after accept = %+v (shadow versions must not be recorded)", st)
	}
	if want := []string{"size", "parse", "schema", "root-expiry", "signatures", "structure", "device", "sequence", "expiry",
		"models[0].parse", "models[0].schema", "models[0].signatures"}; !equalPrefix(va.Checks, want) {
		t.Fatalf("checks = %v", va.Checks)
	}
}

func equalPrefix(got, want []string) bool {
	if len(got) < len(want) {
		return false
	}
	for i := range want {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func TestAssignmentEntries(t *testing.T) {
	f := newFixture(t)
	v1 := f.signedManifest(f.manifest("vib", "1.0.0"))
	v2 := f.signedManifest(f.manifest("vib", "2.0.0"))
	tests := []struct {
		name    string
		edit    func(a *Assignment)
		wantErr error
		check   string
	}{
		{name: "active and shadow", edit: func(a *Assignment) { a.Models[1].Mode = ModeShadow }},
		{name: "two active", edit: func(*Assignment) {}, wantErr: ErrMalformed, check: "entries"},
		{name: "shadow alone", edit: func(a *Assignment) {
			a.Models = a.Models[1:]
			a.Models[0].Mode = ModeShadow
		}, wantErr: ErrMalformed, check: "entries"},
		{name: "bad mode", edit: func(a *Assignment) { a.Models[0].Mode = "canary" }, wantErr: ErrMalformed, check: "structure"},
		{name: "rate above 100%", edit: func(a *Assignment) { a.Models[0].MaxErrorRatePPM = PPM + 1 }, wantErr: ErrMalformed, check: "structure"},
		{name: "bad binding", edit: func(a *Assignment) { a.Models[0].Bindings = []Binding{{Input: "a/#/b"}} }, wantErr: ErrMalformed, check: "structure"},
		{name: "shadow with bindings", edit: func(a *Assignment) {
			a.Models[1].Mode = ModeShadow
			a.Models[1].Bindings = []Binding{{Input: "a/b"}}
		}, wantErr: ErrMalformed, check: "structure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := f.assignment(1, v1, v2)
			tt.edit(a)
			raw, err := signAnyway(a, f.directorKeys[0])
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.verifier().VerifyAssignment(raw)
			wantErr(t, err, tt.wantErr, tt.check)
		})
	}
}

// signAnyway signs a document without validating it, as a buggy or
// malicious signer would.
func signAnyway(doc Document, s Signer) ([]byte, error) {
	doc.setHeader()
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	n, err := parseJSON(b)
	if err != nil {
		return nil, err
	}
	env := &Envelope{Signed: n.canonical(), signed: n}
	if err := env.addSignatures(context.Background(), []Signer{s}); err != nil {
		return nil, err
	}
	return env.Bytes(), nil
}

func TestVerifyErrorMessage(t *testing.T) {
	f := newFixture(t)
	a := f.assignment(1)
	a.Device = "edge-2"
	_, err := f.verifier().VerifyAssignment(f.signedAssignment(a))
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("%v is not a *VerifyError", err)
	}
	if ve.Kind != KindAssignment || ve.Name != "device edge-2 sequence 1" || ve.Check != "device" {
		t.Fatalf("VerifyError = %+v", ve)
	}
	want := `assignment device edge-2 sequence 1: device check failed: assignment for another device: addressed to device "edge-2", this is "edge-1"`
	if err.Error() != want {
		t.Fatalf("message = %q\nwant      %q", err.Error(), want)
	}
}
