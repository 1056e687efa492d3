package agent

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/internal/bus"
)

// DefaultConfigPath is where fleetagent looks for its configuration.
const DefaultConfigPath = "/etc/modelfleet/agent.yaml"

// Config is the agent's whole configuration. Every field can be set in the
// YAML file, by a MODELFLEET_* environment variable or by a flag (see
// internal/config for the naming).
type Config struct {
	// DeviceID names this device in topics and assignments; default: derived
	// from the hostname (stable across restarts).
	DeviceID string `yaml:"device_id" usage:"device ID (default: derived from the hostname)"`
	// Labels describe the device for rollout targeting, e.g. site=plant-a.
	Labels map[string]string `yaml:"labels" usage:"device labels, k=v,k2=v2"`
	// MQTT is the broker connection.
	MQTT MQTTConfig `yaml:"mqtt"`
	// S3 is where model artifacts are downloaded from.
	S3 S3Config `yaml:"s3"`
	// DataDir holds blobs, state and logs.
	DataDir string `yaml:"data_dir" usage:"data directory for blobs and state"`
	// TrustRoot is the path of the enrolled root.json.
	TrustRoot string `yaml:"trust_root" usage:"path of the trusted root.json"`
	// MaxArtifactBytes refuses larger artifacts whatever the manifest says.
	MaxArtifactBytes int64 `yaml:"max_artifact_bytes" usage:"largest artifact accepted, in bytes"`
	// ClockSkewSeconds tolerates this much clock difference with the hub
	// when checking expiry.
	ClockSkewSeconds int `yaml:"clock_skew_seconds" usage:"tolerated clock skew in seconds"`
	// Variants lists the artifact variants this device can run, preferred
	// first; empty means detected (cuda when a GPU is present, then cpu).
	Variants []string `yaml:"variants" usage:"artifact variants in order of preference, e.g. cuda,cpu"`
	// ORTLib is the ONNX Runtime shared library (libonnxruntime.so.1);
	// empty means the standard locations (see docs/dependencies.md).
	ORTLib string `yaml:"ort_lib" usage:"path of the ONNX Runtime library libonnxruntime.so.1"`
	// Fetch tunes artifact downloads.
	Fetch fetch.Config `yaml:"fetch"`
	// Serving tunes inference.
	Serving ServingConfig `yaml:"serving"`
	// TelemetryIntervalSeconds is how often aggregates are published to the
	// hub; 0 turns telemetry reports off (/metrics stays).
	TelemetryIntervalSeconds int `yaml:"telemetry_interval_seconds" usage:"seconds between telemetry reports to the hub (0: off)"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level" usage:"log level: debug, info, warn, error"`
}

// MQTTConfig is the broker connection of the agent.
type MQTTConfig struct {
	Brokers     []string `yaml:"brokers" usage:"MQTT broker URLs, e.g. tcp://broker:1883 or ssl://broker:8883"`
	Username    string   `yaml:"username" usage:"MQTT username"`
	Password    string   `yaml:"password" usage:"MQTT password"`
	CAFile      string   `yaml:"ca_file" usage:"PEM CA bundle to verify the broker"`
	CertFile    string   `yaml:"cert_file" usage:"client certificate (mutual TLS)"`
	KeyFile     string   `yaml:"key_file" usage:"client private key (mutual TLS)"`
	TopicPrefix string   `yaml:"topic_prefix" usage:"MQTT topic prefix"`
}

// S3Config is the artifact storage. Empty credentials fall back to the
// standard AWS environment variables, the AWS credentials file and instance
// metadata (minio-go's credential chain).
type S3Config struct {
	Endpoint     string `yaml:"endpoint" usage:"S3 endpoint host:port or URL"`
	Region       string `yaml:"region" usage:"S3 region"`
	AccessKey    string `yaml:"access_key" usage:"S3 access key"`
	SecretKey    string `yaml:"secret_key" usage:"S3 secret key"`
	SessionToken string `yaml:"session_token" usage:"S3 session token"`
	// Insecure uses plain HTTP; only for loopback and dev setups.
	Insecure bool   `yaml:"insecure" usage:"use plain HTTP to S3 (dev only)"`
	CAFile   string `yaml:"ca_file" usage:"PEM CA bundle to verify S3"`
}

// ServingConfig tunes how models serve requests.
type ServingConfig struct {
	// Concurrency is the number of requests one model runs at once; 0
	// means no limit.
	Concurrency int `yaml:"concurrency" usage:"requests one model runs at once (0: no limit)"`
	// QueueLength is the number of requests that may wait for a turn;
	// beyond it requests are refused as busy.
	QueueLength int `yaml:"queue_length" usage:"requests that may wait per model before busy is returned"`
	// IdleTTLSeconds unloads a model idle this long (scale to zero); the
	// next request reloads it. 0 never unloads.
	IdleTTLSeconds int `yaml:"idle_ttl_seconds" usage:"unload models idle this long, in seconds (0: never)"`
	// IdleTTLOverrides sets the idle TTL per model: name=seconds,….
	IdleTTLOverrides map[string]string `yaml:"idle_ttl_overrides" usage:"per-model idle TTL, model=seconds,…"`
	// HTTPAddr is where the KServe v2 inference API and /metrics listen;
	// empty disables them. Keep it on loopback or a plant network: it has
	// no authentication.
	HTTPAddr string `yaml:"http_addr" usage:"address of the local inference API and /metrics (empty: off)"`
	// Bindings route factory MQTT topics through models (YAML only).
	Bindings []BindingConfig `yaml:"bindings"`
}

