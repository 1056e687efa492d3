package manifest

import (
	"context"
	"encoding/json"
	"testing"
)

func TestSignModelManifest(t *testing.T) {
	f := newFixtureT(t, thresholds{root: 1, rootN: 1, release: 2, releaseN: 2, director: 1, directorN: 1})
	m := f.manifest("vib", "1.0.0")
	unsigned, err := json.MarshalIndent(m, "", "  ") // no schema/type yet
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	one, got, err := SignModelManifest(ctx, unsigned, f.releaseKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref() != "vib@1.0.0" || got.Schema != SchemaV1 {
		t.Fatalf("manifest %+v", got)
	}
	v := f.verifier()
	_, err = v.VerifyManifest(one)
	wantErr(t, err, ErrThreshold, "signatures")
	two, _, err := SignModelManifest(ctx, one, f.releaseKeys[1])
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.VerifyManifest(two)
	wantErr(t, err, nil, "")

	tests := []struct {
		name string
		in   string
	}{
		{name: "unknown field", in: `{"name":"a","version":"1.0.0","colour":"red"}`},
		{name: "case-folded field", in: `{"Name":"a","version":"1.0.0"}`},
		{name: "invalid manifest", in: `{"name":"a","version":"1.0"}`},
		{name: "an assignment envelope", in: string(f.signedAssignment(f.assignment(1)))},
		{name: "float", in: `{"name":"a","version":"1.0.0","created":"2026-01-01T00:00:00Z","artifacts":[{"size":1.5}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := SignModelManifest(ctx, []byte(tt.in), f.releaseKeys[0]); err == nil {
				t.Fatal("signed")
			}
		})
	}
}
