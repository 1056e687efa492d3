package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/minio/minio-go/v7"
)

// waitTimeout bounds every wait for the broker or a message; nothing is
// asserted about how long a step takes.
const waitTimeout = 15 * time.Second

var clientSeq atomic.Int64

// connect opens a paho client to url; configure may add credentials or TLS.
func connect(t *testing.T, url string, configure func(*mqtt.ClientOptions)) (mqtt.Client, error) {
	t.Helper()
	opts := mqtt.NewClientOptions().
		AddBroker(url).
		SetClientID(fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), clientSeq.Add(1))).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitTimeout)
	if configure != nil {
		configure(opts)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		return nil, errors.New("connect: no answer")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func mustConnect(t *testing.T, url string, configure func(*mqtt.ClientOptions)) mqtt.Client {
	t.Helper()
	c, err := connect(t, url, configure)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	return c
}

// subscribe returns a channel that receives the messages on topic. The
// handler only hands messages over, so paho's goroutine never blocks.
func subscribe(t *testing.T, c mqtt.Client, topic string) <-chan mqtt.Message {
	t.Helper()
	ch := make(chan mqtt.Message, 16)
	tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case ch <- m:
		default:
		}
	})
	wait(t, "subscribe "+topic, tok)
	return ch
}

func publish(t *testing.T, c mqtt.Client, topic string, retained bool, payload string) {
	t.Helper()
	wait(t, "publish "+topic, c.Publish(topic, 1, retained, payload))
}

func wait(t *testing.T, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("%s: no answer from broker", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func receive(t *testing.T, ch <-chan mqtt.Message) mqtt.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no message arrived")
		return nil
	}
}

// roundTrip publishes on one connection and receives on another.
func roundTrip(t *testing.T, url string, configure func(*mqtt.ClientOptions)) {
	t.Helper()
	sub := mustConnect(t, url, configure)
	pub := mustConnect(t, url, configure)
	ch := subscribe(t, sub, "testenv/roundtrip")
	publish(t, pub, "testenv/roundtrip", false, "hello")
	if m := receive(t, ch); string(m.Payload()) != "hello" {
		t.Fatalf("payload = %q, want %q", m.Payload(), "hello")
	}
}

