package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/manifest"
)

// PartSizeBytes is the multipart upload part size (16 MiB): files larger
// than this are uploaded in parts.
const PartSizeBytes = 16 << 20

// cleanupTimeout bounds deleting uploaded objects after a failed push, which
// runs even when the push's context was cancelled.
const cleanupTimeout = 30 * time.Second

// ObjectStore is the part of an S3 client Push uses; *minio.Client
// implements it.
type ObjectStore interface {
	// PutObject uploads size bytes from r to bucket/object.
	PutObject(ctx context.Context, bucket, object string, r io.Reader, size int64, opts minio.PutObjectOptions) (minio.UploadInfo, error)
	// StatObject returns an object's metadata, or an error whose
	// minio.ToErrorResponse code is minio.NoSuchKey.
	StatObject(ctx context.Context, bucket, object string, opts minio.StatObjectOptions) (minio.ObjectInfo, error)
	// RemoveObject deletes an object.
	RemoveObject(ctx context.Context, bucket, object string, opts minio.RemoveObjectOptions) error
}

// Registry is where Push registers releases; store.Store implements it.
type Registry interface {
	// GetRelease returns a release, or an error wrapping store.ErrNotFound.
	GetRelease(ctx context.Context, name, version string) (store.Release, error)
	// PutRelease stores a new release, or returns an error wrapping
	// store.ErrConflict when the name and version exist.
	PutRelease(ctx context.Context, r store.Release) error
}

// ArtifactFile is one model file to push.
type ArtifactFile struct {
	// Variant names the hardware class the file is for: 1–32 of [a-z0-9_-],
	// e.g. "cpu" or "cuda".
	Variant string
	// Path is the ONNX file.
	Path string
}

// PushRequest describes one release to push.
type PushRequest struct {
	// Name is the model name (see manifest.ValidateName).
	Name string
	// Version is the release's semantic version.
	Version string
	// Bucket is the S3 bucket the artifacts go to.
	Bucket string
	// KeyPrefix is prepended to "<variant>.onnx" to form each object name;
	// empty means "<name>/<version>/". The manifest's artifact key is
	// "<bucket>/<object>", e.g. "models/detector/1.0.0/cpu.onnx" in the
	// bucket "models".
	KeyPrefix string
	// Artifacts lists one file per variant, at least one.
	Artifacts []ArtifactFile
	// Inputs and Outputs override the tensor specs read from the files;
	// when one is empty it is read from the files.
	Inputs, Outputs []manifest.TensorSpec
	// WarmUp is the optional warm-up input of the manifest.
	WarmUp *manifest.WarmUp
	// Runtime holds optional runtime hints for the manifest.
	Runtime *manifest.RuntimeHints
	// Signers are the release keys that sign the manifest. Required unless
	// SignLater.
	Signers []manifest.Signer
	// SignLater registers the release unsigned, for an offline signing step
	// (see the package documentation); Signers must then be empty.
	SignLater bool
	// Force overwrites objects already at the artifacts' keys (left by a
	// failed push). A registered version is refused all the same, before
	// anything is uploaded; objects overwritten this way are deleted if the
	// push then fails.
	Force bool
	// MaxArtifactBytes caps each file; 0 means
	// manifest.DefaultMaxArtifactBytes, the agents' default cap.
	MaxArtifactBytes int64
	// Progress, when set, is called as each file is uploaded with the bytes
	// sent so far and the file's size; the last call for a file has
	// done == total. Calls for one file come one after the other, not
	// necessarily from the calling goroutine.
	Progress func(variant string, done, total int64)
	// Now is the clock for the manifest's created time; nil means time.Now.
	Now func() time.Time
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
}

// Result is a pushed release.
type Result struct {
	// Manifest is the registered model manifest.
	Manifest *manifest.ModelManifest
	// Envelope is the canonical manifest envelope as registered: signed,
	// or with no signatures when Signed is false.
	Envelope []byte
	// Signed reports whether Envelope carries the release signatures.
	Signed bool
}

// artifactPlan is one file on its way into the manifest.
type artifactPlan struct {
	ArtifactFile
	object  string
	size    int64
	inputs  []manifest.TensorSpec
	outputs []manifest.TensorSpec
}

