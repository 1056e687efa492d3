package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Config configures a connection to the MQTT broker.
type Config struct {
	// Brokers are broker URLs tried in order: tcp://host:1883, ssl://host:8883,
	// ws://, wss://.
	Brokers []string `yaml:"brokers" json:"brokers"`
	// ClientID must be stable across restarts so the broker keeps the
	// persistent session (queued QoS 1 messages, subscriptions).
	ClientID string `yaml:"client_id" json:"client_id"`
	Username string `yaml:"username" json:"username,omitempty"`
	Password string `yaml:"password" json:"-"`
	// CAFile is a PEM bundle used to verify the broker; empty means the
	// system roots.
	CAFile string `yaml:"ca_file" json:"ca_file,omitempty"`
	// CertFile and KeyFile are the client certificate for mutual TLS.
	CertFile string `yaml:"cert_file" json:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file" json:"key_file,omitempty"`
	// KeepAliveSeconds is the MQTT keep-alive; 0 means 30.
	KeepAliveSeconds int `yaml:"keepalive_seconds" json:"keepalive_seconds,omitempty"`
	// MaxReconnectSeconds caps the reconnect backoff; 0 means 60.
	MaxReconnectSeconds int `yaml:"max_reconnect_seconds" json:"max_reconnect_seconds,omitempty"`
}

// Validate reports every problem in c at once, naming the fields.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: at least one broker URL is required"))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("client_id: required"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cert_file, key_file: both or neither must be set"))
	}
	return errors.Join(errs...)
}

// TLSConfig builds the client TLS configuration from the files in c. It
// returns nil when no TLS file is configured (system roots are then used for
// ssl:// URLs).
func (c Config) TLSConfig() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate found", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Message is one MQTT message.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
}

// Handler processes a message. It runs on a goroutine owned by the
// subscription, never on paho's network goroutine, so it may block; messages
// of one subscription are delivered in order.
type Handler func(Message)

// Options are the optional parts of a connection.
type Options struct {
	// Will is published by the broker when the connection is lost without a
	// clean disconnect.
	Will *Message
	// OnConnect runs (on its own goroutine) after every successful
	// (re)connection, after subscriptions were renewed.
	OnConnect func()
	// OnConnectError runs after every failed connection attempt, the first
	// connection's and reconnections', with the reason: a network or TLS
	// error, or the broker's refusal (see IsRefused). It must return
	// quickly.
	OnConnectError func(err error)
	// OnConnectionLost runs when an established connection drops.
	OnConnectionLost func(err error)
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
}

// IsRefused reports whether err means the broker, or its TLS layer,
// rejected this client: bad credentials, not authorised, an unknown or
// refused certificate. Retrying soon cannot help; the configuration must
// change (e.g. credentials rotated on the broker but not on the device).
func IsRefused(err error) bool {
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	return errors.Is(err, packets.ErrorRefusedNotAuthorised) ||
		errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
		errors.Is(err, packets.ErrorRefusedIDRejected) ||
		errors.As(err, &alert) || errors.As(err, &verify)
}

// connectLogEvery bounds how often an unchanged connection failure is
// logged again: a device refused for hours logs a line every few minutes,
// not one per attempt.
const connectLogEvery = 5 * time.Minute

// maxQueued bounds the per-subscription queue. QoS 1 messages are never
// dropped (the broker re-delivers unacknowledged messages only on reconnect,
// so dropping would lose them); QoS 0 messages beyond the bound are.
const maxQueued = 10000

type subscription struct {
	filter  string
	qos     byte
	handler Handler

	mu     sync.Mutex // guards all following fields
	queue  []Message
	wake   chan struct{}
	closed bool
}

// Client is a connected MQTT client with persistent session semantics:
// clean session off, auto-reconnect with backoff, and subscriptions renewed
// on every connection. It is safe for concurrent use.
type Client struct {
	c    paho.Client
	log  *slog.Logger
	opts Options

	mu   sync.Mutex // guards all following fields
	subs map[string]*subscription
	wg   sync.WaitGroup

	failLog struct {
		every time.Duration // set once by Connect

		mu       sync.Mutex // guards all following fields
		last     string     // the key of the last logged reason
		at       time.Time  // when it was logged
		attempts int        // failed attempts since then
	}
}

