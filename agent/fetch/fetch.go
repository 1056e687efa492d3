// Package fetch downloads model artifacts from S3-compatible storage into a
// content-addressed blob store, verifying them on the way.
//
// A download streams into <digest>.part while hashing, never writes more than
// the declared size, and resumes after an interruption (network error, S3
// outage, agent killed) with HTTP Range requests: the bytes already on disk
// are re-hashed first, and an ETag check makes sure the resumed bytes come
// from the same object. Large objects are fetched as parallel ranges. Only a
// file whose size and sha256 match the signed manifest is fsynced and
// renamed to its final name; the caller never sees unverified bytes.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelfleet/modelfleet/internal/atomicfile"
)

// Errors that callers branch on. They are wrapped with the artifact's key.
var (
	// ErrDigestMismatch: the downloaded bytes do not have the signed sha256;
	// the object in storage is not the one the release key approved.
	ErrDigestMismatch = errors.New("sha256 does not match the signed manifest")
	// ErrSizeMismatch: the object in storage is larger or smaller than the
	// signed manifest declares.
	ErrSizeMismatch = errors.New("object size does not match the signed manifest")
	// ErrNotFound: the bucket or object does not exist, or access is denied.
	ErrNotFound = errors.New("object not found or not readable")
	// ErrBadArtifact: the artifact description itself is unusable.
	ErrBadArtifact = errors.New("invalid artifact description")
)

// Artifact is what to download, as declared by a verified manifest.
type Artifact struct {
	Bucket string
	Object string
	// SHA256 is the lower-case hex digest of the content.
	SHA256 string
	// Size is the exact size in bytes.
	Size int64
}

func (a Artifact) String() string { return a.Bucket + "/" + a.Object }

// Config tunes downloads. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// PartSizeBytes is the size of one range in a parallel download.
	PartSizeBytes int64 `yaml:"part_size_bytes" json:"part_size_bytes"`
	// Concurrency is the number of parallel ranges; 1 disables parallelism.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
	// ParallelMinBytes is the smallest object downloaded in parallel ranges.
	ParallelMinBytes int64 `yaml:"parallel_min_bytes" json:"parallel_min_bytes"`
	// MaxAttempts bounds consecutive failed attempts without progress before
	// a download gives up; attempts that made progress do not count.
	MaxAttempts int `yaml:"max_attempts" json:"max_attempts"`
	// RetryBaseMillis and RetryMaxMillis bound the jittered exponential
	// backoff between attempts.
	RetryBaseMillis int `yaml:"retry_base_millis" json:"retry_base_millis"`
	RetryMaxMillis  int `yaml:"retry_max_millis" json:"retry_max_millis"`
}