// Push publishes a release: it checks the request, reads the tensor specs
// from every file (they must agree across variants), refuses a version that
// is already registered or objects that already exist (unless Force),
// uploads each file to s3 (multipart above PartSizeBytes) while computing
// its sha256, checks the stored size, builds and validates the manifest,
// signs it (or leaves it unsigned with SignLater) and registers it in reg.
//
// Nothing is uploaded when the request or a file is bad. When an upload,
// the signing or the registration fails, the objects uploaded so far are
// deleted again, so nothing is left half-registered.
//
// Errors wrap ErrInvalid, ErrNotONNX, ErrUnsupported, ErrVariantMismatch,
// ErrVersionExists (also store.ErrConflict when the store refused it),
// ErrObjectExists, ErrUploadMismatch or ErrObjectStore (S3 unreachable or
// failing); others are I/O failures of the files or the registry, named in
// the message.
func Push(ctx context.Context, s3 ObjectStore, reg Registry, req PushRequest) (*Result, error) {
	ref := req.Name + "@" + req.Version
	res, err := push(ctx, s3, reg, &req)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	return res, nil
}

func push(ctx context.Context, s3 ObjectStore, reg Registry, req *PushRequest) (*Result, error) {
	log := req.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("model", req.Name, "version", req.Version)
	now := req.Now
	if now == nil {
		now = time.Now
	}
	plans, err := checkRequest(req)
	if err != nil {
		return nil, err
	}
	if err := inspectAll(req, plans); err != nil {
		return nil, err
	}

	// Everything local is known: build the manifest with placeholder digests
	// so that every format rule is checked before anything is uploaded.
	m := &manifest.ModelManifest{
		Schema:  manifest.SchemaV1,
		Type:    manifest.KindModel,
		Name:    req.Name,
		Version: req.Version,
		Created: now().UTC().Truncate(time.Second),
		Inputs:  req.Inputs,
		Outputs: req.Outputs,
		WarmUp:  req.WarmUp,
		Runtime: req.Runtime,
	}
	for _, p := range plans {
		m.Artifacts = append(m.Artifacts, manifest.Artifact{
			Variant: p.Variant, Key: req.Bucket + "/" + p.object,
			SHA256: strings.Repeat("0", 64), Size: p.size, Format: manifest.FormatONNX,
		})
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}

	if _, err := reg.GetRelease(ctx, req.Name, req.Version); err == nil {
		return nil, fmt.Errorf("%w: releases never change; push a new version", ErrVersionExists)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("look up the release in the registry: %w", err)
	}
	for _, p := range plans {
		if err := checkAbsent(ctx, s3, req, p); err != nil {
			return nil, err
		}
	}

	var uploaded []string
	cleanup := func(why error) error {
		if len(uploaded) == 0 {
			return why
		}
		// Deleting must happen even when ctx was what failed the push.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		var left []string
		for _, obj := range uploaded {
			if err := s3.RemoveObject(cctx, req.Bucket, obj, minio.RemoveObjectOptions{}); err != nil {
				log.Warn("release: could not delete an uploaded object after a failed push", "object", req.Bucket+"/"+obj, "err", err)
				left = append(left, req.Bucket+"/"+obj)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%w (and could not delete the uploaded objects %s; delete them by hand, or push again with Force: fleethub model push --force)", why, strings.Join(left, ", "))
		}
		log.Info("release: deleted the uploaded objects after a failed push", "objects", len(uploaded))
		return why
	}

	for i, p := range plans {
		sum, err := upload(ctx, s3, req, p, log)
		if p.object != "" && (err == nil || !errors.Is(err, errNothingStored)) {
			uploaded = append(uploaded, p.object)
		}
		if err != nil {
			return nil, cleanup(err)
		}
		m.Artifacts[i].SHA256 = sum
	}
	if err := m.Validate(); err != nil {
		return nil, cleanup(fmt.Errorf("%w: %w", ErrInvalid, err))
	}

	res := &Result{Manifest: m}
	if req.SignLater {
		res.Envelope, err = UnsignedEnvelope(m)
	} else {
		res.Envelope, err = manifest.Sign(ctx, m, req.Signers...)
		res.Signed = true
	}
	if err != nil {
		return nil, cleanup(fmt.Errorf("sign the manifest: %w", err))
	}

	rel := store.Release{
		Name: req.Name, Version: req.Version, Manifest: res.Envelope, Signed: res.Signed,
		Created: now().UTC(), Artifacts: slices.Clone(m.Artifacts),
	}
	if err := reg.PutRelease(ctx, rel); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, cleanup(fmt.Errorf("%w: registered by someone else meanwhile; push a new version: %w", ErrVersionExists, err))
		}
		return nil, cleanup(fmt.Errorf("register the release: %w", err))
	}
	log.Info("release: pushed", "artifacts", len(m.Artifacts), "signed", res.Signed)
	return res, nil
}

