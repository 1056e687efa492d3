package testenv

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

const (
	// brokerReadyTimeout bounds how long Mosquitto may take to accept
	// connections after it was started.
	brokerReadyTimeout = 30 * time.Second
	// brokerMaxQueuedMessages replaces mosquitto's default of 1000 queued
	// messages per client (mosquitto #2196): a hub subscribing to the
	// retained state of many devices must get all of them.
	brokerMaxQueuedMessages = 100000
	// brokerMaxInflightMessages replaces the default of 20 outgoing QoS 1/2
	// messages in flight per client, which throttles load tests.
	brokerMaxInflightMessages = 1000
)

// Broker is a Mosquitto process started by Mosquitto for one test. Its
// fields describe it and must not be modified. Its methods must be called
// from the test's goroutine.
type Broker struct {
	// URL is the address for MQTT clients: tcp://127.0.0.1:PORT, or
	// ssl://127.0.0.1:PORT when TLS is on.
	URL string
	// Addr is the listener's host:port.
	Addr string
	// Dir is the broker's temporary directory, holding all files below.
	Dir string
	// ConfigFile is the generated mosquitto.conf.
	ConfigFile string
	// LogFile receives the broker's output across restarts.
	LogFile string
	// DataDir holds the persistence database (retained messages, sessions).
	DataDir string
	// PasswordFile is the generated password file, "" without WithUser.
	PasswordFile string
	// ACLFile is the ACL file, "" without WithACL.
	ACLFile string
	// PKI holds the CA and certificates when TLS is on, nil otherwise.
	PKI *PKI

	port         int
	cfg          brokerConfig
	clientCAFile string // the CA bundle of WithClientCA, "" without
	proc         *process
}

// BrokerOption configures the broker that Mosquitto starts.
type BrokerOption func(*brokerConfig)

type brokerConfig struct {
	anonymous   *bool
	userNames   []string // in the order given, for a stable password file
	users       map[string]string
	tls         bool
	requireCert bool
	acl         *string
	clientCAs   []string // extra PEM files of CAs whose client certificates are accepted
	extra       []string
	ports       func() (int, error) // chooses listen ports; tests inject conflicts
}

// WithUser adds a user with a password to the broker's password file. Once a
// user exists, clients without credentials are refused unless
// WithAnonymous(true) is also given. Repeat it for more users.
func WithUser(name, password string) BrokerOption {
	return func(c *brokerConfig) {
		if _, ok := c.users[name]; !ok {
			c.userNames = append(c.userNames, name)
		}
		c.users[name] = password
	}
}

// WithAnonymous sets allow_anonymous. The default is true without WithUser
// and false with it.
func WithAnonymous(allow bool) BrokerOption {
	return func(c *brokerConfig) { c.anonymous = &allow }
}

// WithTLS makes the listener speak TLS only, with a server certificate from
// a generated CA (Broker.PKI). Clients connect to Broker.URL (ssl://) with
// Broker.TLSConfig.
func WithTLS() BrokerOption {
	return func(c *brokerConfig) { c.tls = true }
}

// WithClientCertRequired turns on TLS and makes the broker refuse clients
// that do not present a certificate signed by Broker.PKI's CA
// (require_certificate true).
func WithClientCertRequired() BrokerOption {
	return func(c *brokerConfig) { c.tls, c.requireCert = true, true }
}

// WithClientCA makes the broker also accept client certificates signed by
// the CA in the PEM file caFile (a hub's device CA, say), besides those of
// Broker.PKI. It implies WithClientCertRequired. The file is read when the
// broker starts. Repeat it for more CAs.
func WithClientCA(caFile string) BrokerOption {
	return func(c *brokerConfig) {
		c.tls, c.requireCert = true, true
		c.clientCAs = append(c.clientCAs, caFile)
	}
}

// WithACL writes rules, in mosquitto's acl_file syntax, to Broker.ACLFile and
// enables it.
func WithACL(rules string) BrokerOption {
	return func(c *brokerConfig) { c.acl = &rules }
}

// WithConfig appends raw lines to the generated mosquitto.conf. They come
// after the listener line, so listener options such as
// use_identity_as_username apply to it.
func WithConfig(lines ...string) BrokerOption {
	return func(c *brokerConfig) { c.extra = append(c.extra, lines...) }
}

