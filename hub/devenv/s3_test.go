package devenv

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// mustMinio returns a minio-go client for s.
func mustMinio(tb testing.TB, s *S3) *minio.Client {
	tb.Helper()
	cl, err := minio.New(s.Addr(), &minio.Options{
		Creds:  credentials.NewStaticV4(s.AccessKey(), s.SecretKey(), ""),
		Region: s.Region(),
	})
	if err != nil {
		tb.Fatalf("minio.New: %v", err)
	}
	return cl
}

// getAll downloads bucket/key with opts.
func getAll(tb testing.TB, cl *minio.Client, bucket, key string, opts minio.GetObjectOptions) []byte {
	tb.Helper()
	obj, err := cl.GetObject(tb.Context(), bucket, key, opts)
	if err != nil {
		tb.Fatalf("get %s: %v", key, err)
	}
	defer obj.Close()
	got, err := io.ReadAll(obj)
	if err != nil {
		tb.Fatalf("read %s: %v", key, err)
	}
	return got
}

// multipartETag is the S3 ETag of data uploaded in parts of partSize bytes:
// the MD5 of the concatenated part MD5s, a dash and the part count.
func multipartETag(data []byte, partSize int) string {
	var sums []byte
	n := 0
	for off := 0; off < len(data); off += partSize {
		sum := md5.Sum(data[off:min(off+partSize, len(data))])
		sums = append(sums, sum[:]...)
		n++
	}
	sum := md5.Sum(sums)
	return fmt.Sprintf("%s-%d", hex.EncodeToString(sum[:]), n)
}

// TestS3 runs every S3 scenario against one gateway at a time, because
// versitygw supports only one per process.
func TestS3(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := S3Config{Addr: "127.0.0.1:0", DataDir: dir, Bucket: "models", Logger: testLogger(t)}
	s, err := StartS3(t.Context(), cfg)
	if err != nil {
		t.Fatalf("StartS3: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })

	const (
		size     = 30 << 20
		partSize = 5 << 20
		key      = "m1/1.0.0/model.onnx"
	)
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)

	t.Run("CredentialsStored", func(t *testing.T) {
		fi, err := os.Stat(filepath.Join(dir, s3CredsFile))
		if err != nil {
			t.Fatalf("credentials file: %v", err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("credentials file mode = %o, want 600", perm)
		}
		if len(s.AccessKey()) < 16 || len(s.SecretKey()) < 40 {
			t.Errorf("weak generated credentials: %d/%d characters", len(s.AccessKey()), len(s.SecretKey()))
		}
	})

	t.Run("SecondGatewayRefused", func(t *testing.T) {
		_, err := StartS3(t.Context(), S3Config{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
		if !errors.Is(err, ErrS3Running) {
			t.Fatalf("second StartS3 = %v, want ErrS3Running", err)
		}
	})

	t.Run("MultipartRoundTrip", func(t *testing.T) {
		cl := mustMinio(t, s)
		info, err := cl.PutObject(t.Context(), "models", key, bytes.NewReader(data), size,
			minio.PutObjectOptions{PartSize: partSize, ContentType: "application/octet-stream"})
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		wantETag := multipartETag(data, partSize)
		if info.ETag != wantETag {
			t.Errorf("put ETag = %q, want %q", info.ETag, wantETag)
		}
		if got := getAll(t, cl, "models", key, minio.GetObjectOptions{}); !bytes.Equal(got, data) {
			t.Fatalf("get returned %d bytes that differ from the %d uploaded", len(got), len(data))
		}

		var opts minio.GetObjectOptions
		const start, end = 7<<20 + 3, 19<<20 + 11 // spans several parts
		if err := opts.SetRange(start, end); err != nil {
			t.Fatal(err)
		}
		if got := getAll(t, cl, "models", key, opts); !bytes.Equal(got, data[start:end+1]) {
			t.Fatalf("ranged get returned %d bytes that differ from bytes %d-%d", len(got), start, end)
		}

		st, err := cl.StatObject(t.Context(), "models", key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if st.ETag != wantETag || st.Size != size {
			t.Errorf("stat = ETag %q size %d, want %q %d", st.ETag, st.Size, wantETag, size)
		}
	})

	t.Run("RestartKeepsObject", func(t *testing.T) {
		access, secret := s.AccessKey(), s.SecretKey()
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if got, _ := os.Getwd(); got != wd {
			t.Fatalf("working directory after Close = %s, want %s", got, wd)
		}
		s2, err := StartS3(t.Context(), cfg)
		if err != nil {
			t.Fatalf("restart: %v", err)
		}
		t.Cleanup(func() { _ = s2.Close() })
		if s2.AccessKey() != access || s2.SecretKey() != secret {
			t.Fatal("credentials changed across restart")
		}
		if got := getAll(t, mustMinio(t, s2), "models", key, minio.GetObjectOptions{}); !bytes.Equal(got, data) {
			t.Fatalf("after restart get returned %d bytes that differ from the %d uploaded", len(got), len(data))
		}
		if err := s2.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	})

	t.Run("ConfiguredCredentials", func(t *testing.T) {
		s3, err := StartS3(t.Context(), S3Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(),
			AccessKey: "devaccesskey", SecretKey: "devsecretkey-devsecretkey", Bucket: "dev"})
		if err != nil {
			t.Fatalf("StartS3: %v", err)
		}
		defer s3.Close()
		cl, err := minio.New(s3.Addr(), &minio.Options{Creds: credentials.NewStaticV4("devaccesskey", "wrong-secret-wrong-secret", "")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.BucketExists(t.Context(), "dev"); err == nil {
			t.Error("request with a wrong secret succeeded")
		}
		if ok, err := mustMinio(t, s3).BucketExists(t.Context(), "dev"); err != nil || !ok {
			t.Errorf("BucketExists(dev) = %v, %v; want true", ok, err)
		}
	})

	if got, _ := os.Getwd(); got != wd {
		t.Errorf("working directory at the end = %s, want %s", got, wd)
	}
}
