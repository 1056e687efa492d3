package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelfleet/modelfleet/internal/testenv"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func put(t *testing.T, s3 *testenv.ObjectStore, key string, data []byte) Artifact {
	t.Helper()
	_, err := s3.Client.PutObject(context.Background(), s3.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return Artifact{Bucket: s3.Bucket, Object: key, SHA256: digest(data), Size: int64(len(data))}
}

// fastConfig retries quickly and uses parallel ranges from 1 MiB up.
func fastConfig() Config {
	return Config{PartSizeBytes: 1 << 20, Concurrency: 4, ParallelMinBytes: 4 << 20, MaxAttempts: 20, RetryBaseMillis: 20, RetryMaxMillis: 500}
}

func newFetcher(t *testing.T, s3 *testenv.ObjectStore, cfg Config) (*Fetcher, *Store) {
	t.Helper()
	store, err := NewStore(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return New(s3.Client, store, cfg, nil), store
}

func assertBlob(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("blob %s: content differs (%d bytes, want %d)", path, len(got), len(want))
	}
}

func assertNoPartials(t *testing.T, store *Store) {
	t.Helper()
	entries, _ := os.ReadDir(store.Dir())
	for _, e := range entries {
		if filepath.Ext(e.Name()) != "" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestFetch(t *testing.T) {
	s3 := testenv.MinIO(t)
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"small sequential", 100_000},
		{"parallel ranges", 9<<20 + 123},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(tt.size, uint64(i))
			a := put(t, s3, "m/"+tt.name, data)
			f, store := newFetcher(t, s3, fastConfig())
			var last atomic.Int64
			res, err := f.Fetch(context.Background(), a, func(done, total int64) {
				if total != a.Size || done > total {
					t.Errorf("progress %d/%d, want total %d", done, total, a.Size)
				}
				last.Store(done)
			})
			if err != nil {
				t.Fatal(err)
			}
			assertBlob(t, res.Path, data)
			if res.Downloaded != a.Size || res.Resumed {
				t.Errorf("Downloaded=%d Resumed=%v, want %d false", res.Downloaded, res.Resumed, a.Size)
			}
			if last.Load() != a.Size {
				t.Errorf("final progress %d, want %d", last.Load(), a.Size)
			}
			assertNoPartials(t, store)

			// Content addressing: a second fetch downloads nothing.
			res, err = f.Fetch(context.Background(), a, nil)
			if err != nil || res.Downloaded != 0 {
				t.Fatalf("second fetch: downloaded %d, err %v; want 0, nil", res.Downloaded, err)
			}
		})
	}
}

func TestFetchConcurrentSameDigestDownloadsOnce(t *testing.T) {
	s3 := testenv.MinIO(t)
	data := randomBytes(2<<20, 7)
	a := put(t, s3, "a", data)
	b := a
	b.Object = "b" // same content under another key: a second model
	put(t, s3, "b", data)
	f, _ := newFetcher(t, s3, fastConfig())
	var total atomic.Int64
	var wg sync.WaitGroup
	for _, art := range []Artifact{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := f.Fetch(context.Background(), art, nil)
			if err != nil {
				t.Error(err)
			}
			total.Add(res.Downloaded)
		}()
	}
	wg.Wait()
	if total.Load() != a.Size {
		t.Fatalf("downloaded %d bytes in total, want %d (once)", total.Load(), a.Size)
	}
}

func TestFetchRejects(t *testing.T) {
	s3 := testenv.MinIO(t)
	data := randomBytes(300_000, 3)
	good := put(t, s3, "good", data)
	tests := []struct {
		name    string
		art     func() Artifact
		wantErr error
	}{
		{"sha256 differs", func() Artifact { a := good; a.SHA256 = digest([]byte("other")); return a }, ErrDigestMismatch},
		{"object larger than declared", func() Artifact { a := good; a.Size--; return a }, ErrSizeMismatch},
		{"object smaller than declared", func() Artifact { a := good; a.Size++; return a }, ErrSizeMismatch},
		{"missing object", func() Artifact { a := good; a.Object = "nope"; return a }, ErrNotFound},
		{"missing bucket", func() Artifact { a := good; a.Bucket = "no-such-bucket"; return a }, ErrNotFound},
		{"bad digest syntax", func() Artifact { a := good; a.SHA256 = "../../etc/passwd"; return a }, ErrBadArtifact},
		{"parallel sha256 differs", func() Artifact {
			big := put(t, s3, "big", randomBytes(5<<20, 4))
			big.SHA256 = digest([]byte("x"))
			return big
		}, ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, store := newFetcher(t, s3, fastConfig())
			a := tt.art()
			_, err := f.Fetch(context.Background(), a, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Fetch() error = %v, want %v", err, tt.wantErr)
			}
			if ValidDigest(a.SHA256) && store.Has(a.SHA256) {
				t.Fatal("a rejected artifact was stored")
			}
			assertNoPartials(t, store)
		})
	}
}

