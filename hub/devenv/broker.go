package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultBrokerAddr is the listen address of the embedded broker when
// BrokerConfig.Addr is empty: the standard MQTT port on loopback.
const DefaultBrokerAddr = "127.0.0.1:1883"

// brokerStoreFile is the bolt database, under BrokerConfig.DataDir, holding
// retained messages, persistent sessions and queued QoS 1/2 messages.
const brokerStoreFile = "mqtt.bolt"

// Limits of the embedded broker, raised above mochi's defaults because the
// hub holds one connection that subscribes to the retained state of every
// device and receives their telemetry: Mosquitto's default queue of 1000
// (mosquitto #2196) and mochi's 8192 would drop part of the retained replay
// of a large dev fleet.
const (
	// maxClientWritesPending is the per-client outbound queue (a channel of
	// pointers, so 64 Ki entries cost 512 KiB per client).
	maxClientWritesPending = 64 * 1024
	// maxInflight is the most QoS 1/2 messages kept per client (uint16 max).
	maxInflight = 65535
	// receiveMaximum is how many unacknowledged QoS 1/2 messages a client may
	// send before the broker disconnects it.
	receiveMaximum = 65535
	// retainSeconds overrides mochi's default of deleting retained messages
	// after 24 hours: device state is retained for as long as the device
	// lives, as with Mosquitto. About 100 years.
	retainSeconds = 100 * 365 * 24 * 60 * 60
)

// BrokerConfig configures the embedded MQTT broker.
type BrokerConfig struct {
	// Addr is the TCP listen address, host:port. Empty means
	// DefaultBrokerAddr; port 0 picks a free port (see Broker.URL).
	Addr string
	// AllowRemote permits a non-loopback Addr. The broker authenticates
	// nobody, so only set this on a trusted network.
	AllowRemote bool
	// DataDir, when set, keeps retained messages, persistent sessions and
	// queued messages in DataDir/mqtt.bolt across restarts. Empty means
	// in memory: everything, retained device state included, is lost when
	// the broker stops.
	DataDir string
	// Logger receives the broker's logs with component=mqtt-broker; nil
	// means slog.Default().
	Logger *slog.Logger
}

// Broker is a running embedded MQTT broker (MQTT 3.1, 3.1.1 and 5). It is
// safe for concurrent use.
type Broker struct {
	srv  *mqtt.Server
	addr string
	log  *slog.Logger

	stop      func() bool // detaches the context watcher
	closeOnce sync.Once
	closeErr  error
}

// StartBroker starts an MQTT broker listening on cfg.Addr that accepts every
// client and topic. It returns once the listener is bound; the broker runs
// until ctx ends or Close is called. It returns an error wrapping
// ErrNotLoopback for a non-loopback address without AllowRemote.
func StartBroker(ctx context.Context, cfg BrokerConfig) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultBrokerAddr
	}
	if err := checkListenAddr(cfg.Addr, cfg.AllowRemote); err != nil {
		return nil, fmt.Errorf("mqtt broker: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mqtt broker: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = slog.New(firstStartQuiet{logger.Handler()}).With("component", "mqtt-broker")

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = maxClientWritesPending
	caps.MaximumInflight = maxInflight
	caps.ReceiveMaximum = receiveMaximum
	caps.MaximumMessageExpiryInterval = retainSeconds
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       logger,
		// $SYS topics are refreshed every 10 s rather than every second:
		// nothing in modelfleet reads them.
		SysTopicResendInterval: 10,
	})
	b := &Broker{srv: srv, log: logger}

	// Development only: every client may connect and use every topic.
	// Loopback binding (checked above) is what keeps this safe.
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, b.abort(fmt.Errorf("mqtt broker: add auth hook: %w", err))
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, b.abort(fmt.Errorf("mqtt broker: create data dir: %w", err))
		}
		path := filepath.Join(cfg.DataDir, brokerStoreFile)
		err := srv.AddHook(new(bolt.Hook), &bolt.Options{
			Path:    path,
			Options: &bbolt.Options{Timeout: time.Second},
		})
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, b.abort(fmt.Errorf("mqtt broker: %s is locked: is another fleethub dev using data dir %s?", path, cfg.DataDir))
		}
		if err != nil {
			return nil, b.abort(fmt.Errorf("mqtt broker: open store %s: %w", path, err))
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, b.abort(fmt.Errorf("mqtt broker: listen on %s: %w", cfg.Addr, err))
	}
	b.addr = tcp.Address() // the bound address, with the real port for :0
	// Serve restores the store, then starts the accept loop and the event
	// loop in goroutines that Close ends.
	if err := srv.Serve(); err != nil {
		return nil, b.abort(fmt.Errorf("mqtt broker: serve: %w", err))
	}
	b.stop = context.AfterFunc(ctx, func() { _ = b.Close() })
	logger.Info("embedded mqtt broker listening", "url", b.URL(), "persistent", cfg.DataDir != "")
	return b, nil
}

// abort releases what a failed StartBroker acquired and returns err.
func (b *Broker) abort(err error) error {
	_ = b.srv.Close()
	return err
}

// URL returns the broker URL for clients, tcp://host:port, with the actual
// port when the configured one was 0.
func (b *Broker) URL() string { return "tcp://" + b.addr }

// Addr returns the bound listen address, host:port.
func (b *Broker) Addr() string { return b.addr }

// Close disconnects every client, stops the broker and closes its store. It
// is safe to call more than once; later calls return the first result.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		if b.stop != nil {
			b.stop()
		}
		b.closeErr = b.srv.Close()
		b.log.Info("embedded mqtt broker stopped")
	})
	return b.closeErr
}
