package hub

import (
	"errors"
	"fmt"
	"time"

	"github.com/modelfleet/modelfleet/internal/bus"
)

// DefaultClientID is the MQTT client ID of the hub. It must stay the same
// across restarts so the broker keeps the hub's persistent session.
const DefaultClientID = "modelfleet-hub"

// Config configures a Hub. Durations carry their unit in the field name.
type Config struct {
	// MQTT is the broker connection (brokers, stable client ID, auth, TLS).
	// The hub always connects with a persistent session (clean session off).
	MQTT bus.Config `yaml:"mqtt" json:"mqtt"`
	// TopicPrefix is the MQTT topic prefix; empty means bus.DefaultPrefix.
	TopicPrefix string `yaml:"topic_prefix" json:"topic_prefix,omitempty"`
	// StorePath is the SQLite database file Run opens when no store is
	// injected through Deps.
	StorePath string `yaml:"store_path" json:"store_path"`
	// KeyDir holds root.json and the director private key(s) that sign
	// assignments (see internal/keys).
	KeyDir string `yaml:"key_dir" json:"key_dir"`
	// AssignmentTTLSeconds is how long a signed assignment stays valid.
	AssignmentTTLSeconds int64 `yaml:"assignment_ttl_seconds" json:"assignment_ttl_seconds"`
	// RefreshMarginSeconds: an assignment is re-issued (same content, new
	// sequence and expiry) once less than this is left before it expires.
	// 0 means a third of AssignmentTTLSeconds.
	RefreshMarginSeconds int64 `yaml:"refresh_margin_seconds" json:"refresh_margin_seconds,omitempty"`
	// TickMillis is how often the rollout controller steps every rollout,
	// besides stepping at once when a device reports.
	TickMillis int64 `yaml:"tick_millis" json:"tick_millis"`
	// GateWindowSeconds bounds the telemetry a gate sees to the last
	// GateWindowSeconds before now; 0 means everything since the wave's soak
	// started. Telemetry is kept per minute, so windows are minute-granular.
	GateWindowSeconds int64 `yaml:"gate_window_seconds" json:"gate_window_seconds,omitempty"`
	// MaxPayloadBytes caps device messages the hub ingests; larger ones are
	// dropped with a warning.
	MaxPayloadBytes int64 `yaml:"max_payload_bytes" json:"max_payload_bytes"`
}

// DefaultConfig returns the defaults: client ID DefaultClientID, assignments
// valid 24 h and refreshed with 8 h left, a 2 s controller tick, gates over
// the whole soak and 1 MiB device messages. Brokers, StorePath and KeyDir
// have no default.
func DefaultConfig() Config {
	return Config{
		MQTT:                 bus.Config{ClientID: DefaultClientID},
		AssignmentTTLSeconds: 24 * 60 * 60,
		TickMillis:           2000,
		MaxPayloadBytes:      1 << 20,
	}
}

// Validate reports every problem of c at once, naming the fields.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if err := c.MQTT.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("mqtt: %w", err))
	}
	if c.KeyDir == "" {
		add("key_dir: required (the directory with root.json and the director key)")
	}
	if c.AssignmentTTLSeconds <= 0 {
		add("assignment_ttl_seconds: %d; want a positive number of seconds, e.g. 86400", c.AssignmentTTLSeconds)
	}
	if c.RefreshMarginSeconds < 0 {
		add("refresh_margin_seconds: %d is negative", c.RefreshMarginSeconds)
	} else if c.AssignmentTTLSeconds > 0 && c.RefreshMarginSeconds >= c.AssignmentTTLSeconds {
		add("refresh_margin_seconds: %d is not below assignment_ttl_seconds %d: assignments would be re-issued continuously",
			c.RefreshMarginSeconds, c.AssignmentTTLSeconds)
	}
	if c.TickMillis <= 0 {
		add("tick_millis: %d; want a positive number of milliseconds, e.g. 2000", c.TickMillis)
	}
	if c.GateWindowSeconds < 0 {
		add("gate_window_seconds: %d is negative", c.GateWindowSeconds)
	}
	if c.MaxPayloadBytes <= 0 {
		add("max_payload_bytes: %d; want a positive size, e.g. 1048576", c.MaxPayloadBytes)
	}
	return errors.Join(errs...)
}

// ttl returns the assignment validity.
func (c Config) ttl() time.Duration { return time.Duration(c.AssignmentTTLSeconds) * time.Second }

// refreshMargin returns how much validity left triggers a refresh.
func (c Config) refreshMargin() time.Duration {
	if c.RefreshMarginSeconds > 0 {
		return time.Duration(c.RefreshMarginSeconds) * time.Second
	}
	return c.ttl() / 3
}

// tick returns the controller period.
func (c Config) tick() time.Duration { return time.Duration(c.TickMillis) * time.Millisecond }

// gateWindow returns the gate telemetry window (0: since soak start).
func (c Config) gateWindow() time.Duration { return time.Duration(c.GateWindowSeconds) * time.Second }
