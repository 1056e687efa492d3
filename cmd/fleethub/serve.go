package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/release"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/config"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

// defaultServeConfigPath is read by `fleethub serve` when it exists and no
// --config is given.
const defaultServeConfigPath = "/etc/modelfleet/hub.yaml"

// defaultAPIAddr is where the API listens unless api.addr says otherwise.
const defaultAPIAddr = "127.0.0.1:8400"

// shutdownTimeout bounds how long in-flight API requests may finish.
const shutdownTimeout = 10 * time.Second

// serverConfig is the configuration of `fleethub serve`: the hub core
// under hub:, the object store model pushes upload to under s3:, and the
// HTTP API under api:. Example (/etc/modelfleet/hub.yaml):
//
//	hub:
//	  mqtt: {brokers: [tcp://broker:1883]}
//	  store_path: /var/lib/modelfleet/hub/hub.db
//	  key_dir: /etc/modelfleet/keys
//	s3: {endpoint: https://s3.example.com, bucket: models, access_key: …, secret_key: …}
//	api: {addr: 127.0.0.1:8400, token: …}
type serverConfig struct {
	Hub      hub.Config         `yaml:"hub"`
	S3       serverS3Config     `yaml:"s3"`
	API      serverAPIConfig    `yaml:"api"`
	Enroll   serverEnrollConfig `yaml:"enroll"`
	LogLevel string             `yaml:"log_level" usage:"log level: debug, info, warn, error"`
}

// serverS3Config is the object store the hub uploads pushed models to. The
// agents need read access to the same bucket.
type serverS3Config struct {
	Endpoint  string `yaml:"endpoint" usage:"S3 endpoint host:port or URL (empty: model push disabled)"`
	Region    string `yaml:"region" usage:"S3 region"`
	AccessKey string `yaml:"access_key" usage:"S3 access key"`
	SecretKey string `yaml:"secret_key" usage:"S3 secret key"`
	Insecure  bool   `yaml:"insecure" usage:"use plain HTTP to S3 (dev only)"`
	CAFile    string `yaml:"ca_file" usage:"PEM CA bundle to verify S3"`
	Bucket    string `yaml:"bucket" usage:"bucket model artifacts are uploaded to"`
	// Prefix is prepended to "<model>/<version>/<variant>.onnx" inside the
	// bucket, for a bucket shared with other data.
	Prefix string `yaml:"prefix" usage:"object name prefix inside the bucket, e.g. modelfleet/ (default: none; objects are <model>/<version>/<variant>.onnx)"`
}

// serverAPIConfig is the HTTP API.
type serverAPIConfig struct {
	Addr  string `yaml:"addr" usage:"HTTP API listen address"`
	Token string `yaml:"token" usage:"bearer token the API requires (empty: no authentication, loopback only)"`
	// MaxUploadBytes caps one model push.
	MaxUploadBytes int64 `yaml:"max_upload_bytes" usage:"largest model push accepted, in bytes"`
	// TLSCertFile and TLSKeyFile make the API serve HTTPS, which
	// `fleetagent enroll` requires for a hub that is not on loopback.
	TLSCertFile string `yaml:"tls_cert_file" usage:"PEM certificate for HTTPS on api.addr (empty: plain HTTP)"`
	TLSKeyFile  string `yaml:"tls_key_file" usage:"PEM private key of api.tls_cert_file"`
}

func defaultServerConfig() serverConfig {
	return serverConfig{
		Hub:      hub.DefaultConfig(),
		API:      serverAPIConfig{Addr: defaultAPIAddr, MaxUploadBytes: api.DefaultMaxUploadBytes},
		LogLevel: "info",
	}
}

// validate reports every problem of c at once, naming the fields.
func (c serverConfig) validate() error {
	var errs []error
	if err := c.Hub.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("hub: %w", err))
	}
	if c.Hub.StorePath == "" {
		errs = append(errs, errors.New("hub.store_path: required (the SQLite database file)"))
	}
	if c.API.Addr == "" {
		errs = append(errs, errors.New("api.addr: required, e.g. "+defaultAPIAddr))
	} else if c.API.Token == "" && !isLoopbackAddr(c.API.Addr) {
		errs = append(errs, fmt.Errorf("api.token: required when api.addr %s is not a loopback address: anyone reaching it could start rollouts", c.API.Addr))
	}
	if c.S3.Endpoint != "" && c.S3.Bucket == "" {
		errs = append(errs, errors.New("s3.bucket: required with s3.endpoint"))
	}
	return errors.Join(errs...)
}

