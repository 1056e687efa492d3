package devenv

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
	"github.com/versity/versitygw/s3api"

	"github.com/modelfleet/modelfleet/internal/atomicfile"
)

// DefaultS3Addr is the listen address of the embedded S3 endpoint when
// S3Config.Addr is empty: MinIO's usual port on loopback.
const DefaultS3Addr = "127.0.0.1:9000"

// DefaultS3Region is the region reported when S3Config.Region is empty.
const DefaultS3Region = "us-east-1"

// Layout of S3Config.DataDir. The metadata directory must not be inside the
// object root (versitygw refuses that).
const (
	s3ObjectsDir  = "objects"          // one directory per bucket, one file per object
	s3MetaDir     = "meta"             // versitygw sidecar metadata (ETags, ACLs, uploads)
	s3CredsFile   = "credentials.json" // generated root credentials, mode 0600
	s3StartupWait = 30 * time.Second   // how long StartS3 waits for the listener
)

// ErrS3Running is returned by StartS3 while another embedded S3 endpoint is
// running in this process: versitygw keeps package-level state and supports
// only one gateway per process.
var ErrS3Running = errors.New("an embedded S3 endpoint is already running in this process (versitygw supports one per process)")

// s3Running guards the one-gateway-per-process rule. Unlike versitygw's own
// guard it is held until Close has fully stopped the gateway, so a caller
// never races a gateway that is still shutting down.
var s3Running sync.Mutex

// S3Config configures the embedded S3 endpoint.
type S3Config struct {
	// Addr is the TCP listen address, host:port. Empty means DefaultS3Addr;
	// port 0 picks a free port (see S3.Endpoint).
	Addr string
	// AllowRemote permits a non-loopback Addr. Anyone holding the
	// credentials can then read and write every object.
	AllowRemote bool
	// DataDir holds objects (DataDir/objects), their metadata (DataDir/meta)
	// and generated credentials (DataDir/credentials.json). Required; it is
	// created if missing and kept across restarts.
	DataDir string
	// AccessKey and SecretKey are the root credentials. Both empty means
	// generate them on first start and reuse them from DataDir afterwards.
	AccessKey string
	SecretKey string
	// Region is reported to clients; empty means DefaultS3Region.
	Region string
	// Bucket, when set, is created on start unless it exists.
	Bucket string
	// Logger receives lifecycle logs with component=s3-gateway; nil means
	// slog.Default(). The gateway itself logs nothing per request.
	Logger *slog.Logger
}

// S3 is a running embedded S3 endpoint serving a directory through
// versitygw's POSIX backend. It is safe for concurrent use.
type S3 struct {
	endpoint  string
	addr      string
	accessKey string
	secretKey string
	region    string
	bucket    string
	log       *slog.Logger

	cancel    context.CancelFunc
	done      chan struct{} // closed when the gateway has stopped
	runErr    error         // result of RunVersityGW, valid after done
	oldWd     string        // working directory to restore on Close
	closeOnce sync.Once
}

// StartS3 starts an S3 endpoint on cfg.Addr backed by cfg.DataDir and returns
// once it accepts requests and cfg.Bucket exists. It serves until ctx ends or
// Close is called; call Close in either case; only Close restores the working
// directory and lets StartS3 run again.
//
// StartS3 changes the working directory of the whole process to
// DataDir/objects for as long as the endpoint runs: versitygw's POSIX backend
// chdirs there and resolves buckets relative to it. Resolve every relative
// path before calling StartS3; Close restores the previous working directory.
// versitygw prints some start-up lines to stdout by itself ("Using sidecar
// directory…", "No IAM service configured…"); StartS3 configures the
// gateway so that it prints none, and writes its own lifecycle lines to
// Logger only, so a command's stdout stays its own.
//
// It returns ErrS3Running while another endpoint runs in this process, and an
// error wrapping ErrNotLoopback for a non-loopback address without
// AllowRemote.
func StartS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultS3Addr
	}
	if cfg.Region == "" {
		cfg.Region = DefaultS3Region
	}
	if err := checkListenAddr(cfg.Addr, cfg.AllowRemote); err != nil {
		return nil, fmt.Errorf("s3 gateway: %w", err)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("s3 gateway: DataDir is required")
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, errors.New("s3 gateway: AccessKey and SecretKey must both be set or both be empty")
	}
	if !s3Running.TryLock() {
		return nil, fmt.Errorf("s3 gateway: %w", ErrS3Running)
	}
	s, err := startS3(ctx, cfg)
	if err != nil {
		s3Running.Unlock()
		return nil, err
	}
	return s, nil
}

