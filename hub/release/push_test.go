package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/onnxpb"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/testenv"
	"github.com/modelfleet/modelfleet/manifest"
)

// env is one test's world: a MinIO bucket, a SQLite store and a key
// directory with a root and one release key.
type env struct {
	s3       *testenv.ObjectStore
	reg      *sqlite.Store
	root     []byte
	release  manifest.Signer
	director manifest.Signer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	e := &env{s3: testenv.MinIO(t)}
	var err error
	e.reg, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.reg.Close() })
	dir := filepath.Join(t.TempDir(), "keys")
	res, err := keys.Init(ctx, dir, keys.DefaultInitOptions())
	if err != nil {
		t.Fatal(err)
	}
	if e.root, err = os.ReadFile(res.RootPath); err != nil {
		t.Fatal(err)
	}
	loaded, err := keys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range loaded {
		switch k.Role {
		case manifest.RoleRelease:
			e.release = k.Signer
		case manifest.RoleDirector:
			e.director = k.Signer
		}
	}
	if e.release == nil || e.director == nil {
		t.Fatalf("keys.Init made no release or director key: %v", loaded)
	}
	return e
}

func (e *env) request(name, version string, files ...ArtifactFile) PushRequest {
	return PushRequest{
		Name: name, Version: version, Bucket: e.s3.Bucket, Artifacts: files,
		Signers: []manifest.Signer{e.release},
	}
}

