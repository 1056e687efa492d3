package keys

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/manifest"
)

func TestPrivateKeyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "k.pem")
	if err := WritePrivateKey(path, priv); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", fi.Mode().Perm())
	}
	got, err := ReadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(priv) {
		t.Fatal("key changed in the round trip")
	}
	if err := WritePrivateKey(path, priv); !errors.Is(err, ErrExists) {
		t.Fatalf("overwrite: err = %v, want ErrExists", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestReadPrivateKeyRefusesReadableFile(t *testing.T) {
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(nil)
	path := filepath.Join(dir, "k.pem")
	if err := WritePrivateKey(path, priv); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mode    os.FileMode
		wantErr error
	}{
		{name: "owner only", mode: 0o600},
		{name: "owner read only", mode: 0o400},
		{name: "group readable", mode: 0o640, wantErr: ErrInsecureKeyFile},
		{name: "world readable", mode: 0o644, wantErr: ErrInsecureKeyFile},
		{name: "group writable", mode: 0o620, wantErr: ErrInsecureKeyFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := ReadPrivateKey(path)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "chmod 600 "+path) {
				t.Fatalf("message does not say how to fix it: %v", err)
			}
		})
	}
}

func TestReadPrivateKeyRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":   "",
		"not pem": "hello",
		"wrong":   "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
		"bad der": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadPrivateKey(path); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.json")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("content %q, %v", got, err)
		}
	}
	if err := CreateFileAtomic(path, []byte("three"), 0o644); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateFileAtomic over a file: %v", err)
	}
}

func verifierFor(t *testing.T, rootPath string) *manifest.Verifier {
	t.Helper()
	raw, err := os.ReadFile(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	v, err := manifest.NewVerifier(raw, manifest.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestInitAndRotate(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	opts := DefaultInitOptions()
	opts.Root = RoleSpec{Keys: 3, Threshold: 2}
	res, err := Init(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Keys) != 5 || res.Root.Version != 1 || res.Root.Roles.Root.Threshold != 2 {
		t.Fatalf("init result %+v", res)
	}
	v := verifierFor(t, res.RootPath)
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %04o", fi.Mode().Perm())
	}
	if _, err := Init(ctx, dir, opts); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v, want ErrExists", err)
	}

	// A release key signs a manifest the agent accepts.
	var releasePath string
	for _, k := range res.Keys {
		if k.Role == manifest.RoleRelease {
			releasePath = k.Path
		}
	}
	signer, err := LoadSigner(releasePath)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.ModelManifest{
		Name: "vib", Version: "1.0.0", Created: time.Now().UTC().Truncate(time.Second),
		Artifacts: []manifest.Artifact{{Variant: "cpu", Key: "models/vib.onnx", SHA256: strings.Repeat("0", 64), Size: 10, Format: "onnx"}},
		Inputs:    []manifest.TensorSpec{{Name: "x", ElementType: "float32", Shape: []int64{1}}},
		Outputs:   []manifest.TensorSpec{{Name: "y", ElementType: "float32", Shape: []int64{1}}},
	}
	signed, err := manifest.Sign(ctx, m, signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyManifest(signed); err != nil {
		t.Fatal(err)
	}

	// Rotation 1→2 replaces the release key, 2→3 the root keys.
	r2, err := Rotate(ctx, dir, RotateOptions{Replace: map[string]RoleSpec{manifest.RoleRelease: {}}, Expires: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Root.Version != 2 || len(r2.NewKeys) != 1 || len(r2.Retired) != 1 || r2.Retired[0].Role != manifest.RoleRelease {
		t.Fatalf("rotate 2: %+v", r2)
	}
	r3, err := Rotate(ctx, dir, RotateOptions{Replace: map[string]RoleSpec{manifest.RoleRoot: {Keys: 2, Threshold: 2}}, Expires: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r3.Root.Version != 3 || len(r3.Retired) != 3 {
		t.Fatalf("rotate 3: %+v", r3)
	}
	// An agent still on root 1 catches up through the archived chain.
	for _, name := range []string{"root.2.json", "root.json"} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.UpdateRoot(raw); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if got := v.Root().Version; got != 3 {
		t.Fatalf("agent root version %d", got)
	}
	// The old release key is retired: its signature no longer counts.
	if _, err := v.VerifyManifest(signed); !errors.Is(err, manifest.ErrUnknownKey) {
		t.Fatalf("manifest signed by a retired key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, RetiredDir, filepath.Base(releasePath))); err != nil {
		t.Fatalf("retired key not kept: %v", err)
	}
}

func TestRotateNeedsRootKeys(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := DefaultInitOptions()
	opts.Root = RoleSpec{Keys: 3, Threshold: 2}
	res, err := Init(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Take two of the three root keys offline.
	offline := t.TempDir()
	moved := 0
	for _, k := range res.Keys {
		if k.Role == manifest.RoleRoot && moved < 2 {
			if err := os.Rename(k.Path, filepath.Join(offline, filepath.Base(k.Path))); err != nil {
				t.Fatal(err)
			}
			moved++
		}
	}
	before, _ := os.ReadFile(res.RootPath)
	_, err = Rotate(ctx, dir, RotateOptions{Replace: map[string]RoleSpec{manifest.RoleDirector: {}}, Expires: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "copy the missing root keys back") {
		t.Fatalf("rotate without root keys: %v", err)
	}
	after, _ := os.ReadFile(res.RootPath)
	if string(before) != string(after) {
		t.Fatal("root.json changed by a failed rotation")
	}
	if _, err := Rotate(ctx, dir, RotateOptions{Replace: map[string]RoleSpec{"admin": {}}, Expires: time.Hour}); err == nil {
		t.Fatal("unknown role accepted")
	}
}

func TestRotateRefusesInsecureKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	res, err := Init(ctx, dir, DefaultInitOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(res.Keys[0].Path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Rotate(ctx, dir, RotateOptions{Expires: time.Hour})
	if !errors.Is(err, ErrInsecureKeyFile) {
		t.Fatalf("err = %v, want ErrInsecureKeyFile", err)
	}
}

func TestInitValidatesOptions(t *testing.T) {
	tests := []struct {
		name string
		edit func(*InitOptions)
	}{
		{name: "threshold above keys", edit: func(o *InitOptions) { o.Root = RoleSpec{Keys: 1, Threshold: 2} }},
		{name: "no keys", edit: func(o *InitOptions) { o.Director = RoleSpec{} }},
		{name: "no validity", edit: func(o *InitOptions) { o.Expires = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := DefaultInitOptions()
			tt.edit(&opts)
			dir := t.TempDir()
			if _, err := Init(context.Background(), dir, opts); err == nil {
				t.Fatal("accepted")
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("files left behind: %v", entries)
			}
		})
	}
}
