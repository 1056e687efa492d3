// Package fetch downloads model artifacts from S3-compatible storage into a
// content-addressed blob store, verifying them on the way.
//
// A download streams into <digest>.part, never writes more than the declared
// size, and resumes after an interruption (network error, S3 outage, agent
// killed) with HTTP Range requests: an ETag check (If-Match) makes sure the
// resumed bytes come from the same object, and the bytes already on disk are
// hashed again together with the new ones. Large objects are fetched as
// parallel ranges. A hasher follows the writers through the file in order,
// so the sha256 is known moments after the last byte, and it starts the
// disk writeback behind it, so the final fsync has little left to do. Only a
// file whose size and sha256 match the signed manifest is fsynced and
// renamed to its final name; the caller never sees unverified bytes.
package fetch

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
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
//
// Parallel ranges are for real networks, where one HTTP stream rarely fills
// the link (AWS's S3 performance guidelines recommend parallel byte-range
// GETs for this reason, and a longer round trip makes one stream slower
// still). Against MinIO on the loopback of the 2-core test box, where the
// CPU is the limit, 4 x 16 MiB was at best even with one stream and in most
// runs about 10% slower at 64 and 256 MiB: the ranges finish together, so
// the hasher, which must go in file order, still had 35-90 ms of work after
// the last byte of 256 MiB (one stream: under 15 ms). Parts of 4 or 8 MiB
// shorten that tail but cost more in requests than they save, and 2 streams
// did no better. Over a WAN, where a range takes seconds, the tail is
// negligible, so the defaults stay. From 64 MiB up a download has at least
// 4 parts to spread; below it the fixed costs (a StatObject, one GET per
// part) would weigh more.
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

// copyBufBytes is the buffer for network reads, allocated per range in
// flight. Measured on the 2-core test box, 256 KiB moved 256 MiB with about
// a third less CPU than 1 MiB (the bytes are still in the core's cache when
// written), and 32-128 KiB were no better.
const copyBufBytes = 256 << 10

// hashResult is what the ordered hasher's goroutine hands back.
type hashResult struct {
	sum []byte
	err error
}

