package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// objectStoreReadyTimeout bounds how long MinIO may take to report itself
// ready; it starts in a few seconds, slower with a loaded 2-core machine.
const objectStoreReadyTimeout = 60 * time.Second

// ObjectStore is a MinIO server started by MinIO for one test. Its fields
// describe it and must not be modified. Its methods must be called from the
// test's goroutine.
type ObjectStore struct {
	// Endpoint is the S3 API's host:port, as minio.New expects it.
	Endpoint string
	// URL is the S3 API's base URL, http://Endpoint.
	URL string
	// ConsoleAddr is the console address given to the server; the web
	// console itself is off (MINIO_BROWSER=off).
	ConsoleAddr string
	// Region is the region Client signs for (MinIO's default).
	Region string
	// AccessKey and SecretKey are the generated root credentials.
	AccessKey, SecretKey string
	// Bucket is a bucket created for the test, with a unique name.
	Bucket string
	// Client is a ready client for the server, signed with the root
	// credentials. It keeps working across Stop and Start.
	Client *minio.Client
	// Dir is the server's temporary directory, holding all files below.
	Dir string
	// DataDir is the server's drive.
	DataDir string
	// LogFile receives the server's output across restarts.
	LogFile string

	proc  *process
	ports func() (int, error)
}

// MinIO starts a MinIO server on free loopback ports for the test, creates a
// bucket and returns once the server reports itself ready; the server stops
// when the test ends. A missing minio binary skips the test, or fails it when
// CI=true; a server that does not start fails it with the tail of its log.
func MinIO(tb testing.TB) *ObjectStore {
	tb.Helper()
	return startMinIO(tb, freePort)
}

func startMinIO(tb testing.TB, ports func() (int, error)) *ObjectStore {
	tb.Helper()
	var root string
	if r := moduleRoot(); r != "" {
		root = filepath.Join(r, ".deps", "bin", "minio")
	}
	bin := findBinary(tb, "minio", "MODELFLEET_MINIO", []string{root, "minio"},
		"run `make deps` to build it into .deps/bin, or set MODELFLEET_MINIO to its path")

	dir := tb.TempDir()
	s := &ObjectStore{
		Region:    "us-east-1",
		AccessKey: "testenv-" + randomHex(4),
		SecretKey: randomHex(20),
		Bucket:    "testenv-" + randomHex(8),
		Dir:       dir,
		DataDir:   filepath.Join(dir, "data"),
		LogFile:   filepath.Join(dir, "minio.log"),
		ports:     ports,
	}
	for _, d := range []string{s.DataDir, filepath.Join(dir, "certs"), filepath.Join(dir, "home")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			tb.Fatalf("testenv: minio: %v", err)
		}
	}
	env := append(cleanEnv("MINIO_", "HOME="),
		"HOME="+filepath.Join(dir, "home"),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		// CI/CD mode accepts a drive on the root file system and sizes
		// buffers for a small machine rather than for the host's memory.
		"MINIO_CI_CD=on",
	)
	s.proc = &process{name: "minio", bin: bin, env: env, dir: dir, logPath: s.LogFile}
	tb.Cleanup(func() {
		s.proc.kill()
		if tb.Failed() {
			tb.Logf("testenv: minio log %s (last %d lines):\n%s", s.LogFile, logTailLines, s.proc.logTail(logTailLines))
		}
	})

	if err := s.usePorts(); err != nil {
		tb.Fatalf("testenv: minio: %v", err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), objectStoreReadyTimeout)
	defer cancel()
	if err := launch(ctx, s.proc, s.probe, s.usePorts); err != nil {
		tb.Fatalf("testenv: %v", err)
	}

	client, err := minio.New(s.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region: s.Region,
	})
	if err != nil {
		tb.Fatalf("testenv: minio client: %v", err)
	}
	if err := client.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		tb.Fatalf("testenv: create bucket %s: %v", s.Bucket, err)
	}
	s.Client = client
	return s
}

// Stop shuts the server down with SIGTERM and waits for it to exit; requests
// fail until Start. It does nothing when the server is not running.
func (s *ObjectStore) Stop(tb testing.TB) {
	tb.Helper()
	if err := s.proc.stop(stopGrace); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
}

// Kill ends the server with SIGKILL, like a crash.
func (s *ObjectStore) Kill(tb testing.TB) {
	tb.Helper()
	s.proc.kill()
}

// Start starts a stopped server again on the same ports with the same data
// and credentials, and waits until it reports itself ready.
func (s *ObjectStore) Start(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), objectStoreReadyTimeout)
	defer cancel()
	// The ports are fixed now; if something else holds one, wait a little
	// for it to go away rather than moving the server.
	waitForPort := func() error { time.Sleep(250 * time.Millisecond); return nil }
	if err := launch(ctx, s.proc, s.probe, waitForPort); err != nil {
		tb.Fatalf("testenv: restart: %v", err)
	}
}

// Restart stops the server and starts it again on the same ports; stored
// objects and buckets survive.
func (s *ObjectStore) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	s.Start(tb)
}

// usePorts chooses new free ports for the API and the console.
func (s *ObjectStore) usePorts() error {
	api, err := s.ports()
	if err != nil {
		return err
	}
	console, err := s.ports()
	if err != nil {
		return err
	}
	for console == api {
		if console, err = freePort(); err != nil {
			return err
		}
	}
	s.Endpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(api))
	s.URL = "http://" + s.Endpoint
	s.ConsoleAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(console))
	s.proc.args = []string{"server",
		"--address", s.Endpoint,
		"--console-address", s.ConsoleAddr,
		"--certs-dir", filepath.Join(s.Dir, "certs"),
		s.DataDir,
	}
	return nil
}

// probeClient checks health without keeping connections across restarts.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// probe succeeds once the server is live and ready to serve S3 requests
// (MinIO's cluster health checks).
func (s *ObjectStore) probe(ctx context.Context) error {
	for _, path := range []string{"/minio/health/live", "/minio/health/ready"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
		if err != nil {
			return err
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	return nil
}

// randomHex returns n random bytes in lower-case hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