// checkRequest checks what needs no file and plans the objects.
func checkRequest(req *PushRequest) ([]*artifactPlan, error) {
	if err := manifest.ValidateName(req.Name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := manifest.ParseSemver(req.Version); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if req.Bucket == "" {
		return nil, fmt.Errorf("%w: no bucket given", ErrInvalid)
	}
	if len(req.Artifacts) == 0 {
		return nil, fmt.Errorf("%w: no model file given", ErrInvalid)
	}
	switch {
	case req.SignLater && len(req.Signers) > 0:
		return nil, fmt.Errorf("%w: release keys given together with sign-later; choose one", ErrInvalid)
	case !req.SignLater && len(req.Signers) == 0:
		return nil, fmt.Errorf("%w: no release key to sign the manifest with; give one, or sign later offline", ErrInvalid)
	}
	if req.MaxArtifactBytes == 0 {
		req.MaxArtifactBytes = manifest.DefaultMaxArtifactBytes
	}
	prefix := req.KeyPrefix
	if prefix == "" {
		// The bucket is the key's first segment already: no "models/" here,
		// or a bucket called models gives models/models/….
		prefix = req.Name + "/" + req.Version + "/"
	}
	seen := map[string]bool{}
	plans := make([]*artifactPlan, len(req.Artifacts))
	for i, a := range req.Artifacts {
		if !validVariant(a.Variant) {
			return nil, fmt.Errorf("%w: variant %q: want 1-32 of [a-z0-9_-] starting with a letter or digit", ErrInvalid, a.Variant)
		}
		if seen[a.Variant] {
			return nil, fmt.Errorf("%w: variant %q given twice", ErrInvalid, a.Variant)
		}
		seen[a.Variant] = true
		if a.Path == "" {
			return nil, fmt.Errorf("%w: variant %s has no file", ErrInvalid, a.Variant)
		}
		plans[i] = &artifactPlan{ArtifactFile: a, object: prefix + a.Variant + ".onnx"}
	}
	return plans, nil
}

func validVariant(v string) bool {
	if v == "" || len(v) > 32 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '-') {
			continue
		}
		return false
	}
	return true
}

// inspectAll reads every file's size and tensor specs, checks the variants
// agree, and fills in the request's specs where not given.
func inspectAll(req *PushRequest, plans []*artifactPlan) error {
	for _, p := range plans {
		fi, err := os.Stat(p.Path)
		if err != nil {
			return fmt.Errorf("variant %s: %w", p.Variant, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: variant %s: %s is not a regular file", ErrInvalid, p.Variant, p.Path)
		}
		if fi.Size() > req.MaxArtifactBytes {
			return fmt.Errorf("%w: variant %s: %s is %d bytes, above the %d-byte limit devices accept", ErrInvalid, p.Variant, p.Path, fi.Size(), req.MaxArtifactBytes)
		}
		p.size = fi.Size()
		p.inputs, p.outputs, err = InspectONNXFile(p.Path)
		if err != nil {
			return fmt.Errorf("variant %s: %w", p.Variant, err)
		}
	}
	first := plans[0]
	for _, p := range plans[1:] {
		if d := specDiff("input", first.inputs, p.inputs); d != "" {
			return fmt.Errorf("%w: variant %s and variant %s: %s", ErrVariantMismatch, first.Variant, p.Variant, d)
		}
		if d := specDiff("output", first.outputs, p.outputs); d != "" {
			return fmt.Errorf("%w: variant %s and variant %s: %s", ErrVariantMismatch, first.Variant, p.Variant, d)
		}
	}
	if len(req.Inputs) == 0 {
		req.Inputs = first.inputs
	}
	if len(req.Outputs) == 0 {
		req.Outputs = first.outputs
	}
	return nil
}

// specDiff describes the first difference between two lists of tensor
// specs, or returns "" when they are equal.
func specDiff(what string, a, b []manifest.TensorSpec) string {
	for i := range max(len(a), len(b)) {
		switch {
		case i >= len(a):
			return fmt.Sprintf("%s %d (%s) only in the second", what, i, specString(b[i]))
		case i >= len(b):
			return fmt.Sprintf("%s %d (%s) only in the first", what, i, specString(a[i]))
		case a[i].Name != b[i].Name || a[i].ElementType != b[i].ElementType || !slices.Equal(a[i].Shape, b[i].Shape):
			return fmt.Sprintf("%s %d is %s in the first, %s in the second", what, i, specString(a[i]), specString(b[i]))
		}
	}
	return ""
}

func specString(t manifest.TensorSpec) string {
	b, _ := json.Marshal(t.Shape)
	return fmt.Sprintf("%q %s %s", t.Name, t.ElementType, b)
}

// checkAbsent refuses an existing object unless Force.
func checkAbsent(ctx context.Context, s3 ObjectStore, req *PushRequest, p *artifactPlan) error {
	key := req.Bucket + "/" + p.object
	info, err := s3.StatObject(ctx, req.Bucket, p.object, minio.StatObjectOptions{})
	if err == nil {
		if req.Force {
			return nil
		}
		return fmt.Errorf("%w: %s (%d bytes, modified %s); if an earlier push failed, push again with Force (fleethub model push --force)",
			ErrObjectExists, key, info.Size, info.LastModified.UTC().Format(time.RFC3339))
	}
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return nil
	}
	return fmt.Errorf("%w: check %s: %w (is the object store reachable and the bucket there?)", ErrObjectStore, key, err)
}