// SecretKeys are the config keys whose values are masked in `config show`.
var SecretKeys = []string{"mqtt.password", "s3.secret_key", "s3.session_token"}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MQTT:                     MQTTConfig{TopicPrefix: bus.DefaultPrefix},
		DataDir:                  "/var/lib/modelfleet/agent",
		TrustRoot:                "/etc/modelfleet/root.json",
		MaxArtifactBytes:         4 << 30,
		ClockSkewSeconds:         300,
		Fetch:                    fetch.DefaultConfig(),
		Serving:                  ServingConfig{Concurrency: 4, QueueLength: 64, HTTPAddr: "127.0.0.1:8080"},
		LogLevel:                 "info",
		TelemetryIntervalSeconds: 30,
	}
}

// DefaultDeviceID derives a stable device ID from the hostname, reduced to
// the characters allowed in topics.
func DefaultDeviceID() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("device_id: not set and hostname unavailable: %w", err)
	}
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	id := strings.Trim(b.String(), "-.")
	if err := bus.ValidateName(id); err != nil {
		return "", fmt.Errorf("device_id: not set and hostname %q does not make a valid ID: %w", h, err)
	}
	return id, nil
}

// Validate reports every problem at once, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.DeviceID == "" {
		add("device_id: required (or leave it unset to derive it from the hostname)")
	} else if err := bus.ValidateName(c.DeviceID); err != nil {
		add("device_id: %w", err)
	}
	for k, v := range c.Labels {
		if k == "" || strings.ContainsAny(k, "=,") || strings.ContainsAny(v, "=,") {
			add("labels: %q=%q: keys and values may not contain '=' or ','", k, v)
		}
	}
	if len(c.MQTT.Brokers) == 0 {
		add("mqtt.brokers: at least one broker URL is required")
	}
	for _, b := range c.MQTT.Brokers {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			add("mqtt.brokers: %q is not a URL like tcp://host:1883", b)
			continue
		}
		switch u.Scheme {
		case "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss":
		default:
			add("mqtt.brokers: %q: unsupported scheme %q (tcp, ssl, ws, wss)", b, u.Scheme)
		}
	}
	if (c.MQTT.CertFile == "") != (c.MQTT.KeyFile == "") {
		add("mqtt.cert_file, mqtt.key_file: set both or neither")
	}
	for key, p := range map[string]string{"mqtt.ca_file": c.MQTT.CAFile, "mqtt.cert_file": c.MQTT.CertFile, "mqtt.key_file": c.MQTT.KeyFile, "s3.ca_file": c.S3.CAFile} {
		if p != "" {
			if _, err := os.Stat(p); err != nil {
				add("%s: %w", key, err)
			}
		}
	}
	if strings.Trim(c.MQTT.TopicPrefix, "/") == "" || strings.ContainsAny(c.MQTT.TopicPrefix, "+#") {
		add("mqtt.topic_prefix: %q must be non-empty and contain no wildcards", c.MQTT.TopicPrefix)
	}
	if c.S3.Endpoint == "" {
		add("s3.endpoint: required (e.g. s3.amazonaws.com or minio.local:9000)")
	}
	if (c.S3.AccessKey == "") != (c.S3.SecretKey == "") {
		add("s3.access_key, s3.secret_key: set both or neither (neither uses the AWS credential chain)")
	}
	if c.DataDir == "" {
		add("data_dir: required")
	} else if !filepath.IsAbs(c.DataDir) {
		add("data_dir: %q must be an absolute path", c.DataDir)
	}
	if c.TrustRoot == "" {
		add("trust_root: required: the root.json made by `fleethub keys init`")
	} else if _, err := os.Stat(c.TrustRoot); err != nil {
		add("trust_root: %w", err)
	}
	if c.MaxArtifactBytes <= 0 {
		add("max_artifact_bytes: must be positive")
	}
	if c.ClockSkewSeconds < 0 || c.ClockSkewSeconds > 3600 {
		add("clock_skew_seconds: %d is outside 0..3600", c.ClockSkewSeconds)
	}
	for _, v := range c.Variants {
		if err := bus.ValidateName(v); err != nil {
			add("variants: %w", err)
		}
	}
	if c.Fetch.Concurrency < 0 || c.Fetch.PartSizeBytes < 0 || c.Fetch.MaxAttempts < 0 {
		add("fetch: values must not be negative")
	}
	if c.Serving.Concurrency < 0 || c.Serving.QueueLength < 0 || c.Serving.IdleTTLSeconds < 0 {
		add("serving: concurrency, queue_length and idle_ttl_seconds must not be negative")
	}
	for name, v := range c.Serving.IdleTTLOverrides {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			add("serving.idle_ttl_overrides: %s=%q is not a number of seconds", name, v)
		}
	}
	if c.TelemetryIntervalSeconds < 0 {
		add("telemetry_interval_seconds: must not be negative")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	return errors.Join(errs...)
}

// BusConfig returns the MQTT connection settings with the device's stable
// client ID.
func (c *Config) BusConfig() bus.Config {
	return bus.Config{
		Brokers:  c.MQTT.Brokers,
		ClientID: "modelfleet-agent-" + c.DeviceID,
		Username: c.MQTT.Username,
		Password: c.MQTT.Password,
		CAFile:   c.MQTT.CAFile,
		CertFile: c.MQTT.CertFile,
		KeyFile:  c.MQTT.KeyFile,
	}
}

// idleTTL returns the idle TTL of a model (0: never unload).
func (c *Config) idleTTL(model string) time.Duration {
	if v, ok := c.Serving.IdleTTLOverrides[model]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	return time.Duration(c.Serving.IdleTTLSeconds) * time.Second
}

// Paths under DataDir.
func (c *Config) blobDir() string   { return filepath.Join(c.DataDir, "blobs", "sha256") }
func (c *Config) statePath() string { return filepath.Join(c.DataDir, "state.json") }