func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serverFlags holds --config and the per-field flags of serverConfig.
type serverFlags struct {
	path string
	fs   *pflag.FlagSet
}

func addServerFlags(cmd *cobra.Command) *serverFlags {
	sf := &serverFlags{fs: cmd.Flags()}
	cmd.Flags().StringVarP(&sf.path, "config", "c", "", "configuration file (default "+defaultServeConfigPath+" if it exists; env MODELFLEET_CONFIG)")
	defaults := defaultServerConfig()
	config.BindFlags(cmd.Flags(), &defaults)
	return sf
}

// load builds the configuration: defaults, file, environment, flags.
func (sf *serverFlags) load(lookup func(string) (string, bool)) (serverConfig, error) {
	cfg := defaultServerConfig()
	path, optional := sf.path, false
	if path == "" {
		path, _ = lookup("MODELFLEET_CONFIG")
	}
	if path == "" {
		path, optional = defaultServeConfigPath, true
	}
	err := config.Load(&cfg, path, optional, lookup, sf.fs)
	return cfg, err
}

func newServeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub: HTTP API, rollout controller and telemetry ingestion",
		Long: `Run the hub server. It connects to the MQTT broker (hub.mqtt.*), opens the
SQLite store (hub.store_path), signs assignments with the director key in
hub.key_dir, and serves the HTTP API used by the fleethub CLI on api.addr.
Model pushes are uploaded to s3.bucket and signed with the release key when
hub.key_dir holds one.

Configuration comes from the YAML file (--config), MODELFLEET_* environment
variables (MODELFLEET_HUB_MQTT_BROKERS, MODELFLEET_API_TOKEN, …) and the flags
below, later ones winning. SIGINT or SIGTERM shut it down gracefully.`,
		Example: `  fleethub serve --config /etc/modelfleet/hub.yaml
  fleethub serve --hub-mqtt-brokers tcp://127.0.0.1:1883 --hub-key-dir ./keys \
    --hub-store-path ./hub.db --s3-endpoint http://127.0.0.1:9000 --s3-insecure true \
    --s3-bucket models --s3-access-key minio --s3-secret-key minio123`,
		Args: cobra.NoArgs,
	}
	sf := addServerFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := sf.load(os.LookupEnv)
		if err != nil {
			return err
		}
		log := newLogger(cmd.ErrOrStderr(), cfg.LogLevel)
		return runServer(cmd.Context(), cfg, log, func(addr string) {
			log.Info("fleethub API listening", "addr", apiScheme(cfg.API)+"://"+addr)
		})
	}
	return cmd
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// runServer runs the hub and its API until ctx ends or either fails;
// onListen is called with the API's address once it accepts connections.
// It closes everything it opened before returning.
func runServer(ctx context.Context, cfg serverConfig, log *slog.Logger, onListen func(addr string)) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	st, err := sqlite.Open(ctx, cfg.Hub.StorePath)
	if err != nil {
		return fmt.Errorf("open store %s: %w", cfg.Hub.StorePath, err)
	}
	defer st.Close()
	push, err := newPusher(cfg, st, log)
	if err != nil {
		return err
	}

	enr, err := newEnrollment(cfg, st, log)
	if err != nil {
		return err
	}
	h := hub.New(cfg.Hub, hub.Deps{Store: st, Logger: log})
	defer h.Close()
	srv := &http.Server{
		Handler: api.NewServer(h, st, api.Options{
			Token: cfg.API.Token, Logger: log, Push: push, MaxUploadBytes: cfg.API.MaxUploadBytes, Enroll: enr,
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ln, err := net.Listen("tcp", cfg.API.Addr)
	if err != nil {
		return fmt.Errorf("api.addr: %w", err)
	}

	hubCtx, cancelHub := context.WithCancel(ctx)
	defer cancelHub()
	hubDone := make(chan error, 1)
	go func() { hubDone <- h.Run(hubCtx) }()
	httpDone := make(chan error, 1)
	go func() { httpDone <- serveAPI(srv, ln, cfg.API) }() // enroll.go
	if onListen != nil {
		onListen(ln.Addr().String())
	}
	go warnUntilReady(hubCtx, h.Ready(), cfg.Hub.MQTT.Brokers, log)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-hubDone:
		hubDone <- err
		if err != nil {
			runErr = fmt.Errorf("hub: %w", err)
		}
	case err := <-httpDone:
		httpDone <- err
		runErr = fmt.Errorf("api server: %w", err)
	}
	// Stop taking requests and let in-flight ones finish while the hub
	// still runs, then stop the hub.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("api shutdown", "err", err)
	}
	cancelHub()
	if err := <-hubDone; err != nil && runErr == nil {
		runErr = fmt.Errorf("hub: %w", err)
	}
	log.Info("fleethub stopped")
	return runErr
}