// errNothingStored marks an upload failure that left no object behind.
var errNothingStored = errors.New("nothing stored")

// upload sends one file, hashing it on the way, and checks what was stored.
// It returns the lower-case hex sha256.
func upload(ctx context.Context, s3 ObjectStore, req *PushRequest, p *artifactPlan, log *slog.Logger) (string, error) {
	key := req.Bucket + "/" + p.object
	f, err := os.Open(p.Path)
	if err != nil {
		return "", fmt.Errorf("variant %s: %w: %w", p.Variant, errNothingStored, err)
	}
	defer f.Close()
	h := sha256.New()
	cr := &countingReader{r: io.LimitReader(f, p.size), total: p.size, variant: p.Variant, progress: req.Progress}
	// The object store reads the file once; the hash sees the same bytes.
	body := io.TeeReader(cr, h)
	log.Info("release: uploading", "variant", p.Variant, "object", key, "bytes", p.size)
	start := time.Now()
	info, err := s3.PutObject(ctx, req.Bucket, p.object, body, p.size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    PartSizeBytes,
	})
	if err != nil {
		return "", fmt.Errorf("%w: upload variant %s to %s: %w", ErrObjectStore, p.Variant, key, err)
	}
	if cr.done != p.size {
		return "", fmt.Errorf("%w: variant %s: read %d bytes of %s, expected %d (did the file change?)", ErrUploadMismatch, p.Variant, cr.done, p.Path, p.size)
	}
	// A file that grew while uploading: the stored object is a prefix.
	if n, _ := f.Read(make([]byte, 1)); n > 0 {
		return "", fmt.Errorf("%w: variant %s: %s grew while it was uploaded", ErrUploadMismatch, p.Variant, p.Path)
	}
	if info.Size != p.size {
		return "", fmt.Errorf("%w: variant %s: the object store reports %d bytes stored at %s, the file has %d", ErrUploadMismatch, p.Variant, info.Size, key, p.size)
	}
	st, err := s3.StatObject(ctx, req.Bucket, p.object, minio.StatObjectOptions{})
	if err != nil {
		return "", fmt.Errorf("%w: check the uploaded %s: %w", ErrObjectStore, key, err)
	}
	if st.Size != p.size {
		return "", fmt.Errorf("%w: variant %s: %s holds %d bytes, the file has %d", ErrUploadMismatch, p.Variant, key, st.Size, p.size)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	log.Info("release: uploaded", "variant", p.Variant, "object", key, "sha256", sum, "seconds", time.Since(start).Seconds())
	return sum, nil
}

// countingReader counts the bytes read and reports progress.
type countingReader struct {
	r        io.Reader
	done     int64
	total    int64
	variant  string
	progress func(variant string, done, total int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.done += int64(n)
	if c.progress != nil && (n > 0 || c.done == 0 && err == io.EOF) {
		c.progress(c.variant, c.done, c.total)
	}
	return n, err
}