// startS3 does the work of StartS3 while s3Running is held.
func startS3(ctx context.Context, cfg S3Config) (*S3, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "s3-gateway")

	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("s3 gateway: data dir: %w", err)
	}
	objDir, metaDir := filepath.Join(dataDir, s3ObjectsDir), filepath.Join(dataDir, s3MetaDir)
	for _, dir := range []string{dataDir, objDir, metaDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("s3 gateway: create data dir: %w", err)
		}
	}
	access, secret := cfg.AccessKey, cfg.SecretKey
	if access == "" {
		if access, secret, err = loadOrCreateCredentials(filepath.Join(dataDir, s3CredsFile)); err != nil {
			return nil, fmt.Errorf("s3 gateway: %w", err)
		}
	}
	addr, err := resolvePort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("s3 gateway: %w", err)
	}

	oldWd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("s3 gateway: get working directory: %w", err)
	}
	sidecar, err := meta.NewSideCar(metaDir)
	if err != nil {
		return nil, fmt.Errorf("s3 gateway: metadata dir %s: %w", metaDir, err)
	}
	// posix.New chdirs into objDir (see StartS3). PosixOpts.SideCarDir only
	// checks that metaDir is outside objDir (true of this layout) and prints
	// the directory to stdout: the sidecar store above is what keeps the
	// metadata there, so it is left empty.
	be, err := posix.New(objDir, sidecar, posix.PosixOpts{})
	if err != nil {
		_ = os.Chdir(oldWd)
		return nil, fmt.Errorf("s3 gateway: open %s: %w", objDir, err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	s := &S3{
		endpoint:  "http://" + addr,
		addr:      addr,
		accessKey: access,
		secretKey: secret,
		region:    cfg.Region,
		bucket:    cfg.Bucket,
		log:       logger,
		cancel:    cancel,
		done:      make(chan struct{}),
		oldWd:     oldWd,
	}
	ready := make(chan struct{})
	var readyOnce sync.Once
	gwCfg := &embedgw.Config{
		RootUserAccess:    access,
		RootUserSecret:    secret,
		Region:            cfg.Region,
		Ports:             []string{addr},
		MaxConnections:    250,
		MaxRequests:       100,
		MultipartMaxParts: 10000,
		KeepAlive:         true,
		Quiet:             true, // no banner, no per-request lines on stdout
		// The single root account, given directly: left to itself the
		// gateway builds the same service but announces it on stdout.
		IAMService: auth.NewIAMServiceSingle(auth.Account{Access: access, Secret: secret, Role: auth.RoleAdmin}),
		S3Options: []s3api.Option{
			s3api.WithOnListen(func() { readyOnce.Do(func() { close(ready) }) }),
		},
	}
	go func() {
		defer close(s.done)
		// RunVersityGW shuts the backend down before it returns.
		s.runErr = embedgw.RunVersityGW(runCtx, be, gwCfg)
	}()

	timer := time.NewTimer(s3StartupWait)
	defer timer.Stop()
	select {
	case <-ready:
	case <-s.done:
		s.stopGateway()
		return nil, fmt.Errorf("s3 gateway: start on %s: %w", addr, s.runErr)
	case <-timer.C:
		s.stopGateway()
		return nil, fmt.Errorf("s3 gateway: not listening on %s after %s", addr, s3StartupWait)
	case <-ctx.Done():
		s.stopGateway()
		return nil, fmt.Errorf("s3 gateway: %w", ctx.Err())
	}
	if cfg.Bucket != "" {
		if err := s.ensureBucket(ctx, cfg.Bucket); err != nil {
			s.stopGateway()
			return nil, fmt.Errorf("s3 gateway: bucket %s: %w", cfg.Bucket, err)
		}
	}
	logger.Info("embedded s3 endpoint listening", "endpoint", s.endpoint, "data_dir", dataDir, "bucket", cfg.Bucket)
	return s, nil
}

// ensureBucket creates bucket through the S3 API, so the gateway records its
// owner and ACL as for any client-created bucket.
func (s *S3) ensureBucket(ctx context.Context, bucket string) error {
	cl, err := minio.New(s.addr, &minio.Options{
		Creds:  credentials.NewStaticV4(s.accessKey, s.secretKey, ""),
		Region: s.region,
	})
	if err != nil {
		return err
	}
	ok, err := cl.BucketExists(ctx, bucket)
	if err != nil || ok {
		return err
	}
	return cl.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: s.region})
}