// attempt runs one try: download what is missing while hashing it, fsync,
// verify, rename.
func (d *download) attempt(ctx context.Context) error {
	f, a := d.f, d.a
	parallel := f.cfg.Concurrency > 1 && a.Size >= f.cfg.ParallelMinBytes
	file, err := os.OpenFile(f.store.partPath(a.SHA256), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return permanent{err}
	}
	defer file.Close()

	// Hash beside the download instead of after it: the digest is ready
	// moments after the last byte lands. The hasher is stopped and waited for
	// on every path, so it never reads a closed file.
	segSize := max(a.Size, 1)
	if parallel {
		segSize = f.cfg.PartSizeBytes
	}
	h := newOrderedHasher(file, a.Size, segSize)
	h.hashed = writebackBehind(file)
	hctx, stopHash := context.WithCancel(ctx)
	defer stopHash()
	sums := make(chan hashResult, 1)
	go func() {
		sum, err := h.run(hctx)
		sums <- hashResult{sum, err}
	}()

	if parallel {
		err = d.parallel(ctx, file, h)
	} else {
		err = d.sequential(ctx, file, h)
	}
	if err != nil {
		stopHash()
		<-sums
		return err
	}
	// fsync while the hasher finishes the last bytes: both must be done
	// before the rename, but neither waits for the other.
	syncErr := file.Sync()
	res := <-sums
	if res.err != nil {
		return fmt.Errorf("hash: %w", res.err)
	}
	if got := hex.EncodeToString(res.sum); got != a.SHA256 {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, a.SHA256)
	}
	if syncErr != nil {
		return permanent{fmt.Errorf("fsync: %w", syncErr)}
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

// sequential fetches the object with one GET, appending to the bytes an
// earlier attempt left in file.
func (d *download) sequential(ctx context.Context, file *os.File, h *orderedHasher) error {
	a := d.a
	body, have, err := d.openSequential(ctx, file)
	if err != nil {
		return err
	}
	d.resumed = have > 0
	if have > 0 {
		// The kept prefix is verified like new bytes: the hasher reads it
		// back while the rest downloads.
		h.advance(0, have)
	}
	d.progress(have, a.Size)
	if body == nil {
		return nil // the partial file is complete; only verification is left
	}
	defer body.Close()
	var present atomic.Int64
	present.Store(have)
	w := segmentWriter{d: d, file: file, h: h, seg: 0, start: 0, off: have, end: a.Size, present: &present}
	return w.fill(body)
}

// openSequential decides where a sequential download starts and opens the
// GET for the rest. It needs no StatObject round trip: a fresh download
// learns size and ETag from the GET response, before writing anything, and a
// resumed one sends If-Match with the recorded ETag, so that a replaced
// object is refused (412) instead of appended to a prefix of another. It
// returns a nil body when the partial file is already complete.
func (d *download) openSequential(ctx context.Context, file *os.File) (io.ReadCloser, int64, error) {
	a, core := d.a, minio.Core{Client: d.f.s3}
	if m, ok := d.loadMeta(); ok && m.Parts == nil && m.Size == a.Size && m.ETag != "" {
		fi, err := file.Stat()
		if err != nil {
			return nil, 0, permanent{err}
		}
		// A file longer than declared is not a prefix of this object.
		if have := fi.Size(); have > 0 && have <= a.Size {
			if have == a.Size {
				return nil, have, nil
			}
			opts := minio.GetObjectOptions{}
			if err := opts.SetMatchETag(m.ETag); err != nil {
				return nil, 0, err
			}
			if err := opts.SetRange(have, a.Size-1); err != nil {
				return nil, 0, err
			}
			body, info, _, err := core.GetObject(ctx, a.Bucket, a.Object, opts)
			if err == nil {
				if info.Size >= 0 && info.Size != a.Size-have {
					body.Close()
					return nil, 0, fmt.Errorf("range %d-%d: storage announced %d bytes", have, a.Size-1, info.Size)
				}
				return body, have, nil
			}
			if minio.ToErrorResponse(err).StatusCode != http.StatusPreconditionFailed {
				return nil, 0, classify(err)
			}
			d.f.log.Info("object replaced since the partial download; starting over", "artifact", a.String())
		}
	}

	if err := file.Truncate(0); err != nil {
		return nil, 0, permanent{err}
	}
	body, info, _, err := core.GetObject(ctx, a.Bucket, a.Object, minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, classify(err)
	}
	// A missing Content-Length (-1) leaves the check to fill, which refuses
	// the first byte too many and reports a short read.
	if info.Size >= 0 && info.Size != a.Size {
		body.Close()
		return nil, 0, permanent{fmt.Errorf("%w: storage has %d bytes, manifest declares %d", ErrSizeMismatch, info.Size, a.Size)}
	}
	// Record the ETag before the first byte lands, so that whatever is
	// written can be resumed.
	if err := d.saveMeta(partMeta{ETag: info.ETag, Size: a.Size}); err != nil {
		body.Close()
		return nil, 0, fmt.Errorf("resume record: %w", err)
	}
	return body, 0, nil
}

// segmentWriter fills the segment [start, end) of the partial file front to
// back from one response body, never writing past end, and tells the hasher
// and the progress callback how far it got.
type segmentWriter struct {
	d       *download
	file    *os.File
	h       *orderedHasher
	seg     int           // the segment's index for h
	start   int64         // first byte of the segment
	off     int64         // next byte to write
	end     int64         // first byte after the segment
	present *atomic.Int64 // bytes present in the whole file
}

func (w *segmentWriter) fill(body io.Reader) error {
	// Read at most one byte more than the segment holds: enough to notice a
	// larger object without writing that byte.
	src := io.LimitReader(body, w.end-w.off+1)
	buf := make([]byte, min(copyBufBytes, w.end-w.off+1))
	for {
		n, rerr := io.ReadFull(src, buf)
		if w.off+int64(n) > w.end {
			return permanent{fmt.Errorf("%w: storage sent more than the %d bytes requested", ErrSizeMismatch, w.end-w.start)}
		}
		if n > 0 {
			if _, err := w.file.WriteAt(buf[:n], w.off); err != nil {
				return fmt.Errorf("write partial file: %w", err)
			}
			w.off += int64(n)
			w.h.advance(w.seg, w.off-w.start)
			w.d.downloaded.Add(int64(n))
			w.d.progress(w.present.Add(int64(n)), w.d.a.Size)
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			if w.off < w.end {
				return fmt.Errorf("short read: bytes %d-%d ended at %d", w.start, w.end-1, w.off)
			}
			return nil
		case rerr != nil:
			return classify(rerr)
		}
	}
}

// parallel fetches the missing ranges with Concurrency workers, each writing
// its range at its offset, and records finished ranges for resumption. All
// ranges must come from one version of the object, so the ETag they are
// pinned to is needed before the first GET: it asks StatObject.
func (d *download) parallel(ctx context.Context, file *os.File, h *orderedHasher) error {
	f, a := d.f, d.a
	info, err := f.s3.StatObject(ctx, a.Bucket, a.Object, minio.StatObjectOptions{})
	if err != nil {
		return classify(err)
	}
	if info.Size != a.Size {
		return permanent{fmt.Errorf("%w: storage has %d bytes, manifest declares %d", ErrSizeMismatch, info.Size, a.Size)}
	}
	nparts := int((a.Size + f.cfg.PartSizeBytes - 1) / f.cfg.PartSizeBytes)
	meta, ok := d.loadMeta()
	if !ok || meta.ETag != info.ETag || meta.Size != a.Size || len(meta.Parts) != nparts {
		// No usable record: the object changed or the mode did; start over.
		if err := file.Truncate(0); err != nil {
			return permanent{err}
		}
		meta = partMeta{ETag: info.ETag, Size: a.Size, Parts: make([]bool, nparts)}
		if err := d.saveMeta(meta); err != nil {
			return fmt.Errorf("resume record: %w", err)
		}
	}
	if err := file.Truncate(a.Size); err != nil {
		return permanent{fmt.Errorf("allocate %d bytes: %w", a.Size, err)}
	}
	var present atomic.Int64
	var todo []int
	d.resumed = false
	for i, ok := range meta.Parts {
		if ok {
			d.resumed = true
			n := partLen(i, a.Size, f.cfg.PartSizeBytes)
			present.Add(n)
			h.advance(i, n) // verified like new ranges
		} else {
			todo = append(todo, i)
		}
	}
	d.progress(present.Load(), a.Size)

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
				err := d.fetchPart(ctx, file, h, i, meta.ETag, &present)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
						cancel()
					}
				} else {
					meta.Parts[i] = true
					if err := d.saveMeta(meta); err != nil && firstErr == nil {
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
	return firstErr
}

func partLen(i int, size, part int64) int64 {
	start := int64(i) * part
	return min(part, size-start)
}

// fetchPart downloads range i, pinned to etag, into its place in file.
func (d *download) fetchPart(ctx context.Context, file *os.File, h *orderedHasher, i int, etag string, present *atomic.Int64) error {
	a, part := d.a, d.f.cfg.PartSizeBytes
	start := int64(i) * part
	end := start + partLen(i, a.Size, part)
	opts := minio.GetObjectOptions{}
	if err := opts.SetMatchETag(etag); err != nil {
		return err
	}
	if err := opts.SetRange(start, end-1); err != nil {
		return err
	}
	body, _, _, err := minio.Core{Client: d.f.s3}.GetObject(ctx, a.Bucket, a.Object, opts)
	if err != nil {
		return classify(err)
	}
	defer body.Close()
	w := segmentWriter{d: d, file: file, h: h, seg: i, start: start, off: start, end: end, present: present}
	return w.fill(body)
}