// TestFetchResume starts from partial files as an interrupted download (or a
// killed agent) leaves them.
func TestFetchResume(t *testing.T) {
	s3 := testenv.MinIO(t)
	small := randomBytes(3<<20, 11)
	big := randomBytes(6<<20, 12)
	tests := []struct {
		name           string
		data           []byte
		key            string
		prepare        func(t *testing.T, store *Store, a Artifact, etag string)
		wantDownloaded int64
		wantResumed    bool
	}{
		{
			name: "sequential prefix", data: small, key: "s1",
			prepare: func(t *testing.T, store *Store, a Artifact, etag string) {
				writePart(t, store, a, small[:1<<20], partMeta{ETag: etag, Size: a.Size})
			},
			wantDownloaded: 2 << 20, wantResumed: true,
		},
		{
			name: "sequential damaged prefix starts over", data: small, key: "s2",
			prepare: func(t *testing.T, store *Store, a Artifact, etag string) {
				bad := bytes.Clone(small[:1<<20])
				bad[100] ^= 0xff
				writePart(t, store, a, bad, partMeta{ETag: etag, Size: a.Size})
			},
			wantDownloaded: 2<<20 + 3<<20, wantResumed: false,
		},
		{
			name: "object replaced since (etag differs)", data: small, key: "s3",
			prepare: func(t *testing.T, store *Store, a Artifact, etag string) {
				writePart(t, store, a, small[:1<<20], partMeta{ETag: "stale", Size: a.Size})
			},
			wantDownloaded: 3 << 20, wantResumed: false,
		},
		{
			name: "part longer than object", data: small, key: "s4",
			prepare: func(t *testing.T, store *Store, a Artifact, etag string) {
				writePart(t, store, a, append(bytes.Clone(small), 1, 2, 3), partMeta{ETag: etag, Size: a.Size})
			},
			wantDownloaded: 3 << 20, wantResumed: false,
		},
		{
			name: "sequential part complete (killed before the rename)", data: small, key: "s5",
			prepare: func(t *testing.T, store *Store, a Artifact, etag string) {
				writePart(t, store, a, small, partMeta{ETag: etag, Size: a.Size})
			},
			wantDownloaded: 0, wantResumed: true,
		},
		{
			name: "record of a parallel download, now sequential", data: small, key: "s6",
			prepare: func(t *testing.T, store *Store, a Artifact, etag string) {
				part := make([]byte, len(small))
				copy(part[:1<<20], small[:1<<20])
				writePart(t, store, a, part, partMeta{ETag: etag, Size: a.Size, Parts: []bool{true, false, false}})
			},
			wantDownloaded: 3 << 20, wantResumed: false,
		},
		{
			name: "parallel record of a replaced object", data: big, key: "p2",
			prepare: func(t *testing.T, store *Store, a Artifact, etag string) {
				part := make([]byte, len(big))
				copy(part[:2<<20], big[:2<<20])
				writePart(t, store, a, part, partMeta{ETag: "stale", Size: a.Size, Parts: []bool{true, true, false, false, false, false}})
			},
			wantDownloaded: 6 << 20, wantResumed: false,
		},
		{
			name: "parallel ranges", data: big, key: "p1",
			prepare: func(t *testing.T, store *Store, a Artifact, etag string) {
				part := make([]byte, len(big))
				copy(part[:2<<20], big[:2<<20])
				copy(part[4<<20:5<<20], big[4<<20:5<<20])
				writePart(t, store, a, part, partMeta{ETag: etag, Size: a.Size, Parts: []bool{true, true, false, false, true, false}})
			},
			wantDownloaded: 3 << 20, wantResumed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := put(t, s3, tt.key, tt.data)
			info, err := s3.Client.StatObject(context.Background(), a.Bucket, a.Object, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			f, store := newFetcher(t, s3, fastConfig())
			tt.prepare(t, store, a, info.ETag)
			res, err := f.Fetch(context.Background(), a, nil)
			if err != nil {
				t.Fatal(err)
			}
			assertBlob(t, res.Path, tt.data)
			if res.Downloaded != tt.wantDownloaded || res.Resumed != tt.wantResumed {
				t.Errorf("Downloaded=%d Resumed=%v, want %d %v", res.Downloaded, res.Resumed, tt.wantDownloaded, tt.wantResumed)
			}
			assertNoPartials(t, store)
		})
	}
}