// Mosquitto starts a Mosquitto broker on a free loopback port for the test
// and stops it when the test ends. The broker persists retained messages and
// sessions in its temporary directory, so Restart keeps them. It returns once
// the broker answers an MQTT CONNECT. A missing mosquitto binary skips the
// test, or fails it when CI=true; a broker that does not start fails it with
// the tail of its log.
func Mosquitto(tb testing.TB, opts ...BrokerOption) *Broker {
	tb.Helper()
	bin := findBinary(tb, "mosquitto", "MODELFLEET_MOSQUITTO",
		[]string{"mosquitto", "/usr/sbin/mosquitto"},
		"install it with `apt-get install mosquitto` (`make deps`) or set MODELFLEET_MOSQUITTO to its path")
	cfg := brokerConfig{users: map[string]string{}, ports: freePort}
	for _, o := range opts {
		o(&cfg)
	}
	dir := tb.TempDir()
	b := &Broker{
		Dir:        dir,
		ConfigFile: filepath.Join(dir, "mosquitto.conf"),
		LogFile:    filepath.Join(dir, "mosquitto.log"),
		DataDir:    filepath.Join(dir, "data"),
		cfg:        cfg,
	}
	if err := b.prepare(); err != nil {
		tb.Fatalf("testenv: mosquitto: %v", err)
	}
	b.proc = &process{name: "mosquitto", bin: bin, args: []string{"-c", b.ConfigFile}, dir: dir, logPath: b.LogFile}
	tb.Cleanup(func() {
		b.proc.kill()
		if tb.Failed() {
			tb.Logf("testenv: mosquitto log %s (last %d lines):\n%s", b.LogFile, logTailLines, b.proc.logTail(logTailLines))
		}
	})

	if err := b.usePort(); err != nil {
		tb.Fatalf("testenv: mosquitto: %v", err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), brokerReadyTimeout)
	defer cancel()
	if err := launch(ctx, b.proc, b.probe, b.usePort); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return b
}

// TLSConfig returns a client TLS configuration that trusts the broker and
// presents PKI.Client, or nil when TLS is off. Each call returns a new value.
func (b *Broker) TLSConfig() *tls.Config {
	if b.PKI == nil {
		return nil
	}
	return b.PKI.ClientTLSConfig()
}

// PID returns the broker's process id, or 0 when it is not running. Load
// tests read its resource use from /proc/PID.
func (b *Broker) PID() int {
	if !b.proc.running() {
		return 0
	}
	return b.proc.cmd.Process.Pid
}

// Stop shuts the broker down with SIGTERM, which makes it save retained
// messages and sessions, and waits for it to exit. It does nothing when the
// broker is not running.
func (b *Broker) Stop(tb testing.TB) {
	tb.Helper()
	if err := b.proc.stop(stopGrace); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
}

// Kill ends the broker with SIGKILL, like a crash. The broker saves its
// persistence file only when stopped gracefully, so retained messages and
// sessions since the last Stop (or since the start) are lost.
func (b *Broker) Kill(tb testing.TB) {
	tb.Helper()
	b.proc.kill()
}

// Start starts a stopped broker again on the same port with the same
// configuration and data, and waits until it accepts connections.
func (b *Broker) Start(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), brokerReadyTimeout)
	defer cancel()
	// The port is fixed now; if something else holds it, wait a little for
	// it to go away rather than moving the broker.
	waitForPort := func() error { time.Sleep(250 * time.Millisecond); return nil }
	if err := launch(ctx, b.proc, b.probe, waitForPort); err != nil {
		tb.Fatalf("testenv: restart: %v", err)
	}
}

// Restart stops the broker gracefully and starts it again on the same port.
// Retained messages and persistent sessions (clean session false) survive;
// connected clients are disconnected and must reconnect.
func (b *Broker) Restart(tb testing.TB) {
	tb.Helper()
	b.Stop(tb)
	b.Start(tb)
}

// prepare writes the files that do not depend on the port.
func (b *Broker) prepare() error {
	if err := os.Mkdir(b.DataDir, 0o700); err != nil {
		return err
	}
	if len(b.cfg.userNames) > 0 {
		data, err := mosquittoPasswordFile(b.cfg.userNames, b.cfg.users)
		if err != nil {
			return err
		}
		b.PasswordFile = filepath.Join(b.Dir, "passwd")
		if err := writeFile(b.PasswordFile, data); err != nil {
			return err
		}
	}
	if b.cfg.acl != nil {
		b.ACLFile = filepath.Join(b.Dir, "acl")
		if err := writeFile(b.ACLFile, []byte(*b.cfg.acl)); err != nil {
			return err
		}
	}
	if b.cfg.tls {
		p, err := newPKI(filepath.Join(b.Dir, "pki"))
		if err != nil {
			return fmt.Errorf("generate certificates: %w", err)
		}
		b.PKI = p
		if len(b.cfg.clientCAs) > 0 {
			// One cafile holds every CA the listener trusts for clients.
			bundle, err := os.ReadFile(p.CAFile)
			if err != nil {
				return err
			}
			for _, f := range b.cfg.clientCAs {
				extra, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("client CA: %w", err)
				}
				bundle = append(append(bundle, '\n'), extra...)
			}
			b.clientCAFile = filepath.Join(b.Dir, "client-cas.pem")
			if err := writeFile(b.clientCAFile, bundle); err != nil {
				return err
			}
		}
	}
	return nil
}