// stopGateway stops the gateway, waits for it and restores the working
// directory. It does not release s3Running.
func (s *S3) stopGateway() {
	s.cancel()
	<-s.done
	if err := os.Chdir(s.oldWd); err != nil {
		s.log.Warn("cannot restore working directory", "dir", s.oldWd, "error", err)
	}
}

// Endpoint returns the endpoint URL, http://host:port.
func (s *S3) Endpoint() string { return s.endpoint }

// Addr returns the listen address, host:port, as minio-go's minio.New wants it.
func (s *S3) Addr() string { return s.addr }

// AccessKey returns the root access key ID.
func (s *S3) AccessKey() string { return s.accessKey }

// SecretKey returns the root secret access key.
func (s *S3) SecretKey() string { return s.secretKey }

// Region returns the region reported to clients.
func (s *S3) Region() string { return s.region }

// Bucket returns the bucket created on start, or "" if none was configured.
func (s *S3) Bucket() string { return s.bucket }

// Close stops the endpoint, waits until it has shut down, restores the
// working directory and lets StartS3 be called again. Objects stay in
// DataDir. It is safe to call more than once and returns the gateway's error,
// if it failed while running.
func (s *S3) Close() error {
	s.closeOnce.Do(func() {
		s.stopGateway()
		s3Running.Unlock()
		s.log.Info("embedded s3 endpoint stopped")
	})
	return s.runErr
}

// s3Credentials is the on-disk form of generated root credentials.
type s3Credentials struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
}

// loadOrCreateCredentials reads the credentials at path or, on first start,
// generates and stores them with mode 0600.
func loadOrCreateCredentials(path string) (access, secret string, err error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		var c s3Credentials
		if err := json.Unmarshal(raw, &c); err != nil || c.AccessKey == "" || c.SecretKey == "" {
			return "", "", fmt.Errorf("credentials file %s is damaged; delete it to generate new credentials", path)
		}
		return c.AccessKey, c.SecretKey, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("read credentials: %w", err)
	}
	// rand.Text gives 26 base32 characters (130 bits), valid in both fields.
	c := s3Credentials{AccessKey: "DEV" + rand.Text()[:17], SecretKey: rand.Text() + rand.Text()}
	raw, err = json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := atomicfile.Write(path, append(raw, '\n'), 0o600); err != nil {
		return "", "", fmt.Errorf("store credentials: %w", err)
	}
	return c.AccessKey, c.SecretKey, nil
}

// resolvePort replaces port 0 in addr with a free port. versitygw binds its
// listeners itself and cannot report the port it got, so the port is chosen
// here; another process could take it before the gateway binds, in which
// case StartS3 fails with the bind error.
func resolvePort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)), nil
}
