package manifest

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func TestCanonicalize(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{name: "sorted keys, no whitespace", in: " { \"b\" : 1 ,\n\t\"a\" : [ true , false , null ] } ", want: `{"a":[true,false,null],"b":1}`},
		{name: "nested objects", in: `{"z":{"y":{"b":2,"a":1}},"a":{}}`, want: `{"a":{},"z":{"y":{"a":1,"b":2}}}`},
		{name: "escape equals literal", in: `{"k":"caf\u00e9"}`, want: `{"k":"café"}`},
		{name: "literal stays literal", in: `{"k":"café"}`, want: `{"k":"café"}`},
		{name: "escaped key", in: `{"\u0062":1,"a":2}`, want: `{"a":2,"b":1}`},
		{name: "surrogate pair", in: `"\ud83d\ude00"`, want: `"😀"`},
		{name: "html characters literal", in: `"<a&b>"`, want: `"<a&b>"`},
		{name: "line separators literal", in: `"\u2028\u2029"`, want: "\"\u2028\u2029\""},
		{name: "short escapes", in: `"\b\f\n\r\t\"\\\/"`, want: `"\b\f\n\r\t\"\\/"`},
		{name: "other controls as \\u00XX", in: `"\u0001\u001F\u007f"`, want: "\"\\u0001\\u001f\x7f\""},
		{name: "sort by UTF-8 bytes", in: `{"é":1,"z":2,"A":3,"_":4}`, want: `{"A":3,"_":4,"z":2,"é":1}`},
		{name: "negative zero", in: `-0`, want: `0`},
		{name: "max uint64", in: `18446744073709551615`, want: `18446744073709551615`},
		{name: "min int64", in: `-9223372036854775808`, want: `-9223372036854775808`},
		{name: "empty containers", in: `[{},[],""]`, want: `[{},[],""]`},
		{name: "trailing whitespace", in: "{}\n\n", want: `{}`},

		{name: "float", in: `{"a":1.5}`, wantErr: ErrMalformed},
		{name: "integral float", in: `{"a":1.0}`, wantErr: ErrMalformed},
		{name: "exponent", in: `{"a":1e3}`, wantErr: ErrMalformed},
		{name: "upper exponent", in: `[1E3]`, wantErr: ErrMalformed},
		{name: "above uint64", in: `18446744073709551616`, wantErr: ErrMalformed},
		{name: "below int64", in: `-9223372036854775809`, wantErr: ErrMalformed},
		{name: "duplicate key", in: `{"a":1,"a":2}`, wantErr: ErrMalformed},
		{name: "duplicate key after unescaping", in: `{"a":1,"\u0061":2}`, wantErr: ErrMalformed},
		{name: "duplicate nested key", in: `{"x":[{"k":1,"k":1}]}`, wantErr: ErrMalformed},
		{name: "trailing data", in: `{} {}`, wantErr: ErrMalformed},
		{name: "trailing garbage", in: `{}x`, wantErr: ErrMalformed},
		{name: "trailing comma", in: `{"a":1,}`, wantErr: ErrMalformed},
		{name: "invalid UTF-8", in: "\"\xff\"", wantErr: ErrMalformed},
		{name: "invalid UTF-8 in key", in: "{\"\xc3\":1}", wantErr: ErrMalformed},
		{name: "lone high surrogate", in: `"\ud800"`, wantErr: ErrMalformed},
		{name: "lone low surrogate", in: `"\udc00x"`, wantErr: ErrMalformed},
		{name: "reversed surrogates", in: `"\ude00\ud83d"`, wantErr: ErrMalformed},
		{name: "high surrogate then letter", in: `"\ud83dA"`, wantErr: ErrMalformed},
		{name: "lone surrogate in key", in: `{"\udbff":1}`, wantErr: ErrMalformed},
		{name: "raw control character", in: "\"a\x01\"", wantErr: ErrMalformed},
		{name: "empty", in: ``, wantErr: ErrMalformed},
		{name: "whitespace only", in: `  `, wantErr: ErrMalformed},
		{name: "truncated", in: `{"a":[1,2`, wantErr: ErrMalformed},
		{name: "leading zero", in: `01`, wantErr: ErrMalformed},
		{name: "nesting too deep", in: strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), wantErr: ErrMalformed},
		{name: "nesting huge", in: strings.Repeat(`{"a":`, 100000), wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Canonicalize(%q) error = %v, want %v (output %q)", tt.in, err, tt.wantErr, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Canonicalize(%q): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Fatalf("Canonicalize(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			again, err := Canonicalize(got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("not idempotent: %q -> %q (%v)", got, again, err)
			}
		})
	}
}

