// Package bus is the one place where modelfleet names its MQTT topics and
// configures the paho client: TLS, authentication, persistent sessions,
// reconnects, the last-will message, and hand-off of incoming messages to the
// caller's goroutine. The hub and the agent both use it, so a topic cannot be
// spelled two ways. It is not called "mqtt" so it never shadows paho's
// package name.
package bus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPrefix is the topic prefix used when none is configured.
const DefaultPrefix = "modelfleet/v1"

// Per-device topic kinds: the last segment of {prefix}/devices/{id}/{kind}.
const (
	KindAssignment = "assignment"
	KindState      = "state"
	KindOnline     = "online"
	KindTelemetry  = "telemetry"
	KindEvents     = "events"
	KindInfer      = "infer"
)

// Topics builds topic names under one prefix. The zero value uses
// DefaultPrefix.
type Topics struct {
	prefix string
}

// NewTopics returns the topic names under prefix (DefaultPrefix when empty).
// Surrounding slashes are trimmed.
func NewTopics(prefix string) Topics {
	return Topics{prefix: strings.Trim(prefix, "/")}
}

// Prefix returns the topic prefix in use.
func (t Topics) Prefix() string {
	if t.prefix == "" {
		return DefaultPrefix
	}
	return t.prefix
}

// Root is where the hub publishes the signed root, retained.
func (t Topics) Root() string { return t.Prefix() + "/root" }

func (t Topics) device(id, kind string) string {
	return t.Prefix() + "/devices/" + id + "/" + kind
}

// Assignment is the device's signed assignment, retained, hub → agent.
func (t Topics) Assignment(device string) string { return t.device(device, KindAssignment) }

// State is the device's per-model state report, retained, agent → hub.
func (t Topics) State(device string) string { return t.device(device, KindState) }

// Online is "true"/"false", retained; the agent's last will sets "false".
func (t Topics) Online(device string) string { return t.device(device, KindOnline) }

// Telemetry carries periodic aggregates only, agent → hub.
func (t Topics) Telemetry(device string) string { return t.device(device, KindTelemetry) }

// Events carries discrete events (installed, rejected, rolled back), agent → hub.
func (t Topics) Events(device string) string { return t.device(device, KindEvents) }

// Infer is the request topic for model on device; requests carry reply_to.
func (t Topics) Infer(device, model string) string {
	return t.device(device, KindInfer) + "/" + model
}

// AllDevices returns the filter matching kind for every device, e.g.
// "modelfleet/v1/devices/+/state".
func (t Topics) AllDevices(kind string) string { return t.device("+", kind) }

// ParseDevice splits a per-device topic into the device ID and kind. For infer
// topics kind is KindInfer and model is the model name. ok is false when
// topic is not a device topic under this prefix.
func (t Topics) ParseDevice(topic string) (device, kind, model string, ok bool) {
	rest, found := strings.CutPrefix(topic, t.Prefix()+"/devices/")
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 2 && parts[0] != "" && parts[1] != KindInfer:
		return parts[0], parts[1], "", true
	case len(parts) == 3 && parts[0] != "" && parts[1] == KindInfer && parts[2] != "":
		return parts[0], KindInfer, parts[2], true
	}
	return "", "", "", false
}

// ErrBadName reports a device ID or model name that cannot be a topic segment.
var ErrBadName = errors.New("invalid name")

// ValidateName checks that s can be used as one topic segment: a device ID
// or a model name. Allowed: ASCII letters, digits, '.', '_', '-', 1 to 128
// characters. This keeps MQTT wildcards, separators and control characters
// out of topics and file names.
func ValidateName(s string) error {
	if s == "" || len(s) > 128 {
		return fmt.Errorf("%w: %q must be 1 to 128 characters", ErrBadName, s)
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return fmt.Errorf("%w: %q may contain only letters, digits, '.', '_' and '-'", ErrBadName, s)
		}
	}
	if s == "." || s == ".." {
		return fmt.Errorf("%w: %q is reserved", ErrBadName, s)
	}
	return nil
}

// HostPort returns the host:port a broker URL connects to, with its
// scheme's default port when it names none: 1883 for tcp://, 8883 for
// ssl://, tls:// and mqtts://, 80 for ws://, 443 for wss://.
func HostPort(broker string) (string, error) {
	u, err := url.Parse(broker)
	if err != nil || u.Hostname() == "" {
		return "", fmt.Errorf("broker URL %q does not parse: want tcp://host:1883 or ssl://host:8883", broker)
	}
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "ssl", "tls", "mqtts":
			port = "8883"
		case "ws":
			port = "80"
		case "wss":
			port = "443"
		default:
			port = "1883"
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}