// notReadyWarnAfter is how long the hub may take to connect to its broker
// before serve says why it is not ready; notReadyWarnEvery repeats it.
const (
	notReadyWarnAfter = 3 * time.Second
	notReadyWarnEvery = 30 * time.Second
)

// warnUntilReady logs, until ready is closed or ctx ends, that the hub is
// not connected to its broker yet, with the reason a plain dial gives (the
// MQTT client retries silently). The API answers meanwhile: reads work,
// /readyz and commands that publish answer 503.
func warnUntilReady(ctx context.Context, ready <-chan struct{}, brokers []string, log *slog.Logger) {
	wait := notReadyWarnAfter
	for {
		select {
		case <-ctx.Done():
			return
		case <-ready:
			return
		case <-time.After(wait):
		}
		wait = notReadyWarnEvery
		for _, b := range brokers {
			log.Warn("hub not ready: cannot connect to the MQTT broker yet, retrying; the API answers, but rollouts wait and /readyz answers 503 (check hub.mqtt.brokers and that the broker runs)",
				"broker", b, "reason", dialReason(ctx, b))
		}
	}
}

// dialReason tries a TCP connection to the broker URL's host and returns
// what failed ("reachable" when the TCP connection works, so the problem
// is TLS, credentials or the MQTT handshake).
func dialReason(ctx context.Context, broker string) string {
	host, err := bus.HostPort(broker)
	if err != nil {
		return err.Error()
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", host)
	if err != nil {
		return err.Error()
	}
	conn.Close()
	return "TCP connection works: check TLS settings, credentials and the broker's log"
}

// newPusher returns the function the API pushes models with: upload to
// cfg.S3, sign with the release keys of the key directory. It returns nil
// (pushes disabled) when no S3 endpoint is configured.
func newPusher(cfg serverConfig, reg release.Registry, log *slog.Logger) (api.PushFunc, error) {
	if cfg.S3.Endpoint == "" {
		log.Warn("no s3.endpoint configured: model push is disabled")
		return nil, nil
	}
	s3, err := fetch.NewClient(fetch.ClientOptions{
		Endpoint: cfg.S3.Endpoint, Region: cfg.S3.Region, AccessKey: cfg.S3.AccessKey,
		SecretKey: cfg.S3.SecretKey, Insecure: cfg.S3.Insecure, CAFile: cfg.S3.CAFile,
	})
	if err != nil {
		return nil, err
	}
	loaded, err := keys.LoadDir(cfg.Hub.KeyDir)
	if err != nil {
		return nil, fmt.Errorf("hub.key_dir: %w", err)
	}
	var signers []manifest.Signer
	for _, k := range loaded {
		if k.Role == manifest.RoleRelease {
			signers = append(signers, k.Signer)
		}
	}
	if len(signers) == 0 {
		log.Info("no release key in the key directory: pushes need --sign-later", "key_dir", cfg.Hub.KeyDir)
	}
	bucket, keyDir := cfg.S3.Bucket, cfg.Hub.KeyDir
	prefix := strings.Trim(cfg.S3.Prefix, "/")
	return func(ctx context.Context, req release.PushRequest) (*release.Result, error) {
		req.Bucket = bucket
		if prefix != "" {
			req.KeyPrefix = prefix + "/" + req.Name + "/" + req.Version + "/"
		}
		if !req.SignLater {
			if len(signers) == 0 {
				return nil, fmt.Errorf("%w: the hub has no release key in %s; push with --sign-later and sign offline", release.ErrInvalid, keyDir)
			}
			req.Signers = signers
		}
		return release.Push(ctx, s3, reg, req)
	}, nil
}