// verify checks a manifest envelope against the root, as a device would.
func (e *env) verify(t *testing.T, envelope []byte) (*manifest.VerifiedManifest, error) {
	t.Helper()
	v, err := manifest.NewVerifier(e.root, manifest.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return v.VerifyManifest(envelope)
}

// objects lists every object in the test bucket.
func (e *env) objects(t *testing.T) []string {
	t.Helper()
	var names []string
	for o := range e.s3.Client.ListObjects(t.Context(), e.s3.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		names = append(names, o.Key)
	}
	return names
}

func (e *env) object(t *testing.T, key string) []byte {
	t.Helper()
	o, err := e.s3.Client.GetObject(t.Context(), e.s3.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

func example(variant, file string) ArtifactFile {
	return ArtifactFile{Variant: variant, Path: filepath.Join(exampleDir, file)}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// checkPushed checks that the artifacts in the bucket are the files and
// that the manifest describes them and verifies.
func (e *env) checkPushed(t *testing.T, res *Result, files ...ArtifactFile) {
	t.Helper()
	vm, err := e.verify(t, res.Envelope)
	if err != nil {
		t.Fatalf("the pushed manifest does not verify: %v", err)
	}
	if len(vm.Manifest.Artifacts) != len(files) {
		t.Fatalf("manifest lists %d artifacts, want %d", len(vm.Manifest.Artifacts), len(files))
	}
	for i, f := range files {
		want, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		a := vm.Manifest.Artifacts[i]
		if a.Variant != f.Variant || a.Bucket() != e.s3.Bucket || a.Size != int64(len(want)) || a.SHA256 != sha(want) || a.Format != "onnx" {
			t.Errorf("artifact %d = %+v, want variant %s, %d bytes, sha256 %s", i, a, f.Variant, len(want), sha(want))
		}
		if got := e.object(t, a.Object()); !bytes.Equal(got, want) {
			t.Errorf("object %s differs from %s (%d bytes, want %d)", a.Key, f.Path, len(got), len(want))
		}
	}
	rel, err := e.reg.GetRelease(t.Context(), vm.Manifest.Name, vm.Manifest.Version)
	if err != nil {
		t.Fatalf("release not registered: %v", err)
	}
	if !bytes.Equal(rel.Manifest, res.Envelope) || !rel.Signed || len(rel.Artifacts) != len(files) {
		t.Errorf("registered release = %+v, want the pushed envelope, signed", rel)
	}
}

func TestPushExampleModels(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()

	t.Run("fixed shape", func(t *testing.T) {
		f := example("cpu", models.FileV1)
		res, err := Push(ctx, e.s3.Client, e.reg, e.request("vibration-anomaly", "1.0.0", f))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Signed {
			t.Error("Signed = false")
		}
		e.checkPushed(t, res, f)
		m := res.Manifest
		if got := m.Artifacts[0].Object(); got != "vibration-anomaly/1.0.0/cpu.onnx" {
			t.Errorf("object = %s, want the default prefix", got)
		}
		// The key is bucket/object, the bucket named once.
		if want := e.s3.Bucket + "/vibration-anomaly/1.0.0/cpu.onnx"; m.Artifacts[0].Key != want {
			t.Errorf("key = %s, want %s", m.Artifacts[0].Key, want)
		}
		want := []manifest.TensorSpec{spec("window", "float32", 1, 64)}
		if specDiff("input", m.Inputs, want) != "" || specDiff("output", m.Outputs, []manifest.TensorSpec{spec("score", "float32", 1, 1)}) != "" {
			t.Errorf("tensors = %v -> %v", m.Inputs, m.Outputs)
		}
	})

	t.Run("dynamic batch with progress", func(t *testing.T) {
		f := example("cpu", models.FileBatch)
		req := e.request("vibration-anomaly-batch", "1.0.0", f)
		req.KeyPrefix = "custom/prefix/"
		var calls int
		var last, total int64
		req.Progress = func(variant string, done, tot int64) {
			if variant != "cpu" || done < last || done > tot {
				t.Errorf("progress(%s, %d, %d) after %d", variant, done, tot, last)
			}
			calls++
			last, total = done, tot
		}
		res, err := Push(ctx, e.s3.Client, e.reg, req)
		if err != nil {
			t.Fatal(err)
		}
		e.checkPushed(t, res, f)
		if calls == 0 || last != total || total != res.Manifest.Artifacts[0].Size {
			t.Errorf("progress: %d calls, last %d of %d, file %d bytes", calls, last, total, res.Manifest.Artifacts[0].Size)
		}
		if got := res.Manifest.Artifacts[0].Object(); got != "custom/prefix/cpu.onnx" {
			t.Errorf("object = %s", got)
		}
		if in := res.Manifest.Inputs[0].Shape; in[0] != -1 {
			t.Errorf("input shape %v, want a dynamic batch", in)
		}
	})
}

// bigModel writes an ONNX file of about size bytes (one large initializer)
// so that the upload goes multipart.
func bigModel(t *testing.T, size int) string {
	t.Helper()
	w := make([]byte, size)
	for i := range w {
		w[i] = byte(i * 7)
	}
	raw := graphModel(onnxpb.Graph{
		Nodes:        []onnxpb.Node{{OpType: "Add", Inputs: []string{"x", "w"}, Outputs: []string{"y"}}},
		Initializers: []onnxpb.Tensor{{Name: "w", DataType: onnxpb.Uint8, Dims: []int64{int64(size)}, RawData: w}},
		Inputs:       []onnxpb.ValueInfo{onnxpb.TensorInfo("x", onnxpb.Uint8, onnxpb.Dims(int64(size))...)},
		Outputs:      []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Uint8, onnxpb.Dims(int64(size))...)},
	})
	path := filepath.Join(t.TempDir(), "big.onnx")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPushMultipart(t *testing.T) {
	e := newEnv(t)
	f := ArtifactFile{Variant: "cpu", Path: bigModel(t, PartSizeBytes+PartSizeBytes/2)}
	req := e.request("big", "0.1.0", f)
	var last, total int64
	req.Progress = func(_ string, done, tot int64) { last, total = done, tot }
	res, err := Push(t.Context(), e.s3.Client, e.reg, req)
	if err != nil {
		t.Fatal(err)
	}
	e.checkPushed(t, res, f)
	if last != total || total <= PartSizeBytes {
		t.Errorf("progress ended at %d of %d", last, total)
	}
	info, err := e.s3.Client.StatObject(t.Context(), e.s3.Bucket, res.Manifest.Artifacts[0].Object(), minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A multipart upload's ETag is "<md5 of part md5s>-<parts>".
	if !strings.HasSuffix(info.ETag, "-2") {
		t.Errorf("ETag %q: want a 2-part upload", info.ETag)
	}
}

func TestPushNotONNX(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	for _, tt := range []struct{ name, content string }{
		{"photo.jpg", string(jpegHeader)},
		{"empty.onnx", ""},
		{"notes.txt", "this is not a model\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			// A good cpu file beside the bad one: nothing is uploaded at all.
			_, err := Push(t.Context(), e.s3.Client, e.reg, e.request("vibration-anomaly", "1.0.0",
				example("cpu", models.FileV1), ArtifactFile{Variant: "cuda", Path: path}))
			if !errors.Is(err, ErrNotONNX) {
				t.Fatalf("Push error = %v, want ErrNotONNX", err)
			}
			t.Log(err)
			if objs := e.objects(t); len(objs) > 0 {
				t.Errorf("bucket holds %v after a refused push", objs)
			}
			if _, err := e.reg.GetRelease(t.Context(), "vibration-anomaly", "1.0.0"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetRelease = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestPushDuplicateVersion(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	v1 := example("cpu", models.FileV1)
	first, err := Push(ctx, e.s3.Client, e.reg, e.request("vibration-anomaly", "1.0.0", v1))
	if err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		req := e.request("vibration-anomaly", "1.0.0", example("cpu", models.FileV2))
		req.Force = force
		_, err := Push(ctx, e.s3.Client, e.reg, req)
		if !errors.Is(err, ErrVersionExists) {
			t.Fatalf("second push (force %v) error = %v, want ErrVersionExists", force, err)
		}
		t.Log(err)
		e.checkPushed(t, first, v1) // the first release is intact
	}
}

// racingRegistry hides the release from GetRelease, as when another push
// registers the same version between the check and PutRelease.
type racingRegistry struct{ Registry }

func (racingRegistry) GetRelease(context.Context, string, string) (store.Release, error) {
	return store.Release{}, store.ErrNotFound
}

func TestPushConflictAtRegistrationCleansUp(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	first, err := Push(ctx, e.s3.Client, e.reg, e.request("vibration-anomaly", "1.0.0", example("cpu", models.FileV1)))
	if err != nil {
		t.Fatal(err)
	}
	req := e.request("vibration-anomaly", "1.0.0", example("cpu", models.FileV2))
	req.KeyPrefix = "other/"
	_, err = Push(ctx, e.s3.Client, racingRegistry{e.reg}, req)
	if !errors.Is(err, ErrVersionExists) || !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Push error = %v, want ErrVersionExists and store.ErrConflict", err)
	}
	t.Log(err)
	if objs := e.objects(t); len(objs) != 1 || objs[0] != first.Manifest.Artifacts[0].Object() {
		t.Errorf("bucket holds %v, want only the first release's object", objs)
	}
}

func TestPushObjectExists(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// Left behind by an earlier push that died before registering.
	stale := []byte("partial upload")
	if _, err := e.s3.Client.PutObject(ctx, e.s3.Bucket, "vibration-anomaly/1.0.0/cpu.onnx", bytes.NewReader(stale), int64(len(stale)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	f := example("cpu", models.FileV1)
	_, err := Push(ctx, e.s3.Client, e.reg, e.request("vibration-anomaly", "1.0.0", f))
	if !errors.Is(err, ErrObjectExists) {
		t.Fatalf("Push error = %v, want ErrObjectExists", err)
	}
	t.Log(err)
	if got := e.object(t, "vibration-anomaly/1.0.0/cpu.onnx"); !bytes.Equal(got, stale) {
		t.Error("the existing object was overwritten without Force")
	}
	req := e.request("vibration-anomaly", "1.0.0", f)
	req.Force = true
	res, err := Push(ctx, e.s3.Client, e.reg, req)
	if err != nil {
		t.Fatalf("Push with Force: %v", err)
	}
	e.checkPushed(t, res, f)
}

func TestPushObjectStoreUnreachable(t *testing.T) {
	e := newEnv(t)
	e.s3.Stop(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Push(ctx, e.s3.Client, e.reg, e.request("vibration-anomaly", "1.0.0", example("cpu", models.FileV1)))
	if err == nil {
		t.Fatal("Push succeeded with the object store down")
	}
	t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, ErrObjectStore) || !strings.Contains(err.Error(), "object store") {
		t.Errorf("error %q does not say the object store failed (ErrObjectStore)", err)
	}
	if _, err := e.reg.GetRelease(t.Context(), "vibration-anomaly", "1.0.0"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRelease = %v, want ErrNotFound", err)
	}
}

func TestPushVariantMismatch(t *testing.T) {
	e := newEnv(t)
	_, err := Push(t.Context(), e.s3.Client, e.reg, e.request("vibration-anomaly", "1.0.0",
		example("cpu", models.FileV1), example("cuda", models.FileBatch)))
	if !errors.Is(err, ErrVariantMismatch) {
		t.Fatalf("Push error = %v, want ErrVariantMismatch", err)
	}
	t.Log(err)
	for _, want := range []string{"cpu", "cuda", `"window"`, "[1,64]", "[-1,64]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if objs := e.objects(t); len(objs) > 0 {
		t.Errorf("bucket holds %v", objs)
	}
}

func TestPushTwoVariants(t *testing.T) {
	e := newEnv(t)
	files := []ArtifactFile{example("cpu", models.FileV1), example("cuda", models.FileV2)}
	res, err := Push(t.Context(), e.s3.Client, e.reg, e.request("vibration-anomaly", "2.0.0", files...))
	if err != nil {
		t.Fatal(err)
	}
	e.checkPushed(t, res, files...)
}

func TestPushSignLater(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req := e.request("vibration-anomaly", "1.0.0", example("cpu", models.FileV1))
	req.Signers, req.SignLater = nil, true
	res, err := Push(ctx, e.s3.Client, e.reg, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signed {
		t.Error("Signed = true with SignLater")
	}
	if _, err := e.verify(t, res.Envelope); !errors.Is(err, manifest.ErrThreshold) {
		t.Errorf("unsigned manifest verifies: %v, want ErrThreshold", err)
	}
	rel, err := e.reg.GetRelease(ctx, "vibration-anomaly", "1.0.0")
	if err != nil || rel.Signed || !bytes.Equal(rel.Manifest, res.Envelope) {
		t.Fatalf("registered = %+v, %v; want the unsigned envelope", rel, err)
	}

	// The offline step: signed with the director key it still fails…
	wrong, _, err := Sign(ctx, rel.Manifest, e.director)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.verify(t, wrong); !errors.Is(err, manifest.ErrWrongRole) && !errors.Is(err, manifest.ErrThreshold) {
		t.Errorf("director-signed manifest: %v, want a role error", err)
	}
	// …with the release key it verifies and describes the same artifacts.
	signed, m, err := Sign(ctx, rel.Manifest, e.release)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := e.verify(t, signed)
	if err != nil {
		t.Fatalf("signed manifest does not verify: %v", err)
	}
	if vm.Manifest.Artifacts[0] != res.Manifest.Artifacts[0] || m.Ref() != "vibration-anomaly@1.0.0" {
		t.Errorf("signing changed the manifest: %+v", vm.Manifest.Artifacts)
	}
	if err := e.reg.SignRelease(ctx, "vibration-anomaly", "1.0.0", signed); err != nil {
		t.Fatal(err)
	}
	res.Envelope = signed
	e.checkPushed(t, res, example("cpu", models.FileV1))

	if _, _, err := Sign(ctx, rel.Manifest); !errors.Is(err, ErrInvalid) {
		t.Errorf("Sign without a key: %v, want ErrInvalid", err)
	}
	if _, _, err := Sign(ctx, []byte("not json"), e.release); !errors.Is(err, manifest.ErrMalformed) {
		t.Errorf("Sign of garbage: %v, want ErrMalformed", err)
	}
}

// failingStore passes calls to an object store but fails the nth PutObject
// after the object was stored, like a connection lost before the response.
type failingStore struct {
	ObjectStore
	mu      sync.Mutex
	puts    int
	failPut int
}

func (s *failingStore) PutObject(ctx context.Context, bucket, object string, r io.Reader, size int64, opts minio.PutObjectOptions) (minio.UploadInfo, error) {
	info, err := s.ObjectStore.PutObject(ctx, bucket, object, r, size, opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	if err == nil && s.puts == s.failPut {
		return minio.UploadInfo{}, errors.New("connection reset by peer")
	}
	return info, err
}

// failingRegistry refuses every release.
type failingRegistry struct{ Registry }

func (failingRegistry) PutRelease(context.Context, store.Release) error {
	return errors.New("database is locked")
}

func TestPushCleansUpAfterFailure(t *testing.T) {
	e := newEnv(t)
	files := []ArtifactFile{example("cpu", models.FileV1), example("cuda", models.FileV2)}

	t.Run("upload fails midway", func(t *testing.T) {
		_, err := Push(t.Context(), &failingStore{ObjectStore: e.s3.Client, failPut: 2}, e.reg, e.request("vibration-anomaly", "1.0.0", files...))
		if err == nil || !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("Push error = %v, want the upload failure", err)
		}
		t.Log(err)
		if objs := e.objects(t); len(objs) > 0 {
			t.Errorf("bucket holds %v after a failed upload", objs)
		}
	})
	t.Run("registration fails", func(t *testing.T) {
		_, err := Push(t.Context(), e.s3.Client, failingRegistry{e.reg}, e.request("vibration-anomaly", "1.0.0", files...))
		if err == nil || !strings.Contains(err.Error(), "database is locked") {
			t.Fatalf("Push error = %v, want the registry failure", err)
		}
		t.Log(err)
		if objs := e.objects(t); len(objs) > 0 {
			t.Errorf("bucket holds %v after a failed registration", objs)
		}
	})
	if _, err := e.reg.GetRelease(t.Context(), "vibration-anomaly", "1.0.0"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRelease = %v, want ErrNotFound", err)
	}
}

// untouchable fails the test on any call: bad requests must be refused
// before the object store or the registry is used.
type untouchable struct{ t *testing.T }

func (u untouchable) PutObject(context.Context, string, string, io.Reader, int64, minio.PutObjectOptions) (minio.UploadInfo, error) {
	u.t.Error("PutObject called")
	return minio.UploadInfo{}, errors.New("untouchable")
}

func (u untouchable) StatObject(context.Context, string, string, minio.StatObjectOptions) (minio.ObjectInfo, error) {
	u.t.Error("StatObject called")
	return minio.ObjectInfo{}, errors.New("untouchable")
}

func (u untouchable) RemoveObject(context.Context, string, string, minio.RemoveObjectOptions) error {
	u.t.Error("RemoveObject called")
	return errors.New("untouchable")
}

func (u untouchable) GetRelease(context.Context, string, string) (store.Release, error) {
	u.t.Error("GetRelease called")
	return store.Release{}, errors.New("untouchable")
}

func (u untouchable) PutRelease(context.Context, store.Release) error {
	u.t.Error("PutRelease called")
	return errors.New("untouchable")
}

func TestPushRefusesBadRequests(t *testing.T) {
	signer, err := manifest.GenerateEd25519Signer(nil)
	if err != nil {
		t.Fatal(err)
	}
	good := func() PushRequest {
		return PushRequest{
			Name: "vibration-anomaly", Version: "1.0.0", Bucket: "models",
			Artifacts: []ArtifactFile{example("cpu", models.FileV1)},
			Signers:   []manifest.Signer{signer},
		}
	}
	tests := []struct {
		name    string
		change  func(*PushRequest)
		wantErr error
	}{
		{"bad name", func(r *PushRequest) { r.Name = "Vibration Anomaly" }, ErrInvalid},
		{"bad version", func(r *PushRequest) { r.Version = "v1" }, ErrInvalid},
		{"no bucket", func(r *PushRequest) { r.Bucket = "" }, ErrInvalid},
		{"bad bucket", func(r *PushRequest) { r.Bucket = "B" }, ErrInvalid},
		{"no files", func(r *PushRequest) { r.Artifacts = nil }, ErrInvalid},
		{"bad variant", func(r *PushRequest) { r.Artifacts[0].Variant = "CPU" }, ErrInvalid},
		{"variant twice", func(r *PushRequest) { r.Artifacts = append(r.Artifacts, r.Artifacts[0]) }, ErrInvalid},
		{"no key", func(r *PushRequest) { r.Signers = nil }, ErrInvalid},
		{"key and sign-later", func(r *PushRequest) { r.SignLater = true }, ErrInvalid},
		{"missing file", func(r *PushRequest) { r.Artifacts[0].Path = filepath.Join(t.TempDir(), "nope.onnx") }, os.ErrNotExist},
		{"directory", func(r *PushRequest) { r.Artifacts[0].Path = t.TempDir() }, ErrInvalid},
		{"too large", func(r *PushRequest) { r.MaxArtifactBytes = 100 }, ErrInvalid},
		{"bad override", func(r *PushRequest) { r.Inputs = []manifest.TensorSpec{spec("x", "complex64", 1)} }, ErrInvalid},
		{"warm-up for no input", func(r *PushRequest) {
			r.WarmUp = &manifest.WarmUp{Inputs: []manifest.WarmUpTensor{{Name: "nope", Shape: []int64{1, 64}}}}
		}, ErrInvalid},
		{"broken file", func(r *PushRequest) { r.Artifacts[0].Path = filepath.Join(exampleDir, "README.md") }, ErrNotONNX},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := good()
			tt.change(&req)
			u := untouchable{t}
			_, err := Push(t.Context(), u, u, req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Push error = %v, want %v", err, tt.wantErr)
			}
			t.Log(err)
		})
	}
}
