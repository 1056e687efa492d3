package storetest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/manifest"
)

func testReleases(t *testing.T, open opener) {
	t.Run("PutGet", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		r := store.Release{
			Name: "vibration", Version: "1.2.0", Manifest: []byte(`{"signed":{},"signatures":[{"keyid":"k","sig":"s"}]}`),
			Signed: true, Created: T0.Add(1500 * time.Microsecond),
			Artifacts: []manifest.Artifact{
				{Variant: "cpu", Key: "models/vibration/1.2.0/cpu.onnx", SHA256: "ab", Size: 1234, Format: "onnx"},
				{Variant: "cuda", Key: "models/vibration/1.2.0/cuda.onnx", SHA256: "cd", Size: 5678, Format: "onnx"},
			},
		}
		wantErr(t, "PutRelease", s.PutRelease(ctx, r), nil)
		got, err := s.GetRelease(ctx, "vibration", "1.2.0")
		wantErr(t, "GetRelease", err, nil)
		if got.Name != r.Name || got.Version != r.Version || !bytes.Equal(got.Manifest, r.Manifest) ||
			!got.Signed || !sameTime(got.Created, r.Created) || !slices.Equal(got.Artifacts, r.Artifacts) {
			t.Errorf("GetRelease = %+v, want %+v", got, r)
		}
		_, err = s.GetRelease(ctx, "vibration", "9.9.9")
		wantErr(t, "GetRelease unknown", err, store.ErrNotFound)

		r.Manifest = []byte(`{"other":true}`)
		wantErr(t, "PutRelease again", s.PutRelease(ctx, r), store.ErrConflict)
		got, _ = s.GetRelease(ctx, "vibration", "1.2.0")
		if bytes.Equal(got.Manifest, r.Manifest) {
			t.Error("a refused PutRelease replaced the manifest")
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		good := store.Release{Name: "m", Version: "1.0.0", Manifest: []byte("{}"), Created: T0}
		tests := []struct {
			name   string
			change func(*store.Release)
		}{
			{"empty name", func(r *store.Release) { r.Name = "" }},
			{"bad name", func(r *store.Release) { r.Name = "Bad/Name" }},
			{"not semver", func(r *store.Release) { r.Version = "v1" }},
			{"no manifest", func(r *store.Release) { r.Manifest = nil }},
			{"no created time", func(r *store.Release) { r.Created = time.Time{} }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := good
				tt.change(&r)
				wantErr(t, "PutRelease", s.PutRelease(ctx, r), store.ErrInvalid)
			})
		}
		if rs, err := s.ListReleases(ctx, ""); err != nil || len(rs) != 0 {
			t.Errorf("ListReleases after invalid puts = %d, %v; want none", len(rs), err)
		}
	})

	t.Run("ListInSemverOrder", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		for _, ref := range [][2]string{
			{"vibration", "1.10.0"}, {"camera", "0.1.0"}, {"vibration", "1.9.0"},
			{"vibration", "1.10.0-rc.1"}, {"vibration", "2.0.0"},
		} {
			MustPutRelease(t, s, ref[0], ref[1])
		}
		tests := []struct {
			name string
			want []string
		}{
			{"vibration", []string{"vibration@1.9.0", "vibration@1.10.0-rc.1", "vibration@1.10.0", "vibration@2.0.0"}},
			{"camera", []string{"camera@0.1.0"}},
			{"", []string{"camera@0.1.0", "vibration@1.9.0", "vibration@1.10.0-rc.1", "vibration@1.10.0", "vibration@2.0.0"}},
			{"absent", nil},
		}
		for _, tt := range tests {
			rs, err := s.ListReleases(ctx, tt.name)
			wantErr(t, "ListReleases", err, nil)
			var got []string
			for _, r := range rs {
				got = append(got, r.Ref())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ListReleases(%q) = %v, want %v", tt.name, got, tt.want)
			}
		}
	})

	t.Run("SignLater", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		MustPutRelease(t, s, "vibration", "1.0.0")
		signed := []byte(`{"signed":{"name":"vibration"},"signatures":[{"keyid":"k","sig":"s"}]}`)
		wantErr(t, "SignRelease", s.SignRelease(ctx, "vibration", "1.0.0", signed), nil)
		r, _ := s.GetRelease(ctx, "vibration", "1.0.0")
		if !r.Signed || !bytes.Equal(r.Manifest, signed) {
			t.Errorf("after SignRelease: Signed %t, manifest %s", r.Signed, r.Manifest)
		}
		wantErr(t, "SignRelease twice", s.SignRelease(ctx, "vibration", "1.0.0", []byte(`{}`)), store.ErrConflict)
		wantErr(t, "SignRelease unknown", s.SignRelease(ctx, "vibration", "3.0.0", signed), store.ErrNotFound)
		wantErr(t, "SignRelease empty", s.SignRelease(ctx, "vibration", "1.0.0", nil), store.ErrInvalid)
	})
}