// Connect dials the broker and returns once connected or ctx ends. After the
// first connection the client reconnects on its own until Close.
func Connect(ctx context.Context, cfg Config, opts Options) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt config: %w", err)
	}
	tlsCfg, err := cfg.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("mqtt tls: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cl := &Client{log: log.With("component", "mqtt"), opts: opts, subs: map[string]*subscription{}}
	cl.failLog.every = connectLogEvery

	keepAlive := time.Duration(cfg.KeepAliveSeconds) * time.Second
	if keepAlive <= 0 {
		keepAlive = 30 * time.Second
	}
	maxReconnect := time.Duration(cfg.MaxReconnectSeconds) * time.Second
	if maxReconnect <= 0 {
		maxReconnect = 60 * time.Second
	}
	po := paho.NewClientOptions()
	for _, b := range cfg.Brokers {
		po.AddBroker(b)
	}
	po.SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetCleanSession(false). // keep queued messages and subscriptions across reconnects
		SetResumeSubs(true).
		SetAutoReconnect(true).
		// The first connection is retried by connectLoop, which backs off
		// when the broker refuses us; reconnections by paho, with backoff.
		SetConnectRetry(false).
		SetMaxReconnectInterval(maxReconnect).
		SetKeepAlive(keepAlive).
		SetPingTimeout(10 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		// In order, on paho's goroutine: our callback only appends to the
		// subscription's queue and returns, so it cannot stall pings (paho #453).
		SetOrderMatters(true).
		SetProtocolVersion(4)
	if tlsCfg != nil {
		po.SetTLSConfig(tlsCfg)
	}
	if w := opts.Will; w != nil {
		po.SetBinaryWill(w.Topic, w.Payload, w.QoS, w.Retained)
	}
	po.SetOnConnectHandler(func(paho.Client) { go cl.onConnect() })
	po.SetConnectionLostHandler(func(_ paho.Client, err error) {
		cl.log.Warn("connection lost; reconnecting", "err", err)
		if opts.OnConnectionLost != nil {
			opts.OnConnectionLost(err)
		}
	})
	po.SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
		if f, ok := n.(paho.ConnectionNotificationFailed); ok {
			cl.connectFailed(f.Reason, cfg.Brokers)
		}
	})
	po.SetReconnectingHandler(func(_ paho.Client, o *paho.ClientOptions) {
		cl.log.Info("reconnecting to broker")
	})
	cl.c = paho.NewClient(po)

	if err := cl.connectLoop(ctx, maxReconnect); err != nil {
		cl.c.Disconnect(0)
		return nil, fmt.Errorf("mqtt connect %v: %w", cfg.Brokers, err)
	}
	return cl, nil
}