func TestMosquittoPublishSubscribe(t *testing.T) {
	t.Parallel()
	b := Mosquitto(t)
	if !strings.HasPrefix(b.URL, "tcp://127.0.0.1:") {
		t.Errorf("URL = %q, want tcp://127.0.0.1:PORT", b.URL)
	}
	conf, err := os.ReadFile(b.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"allow_anonymous true", "max_queued_messages 100000", "listener " + strconv.Itoa(b.port) + " 127.0.0.1"} {
		if !strings.Contains(string(conf), want+"\n") {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	roundTrip(t, b.URL, nil)
}

func TestMosquittoPassword(t *testing.T) {
	t.Parallel()
	b := Mosquitto(t, WithUser("alice", "correct horse"), WithUser("bob", "battery staple"))
	creds := func(user, pass string) func(*mqtt.ClientOptions) {
		return func(o *mqtt.ClientOptions) { o.SetUsername(user).SetPassword(pass) }
	}
	roundTrip(t, b.URL, creds("alice", "correct horse"))
	mustConnect(t, b.URL, creds("bob", "battery staple"))

	refused := []struct {
		name      string
		configure func(*mqtt.ClientOptions)
	}{
		{"wrong password", creds("alice", "battery staple")},
		{"unknown user", creds("mallory", "correct horse")},
		{"anonymous", nil},
	}
	for _, tc := range refused {
		_, err := connect(t, b.URL, tc.configure)
		if !errors.Is(err, packets.ErrorRefusedNotAuthorised) && !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
			t.Errorf("%s: connect error = %v, want a refusal", tc.name, err)
		}
	}
}

func TestMosquittoAnonymousBesideUsers(t *testing.T) {
	t.Parallel()
	b := Mosquitto(t, WithUser("alice", "pw"), WithAnonymous(true))
	mustConnect(t, b.URL, nil)
	if _, err := connect(t, b.URL, func(o *mqtt.ClientOptions) { o.SetUsername("alice").SetPassword("nope") }); err == nil {
		t.Error("wrong password accepted")
	}
}

func TestMosquittoTLSClientCerts(t *testing.T) {
	t.Parallel()
	b := Mosquitto(t, WithClientCertRequired())
	if !strings.HasPrefix(b.URL, "ssl://127.0.0.1:") {
		t.Errorf("URL = %q, want ssl://127.0.0.1:PORT", b.URL)
	}
	withTLS := func(cfg *tls.Config) func(*mqtt.ClientOptions) {
		return func(o *mqtt.ClientOptions) { o.SetTLSConfig(cfg) }
	}
	roundTrip(t, b.URL, withTLS(b.TLSConfig()))

	device := b.PKI.IssueClientCert(t, "device-1")
	if device.CertFile == b.PKI.Client.CertFile {
		t.Fatal("issued certificate reuses the default client's files")
	}
	cfg := b.TLSConfig()
	cfg.Certificates = []tls.Certificate{device.Certificate}
	mustConnect(t, b.URL, withTLS(cfg))

	noCert := b.TLSConfig()
	noCert.Certificates = nil
	otherCA := b.TLSConfig()
	otherCA.Certificates = []tls.Certificate{NewPKI(t).Client.Certificate}
	for name, cfg := range map[string]*tls.Config{"no client certificate": noCert, "certificate from another CA": otherCA} {
		if _, err := connect(t, b.URL, withTLS(cfg)); err == nil {
			t.Errorf("%s: connection accepted", name)
		}
	}
	untrusting := b.TLSConfig()
	untrusting.RootCAs = NewPKI(t).Pool
	if _, err := connect(t, b.URL, withTLS(untrusting)); err == nil {
		t.Error("client accepted a server certificate from an unknown CA")
	}
}

func TestMosquittoTLSWithoutClientCert(t *testing.T) {
	t.Parallel()
	b := Mosquitto(t, WithTLS())
	cfg := b.TLSConfig()
	cfg.Certificates = nil
	roundTrip(t, b.URL, func(o *mqtt.ClientOptions) { o.SetTLSConfig(cfg) })
}

func TestMosquittoACL(t *testing.T) {
	t.Parallel()
	b := Mosquitto(t,
		WithUser("alice", "pw"), WithUser("admin", "pw"),
		WithACL("user alice\ntopic readwrite alice/#\n\nuser admin\ntopic readwrite #\n"))
	login := func(user string) func(*mqtt.ClientOptions) {
		return func(o *mqtt.ClientOptions) { o.SetUsername(user).SetPassword("pw") }
	}
	alice := mustConnect(t, b.URL, login("alice"))
	admin := mustConnect(t, b.URL, login("admin"))
	// Mosquitto grants the subscription and filters at delivery. It forwards
	// one publisher's messages in order, so had the denied message been
	// delivered it would arrive before the allowed one.
	ch := subscribe(t, alice, "#")
	publish(t, admin, "bob/secret", false, "not for alice")
	publish(t, admin, "alice/in", false, "for alice")
	if m := receive(t, ch); m.Topic() != "alice/in" {
		t.Errorf("alice received %s %q first, want alice/in", m.Topic(), m.Payload())
	}
}

func TestMosquittoRestartKeepsRetainedAndSessions(t *testing.T) {
	t.Parallel()
	b := Mosquitto(t)
	addr := b.Addr

	persistent := func(id string) func(*mqtt.ClientOptions) {
		return func(o *mqtt.ClientOptions) { o.SetClientID(id).SetCleanSession(false) }
	}
	// A persistent session subscribes, then goes offline; a message queued
	// for it must survive the restart together with the retained one.
	offline := mustConnect(t, b.URL, persistent("testenv-offline"))
	subscribe(t, offline, "testenv/queued")
	offline.Disconnect(100)

	pub := mustConnect(t, b.URL, nil)
	publish(t, pub, "testenv/retained", true, "kept")
	publish(t, pub, "testenv/queued", false, "queued")
	pub.Disconnect(100)

	b.Restart(t)
	if b.Addr != addr {
		t.Fatalf("restart moved the broker from %s to %s", addr, b.Addr)
	}

	ch := make(chan mqtt.Message, 4)
	back := mustConnect(t, b.URL, func(o *mqtt.ClientOptions) {
		persistent("testenv-offline")(o)
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { ch <- m })
	})
	if m := receive(t, ch); m.Topic() != "testenv/queued" || string(m.Payload()) != "queued" {
		t.Errorf("queued message = %s %q", m.Topic(), m.Payload())
	}
	retained := subscribe(t, back, "testenv/retained")
	m := receive(t, retained)
	if string(m.Payload()) != "kept" || !m.Retained() {
		t.Errorf("after restart: payload %q retained %v, want %q retained", m.Payload(), m.Retained(), "kept")
	}
}

