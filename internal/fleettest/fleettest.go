// Package fleettest builds what a hub would publish, for tests of the agent
// and of the hub: a trust root with its keys, signed model manifests of the
// example models uploaded to real S3, and signed assignments. It is only
// imported by tests.
package fleettest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/examples/models/onnxpb"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

// Trust is a root with one key per role.
type Trust struct {
	Root, Release, Director *manifest.Ed25519Signer
	// RootJSON is the signed root.json.
	RootJSON []byte
}

// Key returns a deterministic test key for name.
func Key(tb testing.TB, name string) *manifest.Ed25519Signer {
	tb.Helper()
	seed := sha256.Sum256([]byte("modelfleet fleettest key " + name))
	s, err := manifest.NewEd25519Signer(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// NewTrust returns a trust root, valid for a year, with thresholds of 1.
func NewTrust(tb testing.TB) *Trust {
	tb.Helper()
	t := &Trust{Root: Key(tb, "root"), Release: Key(tb, "release"), Director: Key(tb, "director")}
	r := &manifest.Root{Version: 1, Expires: time.Now().AddDate(1, 0, 0).UTC().Truncate(time.Second)}
	for _, kr := range []struct {
		role string
		key  *manifest.Ed25519Signer
	}{{"root", t.Root}, {"release", t.Release}, {"director", t.Director}} {
		id, err := r.AddKey(kr.key.PublicKey())
		if err != nil {
			tb.Fatal(err)
		}
		if err := r.SetRole(kr.role, manifest.Role{KeyIDs: []string{id}, Threshold: 1}); err != nil {
			tb.Fatal(err)
		}
	}
	t.RootJSON = Sign(tb, r, t.Root)
	return t
}

// WriteRoot writes root.json into dir and returns its path.
func (t *Trust) WriteRoot(tb testing.TB, dir string) string {
	tb.Helper()
	p := filepath.Join(dir, "root.json")
	if err := os.WriteFile(p, t.RootJSON, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Sign signs doc with the signers.
func Sign(tb testing.TB, doc manifest.Document, s ...manifest.Signer) []byte {
	tb.Helper()
	b, err := manifest.Sign(context.Background(), doc, s...)
	if err != nil {
		tb.Fatalf("sign %s: %v", doc.Kind(), err)
	}
	return b
}

// ModelBytes returns the content of an example model by file name
// (models.FileV1, …).
func ModelBytes(tb testing.TB, name string) []byte {
	tb.Helper()
	for _, f := range models.Files() {
		if f.Name == name {
			return f.Model.Marshal()
		}
	}
	tb.Fatalf("no example model %q", name)
	return nil
}

// Upload puts data into bucket/key and returns the cpu artifact for it.
func Upload(tb testing.TB, s3 *minio.Client, bucket, key string, data []byte) manifest.Artifact {
	tb.Helper()
	if _, err := s3.PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		tb.Fatalf("upload %s/%s: %v", bucket, key, err)
	}
	sum := sha256.Sum256(data)
	return manifest.Artifact{Variant: "cpu", Key: bucket + "/" + key, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Format: manifest.FormatONNX}
}

// VibrationManifest describes the example vibration model (input "window"
// float32 [1,64], output "score" float32 [1,1]) with the given artifact.
func VibrationManifest(name, version string, art manifest.Artifact) *manifest.ModelManifest {
	return &manifest.ModelManifest{
		Name:      name,
		Version:   version,
		Created:   time.Now().UTC().Truncate(time.Second),
		Artifacts: []manifest.Artifact{art},
		Inputs:    []manifest.TensorSpec{{Name: mlp.InputName, ElementType: "float32", Shape: []int64{1, mlp.InputSize}}},
		Outputs:   []manifest.TensorSpec{{Name: mlp.OutputName, ElementType: "float32", Shape: []int64{1, 1}}},
	}
}

// Publish uploads an example model and returns its signed manifest.
func (t *Trust) Publish(tb testing.TB, s3 *minio.Client, bucket, name, version, file string) []byte {
	tb.Helper()
	art := Upload(tb, s3, bucket, fmt.Sprintf("models/%s/%s/%s", name, version, file), ModelBytes(tb, file))
	return Sign(tb, VibrationManifest(name, version, art), t.Release)
}

// Assignment signs an assignment of the manifests (mode active) to device,
// valid for an hour.
func (t *Trust) Assignment(tb testing.TB, device string, seq uint64, manifests ...[]byte) []byte {
	tb.Helper()
	return Sign(tb, AssignmentDoc(device, seq, manifests...), t.Director)
}

// AssignmentDoc returns an unsigned assignment of the manifests (mode
// active) to device, valid for an hour, for tests that alter it.
func AssignmentDoc(device string, seq uint64, manifests ...[]byte) *manifest.Assignment {
	a := &manifest.Assignment{
		Device:   device,
		Sequence: seq,
		Issued:   time.Now().UTC().Truncate(time.Second),
		Expires:  time.Now().Add(time.Hour).UTC().Truncate(time.Second),
	}
	for _, m := range manifests {
		a.Models = append(a.Models, manifest.ModelAssignment{Manifest: m, Mode: manifest.ModeActive})
	}
	return a
}

// PaddedModel returns the example vibration model with the weights of seed
// and an unused constant of padBytes pseudo-random bytes: a real, loadable
// model as large as a test needs (e.g. to interrupt its download).
func PaddedModel(seed uint64, padBytes int) []byte {
	m := mlp.Model(mlp.ModelSpec{Weights: mlp.NewWeights(seed), ModelVersion: 1})
	pad := make([]byte, padBytes/4*4)
	x := seed | 1
	for i := range pad {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		pad[i] = byte(x)
	}
	m.Graph.Initializers = append(m.Graph.Initializers, onnxpb.Tensor{Name: "padding", DataType: onnxpb.Float, Dims: []int64{int64(len(pad) / 4)}, RawData: pad})
	return m.Marshal()
}

// TrustFromKeyDir creates a key directory the way `fleethub keys init`
// does (thresholds of 1) and returns its keys and root.json as a Trust.
func TrustFromKeyDir(tb testing.TB, dir string) *Trust {
	tb.Helper()
	res, err := keys.Init(context.Background(), dir, keys.DefaultInitOptions())
	if err != nil {
		tb.Fatalf("keys init: %v", err)
	}
	loaded, err := keys.LoadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	t := &Trust{}
	for _, k := range loaded {
		switch k.Role {
		case manifest.RoleRoot:
			t.Root = k.Signer
		case manifest.RoleRelease:
			t.Release = k.Signer
		case manifest.RoleDirector:
			t.Director = k.Signer
		}
	}
	if t.Root == nil || t.Release == nil || t.Director == nil {
		tb.Fatalf("key directory %s lacks a role key: %+v", dir, res.Keys)
	}
	if t.RootJSON, err = os.ReadFile(res.RootPath); err != nil {
		tb.Fatal(err)
	}
	return t
}