// usePort chooses a new free port and rewrites the configuration for it.
func (b *Broker) usePort() error {
	port, err := b.cfg.ports()
	if err != nil {
		return err
	}
	b.port = port
	b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	scheme := "tcp"
	if b.PKI != nil {
		scheme = "ssl"
	}
	b.URL = scheme + "://" + b.Addr
	return writeFile(b.ConfigFile, joinLines(b.configLines()))
}

// configLines renders mosquitto.conf (mosquitto.conf(5), version 2.0).
func (b *Broker) configLines() []string {
	anonymous := len(b.cfg.userNames) == 0
	if b.cfg.anonymous != nil {
		anonymous = *b.cfg.anonymous
	}
	lines := []string{
		"# Generated by modelfleet internal/testenv for a single test.",
		"per_listener_settings false",
		"allow_anonymous " + strconv.FormatBool(anonymous),
		"persistence true",
		// persistence_location must end with a slash.
		"persistence_location " + b.DataDir + "/",
		"persistence_file mosquitto.db",
		"max_queued_messages " + strconv.Itoa(brokerMaxQueuedMessages),
		"max_inflight_messages " + strconv.Itoa(brokerMaxInflightMessages),
		"set_tcp_nodelay true",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
		"connection_messages true",
		"log_timestamp true",
		"log_timestamp_format %Y-%m-%dT%H:%M:%S",
	}
	if os.Geteuid() == 0 {
		// Started as root, mosquitto switches to the "mosquitto" user, which
		// cannot read the test's private temporary directory.
		lines = append(lines, "user root")
	}
	if b.PasswordFile != "" {
		lines = append(lines, "password_file "+b.PasswordFile)
	}
	if b.ACLFile != "" {
		lines = append(lines, "acl_file "+b.ACLFile)
	}
	lines = append(lines, fmt.Sprintf("listener %d 127.0.0.1", b.port))
	if p := b.PKI; p != nil {
		lines = append(lines,
			"cafile "+cmp.Or(b.clientCAFile, p.CAFile),
			"certfile "+p.Server.CertFile,
			"keyfile "+p.Server.KeyFile,
			"require_certificate "+strconv.FormatBool(b.cfg.requireCert),
		)
	}
	return append(lines, b.cfg.extra...)
}

// probe opens an MQTT 3.1.1 connection and waits for the CONNACK. Any return
// code, "not authorised" included, proves the broker is serving.
func (b *Broker) probe(ctx context.Context) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", b.Addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	// Reads ignore ctx; closing the connection ends them when ctx does.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	var conn net.Conn = raw
	if b.PKI != nil {
		tc := tls.Client(raw, b.PKI.ClientTLSConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		conn = tc
	}
	if _, err := conn.Write(mqttConnectPacket("testenv-probe")); err != nil {
		return err
	}
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	// MQTT 3.1.1 §3.2: CONNACK is type 2 with a remaining length of 2.
	if ack[0] != 0x20 || ack[1] != 0x02 {
		return errors.New("broker answered CONNECT with something other than CONNACK")
	}
	_, _ = conn.Write([]byte{0xe0, 0x00}) // DISCONNECT, §3.14
	return nil
}

// mqttConnectPacket encodes an MQTT 3.1.1 CONNECT (§3.1) with a clean
// session, a 10 s keep alive and no credentials.
func mqttConnectPacket(clientID string) []byte {
	variable := []byte{0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x0a}
	payload := append([]byte{byte(len(clientID) >> 8), byte(len(clientID))}, clientID...)
	// Short client IDs keep the remaining length below 128, one byte (§2.2.3).
	remaining := len(variable) + len(payload)
	pkt := append([]byte{0x10, byte(remaining)}, variable...)
	return append(pkt, payload...)
}