func TestMosquittoStopStart(t *testing.T) {
	t.Parallel()
	b := Mosquitto(t)
	b.Stop(t)
	b.Stop(t) // no-op
	if _, err := connect(t, b.URL, nil); err == nil {
		t.Fatal("connected to a stopped broker")
	}
	b.Start(t)
	roundTrip(t, b.URL, nil)
	b.Kill(t)
	b.Start(t)
	roundTrip(t, b.URL, nil)
}

// TestBrokersAreIsolated runs two brokers in one test: each keeps its own
// retained message on the same topic.
func TestBrokersAreIsolated(t *testing.T) {
	t.Parallel()
	a, b := Mosquitto(t), Mosquitto(t)
	if a.Addr == b.Addr || a.Dir == b.Dir {
		t.Fatalf("brokers share %s / %s", a.Addr, a.Dir)
	}
	for _, x := range []*Broker{a, b} {
		publish(t, mustConnect(t, x.URL, nil), "testenv/who", true, x.Addr)
	}
	for _, x := range []*Broker{a, b} {
		m := receive(t, subscribe(t, mustConnect(t, x.URL, nil), "testenv/who"))
		if string(m.Payload()) != x.Addr {
			t.Errorf("broker %s holds %q", x.Addr, m.Payload())
		}
	}
}

// heldPorts returns a port source whose first port is held by a listener of
// the test, so the first start loses the race for it.
func heldPorts(t *testing.T) (func() (int, error), int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	held := l.Addr().(*net.TCPAddr).Port
	var first atomic.Bool
	return func() (int, error) {
		if first.CompareAndSwap(false, true) {
			return held, nil
		}
		return freePort()
	}, held
}

// requireRetryLogged checks that the log shows a failed first start on a
// taken port followed by a second start.
func requireRetryLogged(t *testing.T, logFile string) {
	t.Helper()
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !portInUse(string(log)) || strings.Count(string(log), "=== testenv:") != 2 {
		t.Errorf("log does not show one retry after a taken port:\n%s", log)
	}
}

func TestMosquittoRetriesTakenPort(t *testing.T) {
	t.Parallel()
	ports, held := heldPorts(t)
	b := Mosquitto(t, func(c *brokerConfig) { c.ports = ports })
	if b.port == held {
		t.Fatalf("broker claims the held port %d", held)
	}
	requireRetryLogged(t, b.LogFile)
	roundTrip(t, b.URL, nil)
}

func TestMosquittoStartFailureShowsLog(t *testing.T) {
	t.Parallel()
	b := &Broker{Dir: t.TempDir()}
	b.LogFile = filepath.Join(b.Dir, "mosquitto.log")
	b.ConfigFile = filepath.Join(b.Dir, "mosquitto.conf")
	b.cfg = brokerConfig{ports: freePort, extra: []string{"no_such_option 1"}}
	if err := b.usePort(); err != nil {
		t.Fatal(err)
	}
	bin := findBinary(t, "mosquitto", "MODELFLEET_MOSQUITTO", []string{"mosquitto", "/usr/sbin/mosquitto"}, "")
	b.proc = &process{name: "mosquitto", bin: bin, args: []string{"-c", b.ConfigFile}, dir: b.Dir, logPath: b.LogFile}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	err := launch(ctx, b.proc, b.probe, b.usePort)
	if err == nil {
		b.proc.kill()
		t.Fatal("mosquitto started with an invalid config")
	}
	if !strings.Contains(err.Error(), "no_such_option") {
		t.Errorf("error does not show the log: %v", err)
	}
}

func TestPasswordHashMatchesMosquittoPasswd(t *testing.T) {
	t.Parallel()
	// Written by mosquitto_passwd 2.0.11 for password "s3cret pass".
	const line = "alice:$7$101$z+2Q+NhT3im2ZXPS$sylNxKvhg8Qh/9C7S4BvprZFhPbBEQ2kapZUTZDZc6vcSU981W2TaNntYFaAIh2EoDhP93LznMO30FlDxlOcxg=="
	want := strings.TrimPrefix(line, "alice:")
	salt, err := base64.StdEncoding.DecodeString(strings.Split(want, "$")[3])
	if err != nil {
		t.Fatal(err)
	}
	got, err := mosquittoPasswordHash("s3cret pass", salt, mosquittoPBKDF2Iterations)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("hash = %s\nwant   %s", got, want)
	}

	file, err := mosquittoPasswordFile([]string{"a", "b"}, map[string]string{"a": "x", "b": "y"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(file)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "a:$7$101$") || !strings.HasPrefix(lines[1], "b:$7$101$") {
		t.Errorf("password file:\n%s", file)
	}
	if _, err := mosquittoPasswordFile([]string{"a:b"}, nil); err == nil {
		t.Error("user name with ':' accepted")
	}
}