// DefaultConfig returns the defaults: 16 MiB parts, 4 streams for objects of
// 64 MiB and more, 10 attempts, backoff from 200 ms to 30 s.
func DefaultConfig() Config {
	return Config{
		PartSizeBytes:    16 << 20,
		Concurrency:      4,
		ParallelMinBytes: 64 << 20,
		MaxAttempts:      10,
		RetryBaseMillis:  200,
		RetryMaxMillis:   30_000,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.PartSizeBytes <= 0 {
		c.PartSizeBytes = d.PartSizeBytes
	}
	if c.Concurrency <= 0 {
		c.Concurrency = d.Concurrency
	}
	if c.ParallelMinBytes <= 0 {
		c.ParallelMinBytes = d.ParallelMinBytes
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.RetryBaseMillis <= 0 {
		c.RetryBaseMillis = d.RetryBaseMillis
	}
	if c.RetryMaxMillis <= 0 {
		c.RetryMaxMillis = d.RetryMaxMillis
	}
	return c
}

// Progress receives the bytes present in the partial file and the total.
// It is called from download goroutines and must be cheap.
type Progress func(done, total int64)

// Result describes a completed fetch.
type Result struct {
	// Path of the verified blob.
	Path string
	// Downloaded counts the bytes transferred by this call (0 for a blob
	// already in the store); with resumption it is less than Size.
	Downloaded int64
	// Resumed is true when bytes from an earlier attempt were reused.
	Resumed bool
}

// Fetcher downloads artifacts into a Store. It is safe for concurrent use;
// concurrent fetches of the same digest are serialised so the blob is
// downloaded once.
type Fetcher struct {
	s3    *minio.Client
	store *Store
	cfg   Config
	log   *slog.Logger

	mu    sync.Mutex // guards all following fields
	locks map[string]*sync.Mutex
}

// New returns a Fetcher. log may be nil.
func New(s3 *minio.Client, store *Store, cfg Config, log *slog.Logger) *Fetcher {
	if log == nil {
		log = slog.Default()
	}
	return &Fetcher{s3: s3, store: store, cfg: cfg.withDefaults(), log: log.With("component", "fetch"), locks: map[string]*sync.Mutex{}}
}

func (f *Fetcher) lock(digest string) func() {
	f.mu.Lock()
	l, ok := f.locks[digest]
	if !ok {
		l = &sync.Mutex{}
		f.locks[digest] = l
	}
	f.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// partMeta is the resume record stored next to a partial download.
type partMeta struct {
	ETag string `json:"etag"`
	Size int64  `json:"size"`
	// Parts marks completed ranges of a parallel download; nil for a
	// sequential download, whose progress is the file length.
	Parts []bool `json:"parts,omitempty"`
}

// Fetch makes the artifact's verified blob present in the store and returns
// its path. Errors wrap ErrDigestMismatch, ErrSizeMismatch, ErrNotFound or
// ErrBadArtifact when the artifact itself is wrong (retrying cannot help),
// or the last transport error / ctx.Err() otherwise.
func (f *Fetcher) Fetch(ctx context.Context, a Artifact, progress Progress) (Result, error) {
	if !ValidDigest(a.SHA256) || a.Size < 0 || a.Bucket == "" || a.Object == "" {
		return Result{}, fmt.Errorf("fetch %s: %w: need bucket, object, size >= 0 and a lower-case hex sha256", a, ErrBadArtifact)
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	unlock := f.lock(a.SHA256)
	defer unlock()
	if f.store.Has(a.SHA256) {
		progress(a.Size, a.Size)
		return Result{Path: f.store.Path(a.SHA256)}, nil
	}
	d := &download{f: f, a: a, progress: progress}
	if err := d.run(ctx); err != nil {
		return Result{Downloaded: d.downloaded.Load()}, fmt.Errorf("fetch %s: %w", a, err)
	}
	return Result{Path: f.store.Path(a.SHA256), Downloaded: d.downloaded.Load(), Resumed: d.resumed}, nil
}

type download struct {
	f          *Fetcher
	a          Artifact
	progress   Progress
	downloaded atomic.Int64
	resumed    bool
}

// permanent marks errors that retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

func (d *download) run(ctx context.Context) error {
	f, a := d.f, d.a
	var lastErr error
	failures := 0
	restartedFresh := false
	for {
		before := d.downloaded.Load()
		err := d.attempt(ctx)
		if err == nil {
			return nil
		}
		var perm permanent
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrDigestMismatch):
			d.discardPart()
			if d.resumed && !restartedFresh {
				// The resumed bytes may have been damaged (e.g. power loss
				// before they reached the disk): start over once from zero.
				f.log.Warn("digest mismatch after resume; downloading again from the start", "artifact", a.String())
				d.resumed = false
				restartedFresh = true
				continue
			}
			return err
		case errors.As(err, &perm):
			d.discardPart()
			return perm.err
		}
		lastErr = err
		if d.downloaded.Load() > before {
			failures = 0 // progress was made; keep going
		}
		failures++
		if failures >= f.cfg.MaxAttempts {
			return fmt.Errorf("giving up after %d attempts without progress: %w", failures, lastErr)
		}
		delay := backoff(failures, f.cfg)
		f.log.Warn("download interrupted; retrying", "artifact", a.String(), "attempt", failures, "retry_in", delay.String(), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// backoff is full-jitter exponential backoff: uniform in [base, min(max, base·2^n)].
func backoff(n int, cfg Config) time.Duration {
	base := time.Duration(cfg.RetryBaseMillis) * time.Millisecond
	limit := time.Duration(cfg.RetryMaxMillis) * time.Millisecond
	ceil := base << min(n, 20)
	if ceil > limit || ceil <= 0 {
		ceil = limit
	}
	if ceil <= base {
		return base
	}
	return base + rand.N(ceil-base)
}

func (d *download) discardPart() {
	os.Remove(d.f.store.partPath(d.a.SHA256))
	os.Remove(d.f.store.metaPath(d.a.SHA256))
}

func (d *download) loadMeta() (partMeta, bool) {
	var m partMeta
	b, err := os.ReadFile(d.f.store.metaPath(d.a.SHA256))
	if err != nil || json.Unmarshal(b, &m) != nil {
		return partMeta{}, false
	}
	return m, true
}

func (d *download) saveMeta(m partMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	// Not fsynced on purpose: a lost or stale record only costs a re-download,
	// and the final digest check catches any damage.
	tmp := d.f.store.metaPath(d.a.SHA256) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, d.f.store.metaPath(d.a.SHA256))
}

func classify(err error) error {
	if err == nil {
		return nil
	}
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return permanent{fmt.Errorf("%w: %w", ErrNotFound, err)}
	}
	return err
}

// attempt runs one try: stat, check the resume record, download what is
// missing, verify, rename.
func (d *download) attempt(ctx context.Context) error {
	f, a := d.f, d.a
	info, err := f.s3.StatObject(ctx, a.Bucket, a.Object, minio.StatObjectOptions{})
	if err != nil {
		return classify(err)
	}
	if info.Size != a.Size {
		return permanent{fmt.Errorf("%w: storage has %d bytes, manifest declares %d", ErrSizeMismatch, info.Size, a.Size)}
	}
	parallel := f.cfg.Concurrency > 1 && a.Size >= f.cfg.ParallelMinBytes
	nparts := 0
	if parallel {
		nparts = int((a.Size + f.cfg.PartSizeBytes - 1) / f.cfg.PartSizeBytes)
	}

	meta, ok := d.loadMeta()
	if !ok || meta.ETag != info.ETag || meta.Size != a.Size || (parallel != (meta.Parts != nil)) || (parallel && len(meta.Parts) != nparts) {
		// No usable record: the object changed or the mode did; start over.
		d.discardPart()
		meta = partMeta{ETag: info.ETag, Size: a.Size}
		if parallel {
			meta.Parts = make([]bool, nparts)
		}
		if err := d.saveMeta(meta); err != nil {
			return fmt.Errorf("resume record: %w", err)
		}
	}

	file, err := os.OpenFile(f.store.partPath(a.SHA256), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return permanent{err}
	}
	defer file.Close()

	var sum []byte
	if parallel {
		sum, err = d.parallel(ctx, file, &meta)
	} else {
		sum, err = d.sequential(ctx, file, info.ETag)
	}
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(sum); got != a.SHA256 {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, a.SHA256)
	}
	if err := file.Sync(); err != nil {
		return permanent{fmt.Errorf("fsync: %w", err)}
	}
	if err := file.Close(); err != nil {
		return permanent{err}
	}
	if err := os.Rename(f.store.partPath(a.SHA256), f.store.Path(a.SHA256)); err != nil {
		return permanent{err}
	}
	os.Remove(f.store.metaPath(a.SHA256))
	if err := atomicfile.SyncDir(f.store.Dir()); err != nil {
		return permanent{err}
	}
	d.progress(a.Size, a.Size)
	return nil
}

// sequential re-hashes the bytes already in file, then appends the rest of
// the object with one ranged GET, hashing while streaming.
func (d *download) sequential(ctx context.Context, file *os.File, etag string) ([]byte, error) {
	a := d.a
	h := sha256.New()
	have, err := io.Copy(h, io.LimitReader(file, a.Size+1))
	if err != nil {
		return nil, fmt.Errorf("read partial file: %w", err)
	}
	if have > a.Size {
		// More bytes than declared: the file is not a prefix of this object.
		if err := file.Truncate(0); err != nil {
			return nil, permanent{err}
		}
		if _, err := file.Seek(0, io.SeekStart); err != nil {
			return nil, permanent{err}
		}
		h.Reset()
		have = 0
	}
	if have > 0 {
		d.resumed = true
	}
	d.progress(have, a.Size)
	if have < a.Size {
		opts := minio.GetObjectOptions{}
		if err := opts.SetMatchETag(etag); err != nil {
			return nil, err
		}
		if have > 0 {
			if err := opts.SetRange(have, a.Size-1); err != nil {
				return nil, err
			}
		}
		obj, err := d.f.s3.GetObject(ctx, a.Bucket, a.Object, opts)
		if err != nil {
			return nil, classify(err)
		}
		defer obj.Close()
		w := &countingWriter{w: io.MultiWriter(file, h), n: have, total: a.Size, d: d}
		// Read at most one byte more than declared to detect an object that
		// grew: never write past the declared size.
		n, err := io.Copy(w, io.LimitReader(obj, a.Size-have+1))
		if err != nil {
			return nil, classify(err)
		}
		if have+n > a.Size {
			return nil, permanent{fmt.Errorf("%w: storage sent more than the declared %d bytes", ErrSizeMismatch, a.Size)}
		}
		if have+n < a.Size {
			return nil, fmt.Errorf("short read: %d of %d bytes", have+n, a.Size)
		}
	}
	return h.Sum(nil), nil
}

// countingWriter writes to w, refuses to go past total, and reports progress.
type countingWriter struct {
	w     io.Writer
	n     int64
	total int64
	d     *download
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.n+int64(len(p)) > c.total {
		return 0, permanent{fmt.Errorf("%w: storage sent more than the declared %d bytes", ErrSizeMismatch, c.total)}
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.d.downloaded.Add(int64(n))
	c.d.progress(c.n, c.total)
	return n, err
}

// parallel downloads the missing ranges with Concurrency workers writing at
// their offsets, records finished ranges for resumption, then hashes the
// whole file.
func (d *download) parallel(ctx context.Context, file *os.File, meta *partMeta) ([]byte, error) {
	f, a := d.f, d.a
	if err := file.Truncate(a.Size); err != nil {
		return nil, permanent{fmt.Errorf("allocate %d bytes: %w", a.Size, err)}
	}
	var done atomic.Int64
	var todo []int
	for i, ok := range meta.Parts {
		if ok {
			d.resumed = true
			done.Add(partLen(i, a.Size, f.cfg.PartSizeBytes))
		} else {
			todo = append(todo, i)
		}
	}
	d.progress(done.Load(), a.Size)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex // guards meta and firstErr
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan int)
	for range min(f.cfg.Concurrency, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				err := d.fetchPart(ctx, file, i, meta.ETag, &done)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
						cancel()
					}
				} else {
					meta.Parts[i] = true
					if err := d.saveMeta(*meta); err != nil && firstErr == nil {
						firstErr = fmt.Errorf("resume record: %w", err)
						cancel()
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, i := range todo {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(file, 0, a.Size)); err != nil {
		return nil, fmt.Errorf("hash: %w", err)
	}
	return h.Sum(nil), nil
}

func partLen(i int, size, part int64) int64 {
	start := int64(i) * part
	return min(part, size-start)
}

func (d *download) fetchPart(ctx context.Context, file *os.File, i int, etag string, done *atomic.Int64) error {
	a, part := d.a, d.f.cfg.PartSizeBytes
	start := int64(i) * part
	n := partLen(i, a.Size, part)
	opts := minio.GetObjectOptions{}
	if err := opts.SetMatchETag(etag); err != nil {
		return err
	}
	if err := opts.SetRange(start, start+n-1); err != nil {
		return err
	}
	obj, err := d.f.s3.GetObject(ctx, a.Bucket, a.Object, opts)
	if err != nil {
		return classify(err)
	}
	defer obj.Close()
	w := &offsetWriter{f: file, off: start, end: start + n, d: d, done: done}
	got, err := io.Copy(w, io.LimitReader(obj, n+1))
	if err != nil {
		return classify(err)
	}
	if got != n {
		return fmt.Errorf("range %d-%d: got %d bytes", start, start+n-1, got)
	}
	return nil
}

// offsetWriter writes sequentially into [off, end) of f and never past end.
type offsetWriter struct {
	f        *os.File
	off, end int64
	d        *download
	done     *atomic.Int64
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	if w.off+int64(len(p)) > w.end {
		return 0, permanent{fmt.Errorf("%w: storage sent more than the requested range", ErrSizeMismatch)}
	}
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	w.d.downloaded.Add(int64(n))
	w.d.progress(w.done.Add(int64(n)), w.d.a.Size)
	return n, err
}
