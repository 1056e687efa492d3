package manifest

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"testing"
)

// BenchmarkVerifyAssignment verifies a typical assignment: three models,
// each with a release-signed manifest, so four ed25519 verifications when
// nothing is cached ("cold"). "warm" is the steady state of an agent whose
// hub refreshes the assignment (new sequence, same manifests): the release
// signatures are remembered and only the director signature is checked;
// the hub sends canonical JSON, so the remembered manifest envelopes are
// grafted in while parsing instead of being parsed again. "warm-indented"
// is the same assignment pretty-printed: the manifests are found by the
// digest of their canonical bytes after a full parse.
func BenchmarkVerifyAssignment(b *testing.B) {
	f := newFixture(b)
	a := f.assignment(1,
		f.signedManifest(f.manifest("vibration", "1.2.0")),
		f.signedManifest(f.manifest("temperature", "0.9.1")),
		f.signedManifest(f.manifest("acoustic", "3.0.0")),
	)
	a.Models[0].Bindings = []Binding{{Input: "factory/line1/vibration/+", Output: "factory/line1/anomaly/{4}"}}
	raw := f.signedAssignment(a)
	b.Logf("assignment: %d bytes", len(raw))
	// Baseline measured in the same run: one bare ed25519 verification of
	// the assignment's signed bytes, the floor of the warm case.
	b.Run("baseline-ed25519", func(b *testing.B) {
		env, err := ParseEnvelope(raw)
		if err != nil {
			b.Fatal(err)
		}
		pub := f.directorKeys[0].PrivateKey().Public().(ed25519.PublicKey)
		sig := mustDecodeSig(b, env.Signatures[0].Sig)
		for b.Loop() {
			if !ed25519.Verify(pub, env.Signed, sig) {
				b.Fatal("verify failed")
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
	})
	var indented bytes.Buffer
	if err := json.Indent(&indented, raw, "", "  "); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		raw  []byte
		cold bool
	}{{"cold", raw, true}, {"warm", raw, false}, {"warm-indented", indented.Bytes(), false}} {
		b.Run(bc.name, func(b *testing.B) {
			v := f.verifier()
			for range 2 {
				if _, err := v.VerifyAssignment(bc.raw); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if bc.cold {
					v.mu.Lock()
					v.manifests = nil
					v.mu.Unlock()
				}
				if _, err := v.VerifyAssignment(bc.raw); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
		})
	}
}

func mustDecodeSig(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