func TestMinIOPutGetRestart(t *testing.T) {
	t.Parallel()
	s := MinIO(t)
	ctx := t.Context()
	data := make([]byte, 3<<20+17)
	_, _ = rand.Read(data)
	const key = "models/demo/model.onnx"
	if _, err := s.Client.PutObject(ctx, s.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	get := func(c *minio.Client) []byte {
		t.Helper()
		obj, err := c.GetObject(ctx, s.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		defer obj.Close()
		b, err := io.ReadAll(obj)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return b
	}
	if !bytes.Equal(get(s.Client), data) {
		t.Fatal("object read back differs")
	}

	endpoint := s.Endpoint
	s.Restart(t)
	if s.Endpoint != endpoint {
		t.Fatalf("restart moved the server from %s to %s", endpoint, s.Endpoint)
	}
	if !bytes.Equal(get(s.Client), data) {
		t.Fatal("object differs after restart")
	}

	// An outage: requests fail while the server is down and work again after.
	s.Stop(t)
	outage, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := s.Client.StatObject(outage, s.Bucket, key, minio.StatObjectOptions{})
	cancel()
	if err == nil {
		t.Fatal("stat succeeded while the server was stopped")
	}
	s.Start(t)
	if _, err := s.Client.StatObject(ctx, s.Bucket, key, minio.StatObjectOptions{}); err != nil {
		t.Fatalf("stat after start: %v", err)
	}
}

func TestMinIORetriesTakenPort(t *testing.T) {
	t.Parallel()
	ports, held := heldPorts(t)
	s := startMinIO(t, ports)
	if s.Endpoint == net.JoinHostPort("127.0.0.1", strconv.Itoa(held)) {
		t.Fatalf("server claims the held port %d", held)
	}
	requireRetryLogged(t, s.LogFile)
	if ok, err := s.Client.BucketExists(t.Context(), s.Bucket); err != nil || !ok {
		t.Fatalf("bucket %s exists = %v, %v", s.Bucket, ok, err)
	}
}

// fakeTB records Skip and Fatal instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper()                   {}
func (f *fakeTB) Skip(args ...any)          { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatal(args ...any)         { f.fatal = fmt.Sprint(args...) }
func (f *fakeTB) Fatalf(s string, a ...any) { f.fatal = fmt.Sprintf(s, a...) }

func TestFindBinary(t *testing.T) {
	// t.Setenv rules out t.Parallel.
	missing := filepath.Join(t.TempDir(), "nothing-here")
	t.Setenv("MODELFLEET_TESTENV_NONE", "")

	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		f := &fakeTB{TB: t}
		if got := findBinary(f, "thing", "MODELFLEET_TESTENV_NONE", []string{missing, "modelfleet-no-such-binary"}, "run `make deps`"); got != "" {
			t.Errorf("CI=%q: found %q", ci, got)
		}
		msg := f.skipped
		if ci == "true" {
			msg = f.fatal
			if f.skipped != "" {
				t.Errorf("CI=true skipped instead of failing")
			}
		}
		if !strings.Contains(msg, "make deps") || !strings.Contains(msg, missing) {
			t.Errorf("CI=%q: message %q should name the paths and `make deps`", ci, msg)
		}
	}

	t.Setenv("CI", "")
	t.Setenv("MODELFLEET_TESTENV_NONE", missing)
	f := &fakeTB{TB: t}
	if got := findBinary(f, "thing", "MODELFLEET_TESTENV_NONE", []string{"sh"}, "run `make deps`"); got != "" || !strings.Contains(f.skipped, "MODELFLEET_TESTENV_NONE="+missing) {
		t.Errorf("env pointing nowhere: found %q, skip message %q", got, f.skipped)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MODELFLEET_TESTENV_NONE", self)
	if got := findBinary(t, "thing", "MODELFLEET_TESTENV_NONE", nil, ""); got != self {
		t.Errorf("env override: got %q, want %q", got, self)
	}

	if root := moduleRoot(); root == "" {
		t.Error("module root not found")
	} else if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Error(err)
	}
}
