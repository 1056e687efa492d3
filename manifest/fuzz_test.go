package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// seeds returns valid, empty and corrupt documents for the fuzz targets.
func seeds(f *testing.F) [][]byte {
	f.Helper()
	fx := newFixture(f)
	m1 := fx.signedManifest(fx.manifest("vib", "1.0.0"))
	m2 := fx.signedManifest(fx.manifest("temp", "2.0.0-rc.1"))
	asg := fx.signedAssignment(fx.assignment(3, m1, m2))
	out := [][]byte{
		asg, m1, fx.rootJSON,
		nil, []byte(""), []byte("{}"), []byte("null"), []byte(`{"signed":{},"signatures":[]}`),
		asg[:len(asg)/2], // truncated
		bytes.Replace(asg, []byte(`"sequence":3`), []byte(`"sequence":3.5`), 1),
		bytes.Replace(asg, []byte(`"device"`), []byte(`"device":"x","device"`), 1),
		[]byte(`{"signed":{"a":"\ud800"},"signatures":[]}`),
		[]byte("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"),
	}
	flipped := bytes.Clone(asg)
	flipped[len(flipped)-40] ^= 0x01
	out = append(out, flipped)
	files, _ := filepath.Glob(filepath.Join("testdata", "*", "*.json"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			out = append(out, b)
		}
	}
	return out
}

func FuzzParseEnvelope(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := ParseEnvelope(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		again, err := ParseEnvelope(env.Bytes())
		if err != nil {
			t.Fatalf("re-parse of canonical envelope: %v", err)
		}
		if !bytes.Equal(again.Bytes(), env.Bytes()) || !bytes.Equal(again.Signed, env.Signed) {
			t.Fatalf("canonical envelope not stable:\n%s\n%s", env.Bytes(), again.Bytes())
		}
	})
}

// FuzzCanonicalize checks the scanner against encoding/json: whatever it
// accepts, encoding/json reads as the same value; whatever it calls invalid
// JSON, encoding/json rejects too; and canonical output is a fixed point.
func FuzzCanonicalize(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	for _, s := range []string{`"\u00e9"`, `{"b":1,"a":-0}`, `"\ud83d\ude00"`, `[1e3]`, `"\u2028<>&"`, `"\u0000\/"`, `[-1.5E+3]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Canonicalize(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			var fe *formatError
			if errors.As(err, &fe) && fe.syntax && json.Valid(data) {
				t.Fatalf("called valid JSON invalid: %v", err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("canonical output is not JSON: %q", out)
		}
		again, err := Canonicalize(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q (%v)", out, again, err)
		}
		a, errA := decodeAny(data)
		b, errB := decodeAny(out)
		if errA != nil || errB != nil {
			t.Fatalf("encoding/json rejects accepted input %q: %v %v", data, errA, errB)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("value changed:\n%#v\n%#v", a, b)
		}
	})
}

// decodeAny decodes with encoding/json, numbers kept as text and "-0"
// normalised as Canonicalize does.
func decodeAny(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data")
	}
	var norm func(v any) any
	norm = func(v any) any {
		switch x := v.(type) {
		case json.Number:
			if x == "-0" {
				return json.Number("0")
			}
		case []any:
			for i := range x {
				x[i] = norm(x[i])
			}
		case map[string]any:
			for k := range x {
				x[k] = norm(x[k])
			}
		}
		return v
	}
	return norm(v), nil
}

var sentinels = []error{
	ErrBadSignature, ErrUnknownKey, ErrThreshold, ErrWrongRole, ErrWrongDevice, ErrRollback,
	ErrVersionGap, ErrExpired, ErrNoArtifact, ErrTooLarge, ErrDocTooLarge, ErrUnknownSchema,
	ErrMalformed, ErrVersionNotNewer, ErrStale,
}

func FuzzVerifyAssignment(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	v := newFixture(f).verifier()
	f.Fuzz(func(t *testing.T, data []byte) {
		va, err := v.VerifyAssignment(data)
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Check == "" || ve.Msg == "" {
				t.Fatalf("not a complete *VerifyError: %#v", err)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if len(va.Models) != len(va.Assignment.Models) {
			t.Fatalf("%d verified models for %d entries", len(va.Models), len(va.Assignment.Models))
		}
		if v.State().Sequence != 0 {
			t.Fatal("VerifyAssignment changed the state")
		}
	})
}
