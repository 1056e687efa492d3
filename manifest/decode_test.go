package manifest

import (
	"encoding/base64"
	"reflect"
	"testing"
)

// TestDecodeRoundTrip signs fully populated documents (encoding/json and the
// struct tags) and decodes them with the strict tree decoders: both sides
// must agree on every field.
func TestDecodeRoundTrip(t *testing.T) {
	f := newFixture(t)
	m := f.manifest("vib", "1.2.3-rc.1+b7")
	m.Runtime.InterOpThreads = 1
	m.WarmUp.Inputs[0].Data = ""
	m.Inputs = append(m.Inputs, TensorSpec{Name: "mask", ElementType: "bool", Shape: []int64{-1, 128}})
	m.WarmUp.Inputs = append(m.WarmUp.Inputs, WarmUpTensor{Name: "mask", Shape: []int64{1, 128}, Data: encodeZeros(128)})
	mraw := f.signedManifest(m)
	a := f.assignment(9, mraw, mraw)
	a.Models[0].Bindings = []Binding{{Input: "a/+/c", Output: "x/{2}"}, {Input: "b/#"}}
	a.Models[0].MaxErrorRatePPM = 1234
	a.Models[0].AllowDowngrade = true
	a.Models[1].Mode = ModeShadow
	a.Models[1].ShadowSamplePPM = 5
	araw := f.signedAssignment(a)

	env := mustParse(t, f.rootJSON)
	root, err := decodeRoot(env.signed)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(root, f.root) {
		t.Errorf("root:\n got %+v\nwant %+v", root, f.root)
	}
	env = mustParse(t, mraw)
	gotM, err := decodeModel(env.signed, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotM, m) {
		t.Errorf("model:\n got %+v\nwant %+v", gotM, m)
	}
	env = mustParse(t, araw)
	gotA, manifests, err := decodeAssignment(env.signed)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range manifests {
		menv, err := envelopeFromNode(n)
		if err != nil {
			t.Fatal(err)
		}
		gotA.Models[i].Manifest = menv.raw
	}
	if !reflect.DeepEqual(gotA, a) {
		t.Errorf("assignment:\n got %+v\nwant %+v", gotA, a)
	}
}

func encodeZeros(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }

func mustParse(t *testing.T, raw []byte) *Envelope {
	t.Helper()
	env, err := ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{name: "unknown member", in: `{"schema":"s","type":"assignment","device":"d","sequence":1,"issued":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z","models":[],"extra":1}`},
		{name: "string for integer", in: `{"schema":"s","type":"assignment","device":"d","sequence":"1","issued":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z"}`},
		{name: "negative sequence", in: `{"schema":"s","type":"assignment","device":"d","sequence":-1,"issued":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z"}`},
		{name: "bad time", in: `{"schema":"s","type":"assignment","device":"d","sequence":1,"issued":"yesterday","expires":"2026-01-02T00:00:00Z"}`},
		{name: "missing device", in: `{"schema":"s","type":"assignment","sequence":1,"issued":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z"}`},
		{name: "rate above uint32", in: `{"schema":"s","type":"assignment","device":"d","sequence":1,"issued":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z","models":[{"manifest":{},"mode":"active","max_error_rate_ppm":4294967296}]}`},
		{name: "null manifest", in: `{"schema":"s","type":"assignment","device":"d","sequence":1,"issued":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z","models":[{"manifest":null,"mode":"active"}]}`},
		{name: "models not array", in: `{"schema":"s","type":"assignment","device":"d","sequence":1,"issued":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z","models":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := parseJSON([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = decodeAssignment(n)
			wantErr(t, err, ErrMalformed, "")
		})
	}
}