// connectLoop tries to connect until it succeeds or ctx ends. An
// unreachable broker is tried again every second; a broker that refuses the
// client (IsRefused) with a doubling delay up to maxDelay, so a device with
// stale credentials does not hammer the broker.
func (cl *Client) connectLoop(ctx context.Context, maxDelay time.Duration) error {
	delay := time.Second
	for {
		err := wait(ctx, cl.c.Connect())
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if IsRefused(err) {
			delay = min(2*delay, maxDelay)
		} else {
			delay = time.Second
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// connectFailed reports a failed connection attempt: to OnConnectError,
// and to the log when the reason changed or connectLogEvery passed.
func (cl *Client) connectFailed(err error, brokers []string) {
	if cl.opts.OnConnectError != nil {
		cl.opts.OnConnectError(err)
	}
	// A refusal is logged again when its reason changes; network errors
	// count as one reason, as their text changes with every attempt
	// (ephemeral ports).
	key := "unreachable"
	if IsRefused(err) {
		key = err.Error()
	}
	fl := &cl.failLog
	fl.mu.Lock()
	fl.attempts++
	now := time.Now()
	show := key != fl.last || now.Sub(fl.at) >= fl.every
	attempts := fl.attempts
	if show {
		fl.last, fl.at, fl.attempts = key, now, 0
	}
	fl.mu.Unlock()
	if !show {
		return
	}
	if IsRefused(err) {
		cl.log.Error("the broker refused the connection; check this client's credentials (user name and password, or client certificate) against the broker's; retrying with backoff",
			"brokers", brokers, "err", err, "attempts", attempts)
		return
	}
	cl.log.Warn("cannot connect to the broker; retrying", "brokers", brokers, "err", err, "attempts", attempts)
}

func (cl *Client) onConnect() {
	cl.log.Info("connected to broker")
	cl.failLog.mu.Lock()
	cl.failLog.last, cl.failLog.attempts = "", 0 // the next failure is news
	cl.failLog.mu.Unlock()
	cl.mu.Lock()
	subs := make([]*subscription, 0, len(cl.subs))
	for _, s := range cl.subs {
		subs = append(subs, s)
	}
	cl.mu.Unlock()
	for _, s := range subs {
		if err := cl.subscribe(context.Background(), s); err != nil {
			cl.log.Error("renew subscription", "filter", s.filter, "err", err)
		}
	}
	if cl.opts.OnConnect != nil {
		cl.opts.OnConnect()
	}
}

func (cl *Client) subscribe(ctx context.Context, s *subscription) error {
	tok := cl.c.Subscribe(s.filter, s.qos, func(_ paho.Client, m paho.Message) {
		s.push(Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retained: m.Retained()}, cl.log)
	})
	return wait(ctx, tok)
}

// Subscribe registers handler for filter and subscribes now; the subscription
// is renewed after every reconnection. Subscribing to the same filter again
// replaces nothing and returns an error.
func (cl *Client) Subscribe(ctx context.Context, filter string, qos byte, handler Handler) error {
	s := &subscription{filter: filter, qos: qos, handler: handler, wake: make(chan struct{}, 1)}
	cl.mu.Lock()
	if _, dup := cl.subs[filter]; dup {
		cl.mu.Unlock()
		return fmt.Errorf("mqtt subscribe %s: already subscribed", filter)
	}
	cl.subs[filter] = s
	cl.wg.Add(1)
	cl.mu.Unlock()
	go func() {
		defer cl.wg.Done()
		s.run()
	}()
	if err := cl.subscribe(ctx, s); err != nil {
		// Not registered: the caller may try again.
		cl.mu.Lock()
		if cl.subs[filter] == s {
			delete(cl.subs, filter)
		}
		cl.mu.Unlock()
		s.close()
		return fmt.Errorf("mqtt subscribe %s: %w", filter, err)
	}
	return nil
}

// Unsubscribe removes the subscriptions to filters: they are no longer
// renewed on reconnect, their handlers receive nothing more, and the broker
// is told. Unknown filters are ignored.
func (cl *Client) Unsubscribe(ctx context.Context, filters ...string) error {
	var gone []string
	cl.mu.Lock()
	for _, f := range filters {
		if s, ok := cl.subs[f]; ok {
			delete(cl.subs, f)
			s.close()
			gone = append(gone, f)
		}
	}
	cl.mu.Unlock()
	if len(gone) == 0 {
		return nil
	}
	if err := wait(ctx, cl.c.Unsubscribe(gone...)); err != nil {
		return fmt.Errorf("mqtt unsubscribe %v: %w", gone, err)
	}
	return nil
}

// Publish sends payload to topic and waits for the broker's acknowledgement
// (QoS 1) or for the message to be written (QoS 0).
func (cl *Client) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	if err := wait(ctx, cl.c.Publish(topic, qos, retained, payload)); err != nil {
		return fmt.Errorf("mqtt publish %s: %w", topic, err)
	}
	return nil
}

// IsConnected reports whether the client is connected right now.
func (cl *Client) IsConnected() bool { return cl.c.IsConnectionOpen() }

// Close publishes final (if not nil, e.g. "online=false") and disconnects
// cleanly, then stops the subscription goroutines after they drain.
func (cl *Client) Close(final *Message) {
	if final != nil && cl.c.IsConnectionOpen() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = cl.Publish(ctx, final.Topic, final.QoS, final.Retained, final.Payload)
		cancel()
	}
	cl.c.Disconnect(250)
	cl.mu.Lock()
	for _, s := range cl.subs {
		s.close()
	}
	cl.mu.Unlock()
	cl.wg.Wait()
}

func wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *subscription) push(m Message, log *slog.Logger) {
	s.mu.Lock()
	if s.closed || (len(s.queue) >= maxQueued && m.QoS == 0) {
		s.mu.Unlock()
		if !s.closed {
			log.Warn("subscriber too slow; dropped QoS 0 message", "topic", m.Topic)
		}
		return
	}
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) run() {
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		closed := s.closed
		s.mu.Unlock()
		for _, m := range batch {
			s.handler(m)
		}
		if closed && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			<-s.wake
		}
	}
}