func writePart(t *testing.T, store *Store, a Artifact, content []byte, m partMeta) {
	t.Helper()
	if err := os.WriteFile(store.partPath(a.SHA256), content, 0o640); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(store.metaPath(a.SHA256), b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestFetchSurvivesS3Outage kills MinIO in the middle of a download and
// brings it back: the download resumes and completes.
func TestFetchSurvivesS3Outage(t *testing.T) {
	for _, mode := range []struct {
		name string
		cfg  func(Config) Config
	}{
		{"sequential", func(c Config) Config { c.Concurrency = 1; return c }},
		{"parallel", func(c Config) Config { return c }},
	} {
		t.Run(mode.name, func(t *testing.T) {
			s3 := testenv.MinIO(t)
			data := randomBytes(48<<20, 21)
			a := put(t, s3, "big", data)
			f, _ := newFetcher(t, s3, mode.cfg(fastConfig()))

			killed := make(chan struct{})
			var once sync.Once
			type result struct {
				res Result
				err error
			}
			done := make(chan result, 1)
			go func() {
				res, err := f.Fetch(context.Background(), a, func(d, total int64) {
					if d > total/4 {
						once.Do(func() {
							close(killed)
							time.Sleep(300 * time.Millisecond) // hold the writer while the server dies
						})
					}
				})
				done <- result{res, err}
			}()
			select {
			case <-killed:
			case r := <-done:
				t.Fatalf("download finished before the outage: %+v", r)
			}
			s3.Kill(t)
			time.Sleep(time.Second)
			s3.Start(t)
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			assertBlob(t, r.res.Path, data)
			if r.res.Downloaded >= 2*a.Size {
				t.Errorf("downloaded %d bytes for a %d-byte object: restarted instead of resuming", r.res.Downloaded, a.Size)
			}
		})
	}
}

func TestFetchCancelThenResume(t *testing.T) {
	s3 := testenv.MinIO(t)
	data := randomBytes(8<<20, 31)
	a := put(t, s3, "c", data)
	cfg := fastConfig()
	cfg.Concurrency = 1
	f, _ := newFetcher(t, s3, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := f.Fetch(ctx, a, func(d, total int64) {
		if d > total/2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fetch: error = %v, want context.Canceled", err)
	}
	res, err := f.Fetch(context.Background(), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	assertBlob(t, res.Path, data)
	if !res.Resumed || res.Downloaded >= a.Size {
		t.Errorf("Downloaded=%d Resumed=%v: want a resumed download of less than %d bytes", res.Downloaded, res.Resumed, a.Size)
	}
}

func TestStoreGC(t *testing.T) {
	store, err := NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keep, drop, dropPart := digest([]byte("k")), digest([]byte("d")), digest([]byte("p"))
	for _, name := range []string{keep, keep + ".part", drop, dropPart + ".part", dropPart + ".part.json", "README"} {
		if err := os.WriteFile(filepath.Join(store.Dir(), name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := store.GC(map[string]bool{keep: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != drop {
		t.Errorf("removed %v, want [%s]", removed, drop)
	}
	var left []string
	entries, _ := os.ReadDir(store.Dir())
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if len(left) != 3 {
		t.Errorf("left %v, want the kept blob, its part and README", left)
	}
}

func TestBackoffBounds(t *testing.T) {
	cfg := Config{RetryBaseMillis: 100, RetryMaxMillis: 1000}
	for n := range 40 {
		d := backoff(n, cfg)
		if d < 100*time.Millisecond || d > time.Second {
			t.Fatalf("backoff(%d) = %v, outside [100ms, 1s]", n, d)
		}
	}
}
