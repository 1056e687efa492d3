package fetch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelfleet/modelfleet/internal/testenv"
)

// BenchmarkDownload compares the agent's verified download with a bare
// minio-go FGetObject of the same object from the same MinIO, alternating
// the two in every iteration so both see the same machine load. It reports
// the median time of each and speed = baseline time / agent time (1.0 is
// parity, above 1 the agent is faster; the goal is ≥ 0.9).
func BenchmarkDownload(b *testing.B) {
	s3 := testenv.MinIO(b)
	sizes := []int{1 << 20, 64 << 20, 256 << 20}
	if testing.Short() {
		sizes = sizes[:2]
	}
	for _, size := range sizes {
		data := randomBytes(size, uint64(size))
		key := fmt.Sprintf("bench-%d", size)
		if _, err := s3.Client.PutObject(context.Background(), s3.Bucket, key, bytes.NewReader(data), int64(size), minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
		a := Artifact{Bucket: s3.Bucket, Object: key, SHA256: digest(data), Size: int64(size)}
		for _, mode := range []struct {
			name string
			cfg  Config
		}{
			{"single", Config{Concurrency: 1}},
			{"parallel", Config{Concurrency: 4, PartSizeBytes: 16 << 20, ParallelMinBytes: 32 << 20}},
		} {
			if mode.name == "parallel" && int64(size) < mode.cfg.ParallelMinBytes {
				continue
			}
			b.Run(fmt.Sprintf("%dMiB/%s", size>>20, mode.name), func(b *testing.B) {
				dir := b.TempDir()
				var base, agent []time.Duration
				for b.Loop() {
					// Baseline: minio-go's own file download.
					dst := filepath.Join(dir, "baseline")
					t0 := time.Now()
					if err := s3.Client.FGetObject(context.Background(), s3.Bucket, key, dst, minio.GetObjectOptions{}); err != nil {
						b.Fatal(err)
					}
					base = append(base, time.Since(t0))
					os.Remove(dst)

					// Agent: hash, size cap, fsync, rename.
					store, err := NewStore(filepath.Join(dir, "blobs"))
					if err != nil {
						b.Fatal(err)
					}
					f := New(s3.Client, store, mode.cfg, nil)
					t0 = time.Now()
					if _, err := f.Fetch(context.Background(), a, nil); err != nil {
						b.Fatal(err)
					}
					agent = append(agent, time.Since(t0))
					os.RemoveAll(store.Dir())
				}
				mb, ma := median(base), median(agent)
				b.ReportMetric(float64(mb.Milliseconds()), "baseline-ms")
				b.ReportMetric(float64(ma.Milliseconds()), "agent-ms")
				b.ReportMetric(float64(mb)/float64(ma), "speed-vs-minio")
				b.ReportMetric(float64(size)/ma.Seconds()/(1<<20), "agent-MiB/s")
			})
		}
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