func TestCanonicalizeDepthLimitExact(t *testing.T) {
	in := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	if _, err := Canonicalize([]byte(in)); err != nil {
		t.Fatalf("depth %d refused: %v", MaxDepth, err)
	}
}

// TestCanonicalGolden pins the canonical form of a hand-written document
// (pretty-printed, unordered, with escapes) to testdata/canonical/.
func TestCanonicalGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "canonical", "manifest.input.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Canonicalize(in)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "canonical", "manifest.golden.json"), got)
}

// TestSignedGolden pins the bytes of signed documents built from the test
// keys (ed25519 signatures are deterministic). They double as examples for
// docs/trust.md and as fuzz seeds.
func TestSignedGolden(t *testing.T) {
	f := newFixture(t)
	m := f.signedManifest(f.manifest("vibration", "1.2.0"))
	a := f.assignment(42, m)
	a.Models[0].Bindings = []Binding{{Input: "factory/line1/vibration/+", Output: "factory/line1/anomaly/{4}"}}
	a.Models[0].MaxErrorRatePPM = 20000
	asg := f.signedAssignment(a)
	for name, b := range map[string][]byte{"root.json": f.rootJSON, "model.json": m, "assignment.json": asg} {
		golden(t, filepath.Join("testdata", "signed", name), b)
	}
	if _, err := f.verifier().VerifyAssignment(asg); err != nil {
		t.Fatal(err)
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the golden file\n got %s\nwant %s", path, got, want)
	}
}

func TestParseEnvelope(t *testing.T) {
	id := strings.Repeat("a", 64)
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{name: "minimal", in: `{"signed":{},"signatures":[]}`},
		{name: "one signature", in: `{"signed":{"a":1},"signatures":[{"keyid":"` + id + `","sig":"AAAA"}]}`},
		{name: "extra member", in: `{"signed":{},"signatures":[],"x":1}`, wantErr: ErrMalformed},
		{name: "no signatures member", in: `{"signed":{}}`, wantErr: ErrMalformed},
		{name: "signed not object", in: `{"signed":"x","signatures":[]}`, wantErr: ErrMalformed},
		{name: "signature extra field", in: `{"signed":{},"signatures":[{"keyid":"` + id + `","sig":"AAAA","x":1}]}`, wantErr: ErrMalformed},
		{name: "upper-case key id", in: `{"signed":{},"signatures":[{"keyid":"` + strings.Repeat("A", 64) + `","sig":"AAAA"}]}`, wantErr: ErrMalformed},
		{name: "sig not base64", in: `{"signed":{},"signatures":[{"keyid":"` + id + `","sig":"!!"}]}`, wantErr: ErrMalformed},
		{name: "sig url base64", in: `{"signed":{},"signatures":[{"keyid":"` + id + `","sig":"__8="}]}`, wantErr: ErrMalformed},
		{name: "upper-case member in signed", in: `{"signed":{"Device":"x"},"signatures":[]}`, wantErr: ErrMalformed},
		{name: "non-ASCII member in signed", in: `{"signed":{"\u212aeyid":"x"},"signatures":[]}`, wantErr: ErrMalformed},
		{name: "array", in: `[]`, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEnvelope([]byte(tt.in))
			wantErr(t, err, tt.wantErr, "")
		})
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	f := newFixture(t)
	raw := f.signedManifest(f.manifest("vib", "1.0.0"))
	env, err := ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.Bytes(), raw) {
		t.Fatalf("Bytes() is not the signed output:\n%s\n%s", env.Bytes(), raw)
	}
	if env.Schema != SchemaV1 || env.Type != KindModel {
		t.Fatalf("header %q %q", env.Schema, env.Type)
	}
	// A pretty-printed copy is the same document.
	var pretty bytes.Buffer
	pretty.WriteString("{\n  \"signed\": ")
	pretty.Write(env.Signed)
	pretty.WriteString(",\n  \"signatures\": [{\"sig\": \"" + env.Signatures[0].Sig + "\", \"keyid\": \"" + env.Signatures[0].KeyID + "\"}]\n}\n")
	if _, err := f.verifier().VerifyManifest(pretty.Bytes()); err != nil {
		t.Fatalf("pretty-printed envelope: %v", err)
	}
}
