package brokerconf_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/modelfleet/modelfleet/hub/brokerconf"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// waitTimeout is generous: it only bounds how long a test waits for a
// message that must arrive, never how fast anything has to be.
const waitTimeout = 30 * time.Second

var clientSeq atomic.Int64

// stream is one MQTT connection whose incoming messages, from every
// subscription, arrive on msgs in the order the broker sent them (paho calls
// the handler in order on its own goroutine; the channel is large enough
// that it never blocks in these tests).
type stream struct {
	name string
	c    paho.Client
	msgs chan paho.Message
}

// dial connects once, without retries, and returns the error the broker
// or the TLS handshake gave.
func dial(t *testing.T, url string, tlsCfg *tls.Config, user, password string) (*stream, error) {
	t.Helper()
	s := &stream{name: user, msgs: make(chan paho.Message, 1000)}
	o := paho.NewClientOptions().AddBroker(url).
		SetClientID(fmt.Sprintf("%s-%d", user, clientSeq.Add(1))).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetProtocolVersion(4).SetOrderMatters(true).SetConnectTimeout(waitTimeout).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { s.msgs <- m })
	if tlsCfg != nil {
		o.SetTLSConfig(tlsCfg)
	}
	if password != "" {
		o.SetUsername(user).SetPassword(password)
	}
	s.c = paho.NewClient(o)
	tok := s.c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		return nil, fmt.Errorf("connect %s: no answer", user)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.c.Disconnect(0) })
	return s, nil
}

// certClient connects with a client certificate for commonName issued by
// the broker's CA.
func certClient(t *testing.T, b *testenv.Broker, commonName string) *stream {
	t.Helper()
	kp := b.PKI.IssueClientCert(t, commonName)
	cfg := b.PKI.ClientTLSConfig()
	cfg.Certificates = []tls.Certificate{kp.Certificate}
	s, err := dial(t, b.URL, cfg, commonName, "")
	if err != nil {
		t.Fatalf("connect as %s: %v", commonName, err)
	}
	return s
}

func await(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("%s: no answer from the broker", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// subscribe subscribes and returns the SUBACK return code (0x80: refused).
func (s *stream) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	tok := s.c.Subscribe(filter, 1, nil)
	await(t, tok, s.name+" subscribe "+filter)
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func (s *stream) publish(t *testing.T, topic string, retained bool, payload string) {
	t.Helper()
	// QoS 1: the PUBACK arrives whether or not the ACL allowed the publish
	// (Mosquitto drops denied publishes silently), so it orders the publish
	// before whatever the test does next.
	await(t, s.c.Publish(topic, 1, retained, payload), s.name+" publish "+topic)
}

// until reads messages until one on topic with payload arrives and returns
// the messages before it. It fails the test after waitTimeout.
func (s *stream) until(t *testing.T, topic, payload string) []paho.Message {
	t.Helper()
	var before []paho.Message
	deadline := time.After(waitTimeout)
	for {
		select {
		case m := <-s.msgs:
			if m.Topic() == topic && string(m.Payload()) == payload {
				return before
			}
			before = append(before, m)
		case <-deadline:
			t.Fatalf("%s: no message %q on %s; got before: %v", s.name, payload, topic, describe(before))
		}
	}
}

func describe(ms []paho.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Topic()+"="+string(m.Payload()))
	}
	return out
}

// noneOn fails when any message in ms is on one of topics.
func noneOn(t *testing.T, who string, ms []paho.Message, topics ...string) {
	t.Helper()
	for _, m := range ms {
		for _, topic := range topics {
			if m.Topic() == topic {
				t.Errorf("%s received %s = %q: the ACL should have kept it away", who, m.Topic(), m.Payload())
			}
		}
	}
}

// securedBroker starts Mosquitto with the generated ACL and mosquitto.conf
// for certificate authentication, except that testenv chooses the port,
// the file locations and the certificates (a throwaway CA).
func securedBroker(t *testing.T, c brokerconf.Config) *testenv.Broker {
	t.Helper()
	files, err := brokerconf.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Mosquitto(t, testenv.WithClientCertRequired(), testenv.WithAnonymous(false),
		testenv.WithACL(string(files.ACL)),
		testenv.WithConfig(generatedSettings(files.MosquittoConf)...))
}

// testenvOwns are the mosquitto.conf options that name files, paths or the
// listen address: testenv sets them for its temporary directory and free
// port, and Mosquitto refuses a second value for most of them.
var testenvOwns = map[string]bool{
	"listener": true, "cafile": true, "certfile": true, "keyfile": true, "acl_file": true, "password_file": true,
	"persistence_location": true, "persistence_file": true, "log_timestamp_format": true,
}

// generatedSettings returns every setting of a generated mosquitto.conf
// except those testenvOwns, so the test broker runs with the generated
// configuration apart from file locations and the port. They follow
// testenv's listener line, as the generated listener options follow the
// generated one.
func generatedSettings(conf []byte) []string {
	var out []string
	for _, l := range strings.Split(string(conf), "\n") {
		key, _, _ := strings.Cut(l, " ")
		if l == "" || strings.HasPrefix(l, "#") || testenvOwns[key] {
			continue
		}
		out = append(out, l)
	}
	return out
}

func fleetConfig() brokerconf.Config {
	c := brokerconf.DefaultConfig()
	c.Bindings = []brokerconf.Binding{{
		Name:      "line 1 vibration",
		Devices:   []string{"dev-a"},
		Subscribe: []string{"factory/line1/vibration/+"},
		Publish:   []string{"factory/line1/anomaly/{device}", "factory/replies/#"},
	}}
	c.Clients = []brokerconf.Client{{
		Name:      "mes",
		Subscribe: []string{"factory/line1/anomaly/#", "factory/replies/#"},
		Publish:   []string{"factory/line1/vibration/+", bus.NewTopics(c.Prefix).AllDevices(bus.KindInfer) + "/#"},
	}}
	return c
}

func TestDeviceReadsOnlyItsOwnAssignment(t *testing.T) {
	t.Parallel()
	c := fleetConfig()
	b := securedBroker(t, c)
	topics := bus.NewTopics(c.Prefix)
	hub := certClient(t, b, "fleethub")
	hub.publish(t, topics.Root(), true, "root-1")
	hub.publish(t, topics.Assignment("dev-a"), true, "assign-a-1")
	hub.publish(t, topics.Assignment("dev-b"), true, "assign-b-1")

	a := certClient(t, b, "dev-a")
	// Mosquitto may grant these subscriptions (2.0.11 does); what matters is
	// that nothing dev-a may not read is delivered on them.
	t.Logf("SUBACK for dev-b's assignment: %#x", a.subscribe(t, topics.Assignment("dev-b")))
	a.subscribe(t, topics.AllDevices(bus.KindAssignment))
	a.subscribe(t, topics.Root())
	got := a.until(t, topics.Assignment("dev-a"), "assign-a-1")
	got = append(got, a.until(t, topics.Root(), "root-1")...)
	hub.publish(t, topics.Assignment("dev-b"), true, "assign-b-2")
	hub.publish(t, topics.Assignment("dev-a"), true, "assign-a-2")
	got = append(got, a.until(t, topics.Assignment("dev-a"), "assign-a-2")...)
	noneOn(t, "dev-a", got, topics.Assignment("dev-b"))

	// dev-b gets its own, live: the hub may publish any assignment.
	bdev := certClient(t, b, "dev-b")
	bdev.subscribe(t, topics.Assignment("dev-b"))
	bdev.until(t, topics.Assignment("dev-b"), "assign-b-2")
}

func TestDeviceCannotForgeReports(t *testing.T) {
	t.Parallel()
	c := fleetConfig()
	b := securedBroker(t, c)
	topics := bus.NewTopics(c.Prefix)
	hub := certClient(t, b, "fleethub")
	for _, kind := range []string{bus.KindState, bus.KindOnline, bus.KindEvents, bus.KindTelemetry, bus.KindAssignment} {
		hub.subscribe(t, topics.AllDevices(kind))
	}
	hub.subscribe(t, topics.Root())
	hub.subscribe(t, topics.AllDevices(bus.KindInfer)+"/#")
	hub.publish(t, topics.Assignment("dev-a"), true, "signed-by-hub")
	hub.until(t, topics.Assignment("dev-a"), "signed-by-hub")

	a := certClient(t, b, "dev-a")
	forged := []string{
		topics.State("dev-b"), topics.Online("dev-b"), topics.Events("dev-b"), topics.Telemetry("dev-b"),
		topics.Assignment("dev-a"), topics.Assignment("dev-b"), topics.Root(),
		topics.Infer("dev-b", "detector"),
	}
	for _, topic := range forged {
		a.publish(t, topic, true, "forged")
	}
	// dev-a's own reports do arrive, after anything published before them.
	a.publish(t, topics.State("dev-a"), true, "state-a")
	got := hub.until(t, topics.State("dev-a"), "state-a")
	for _, topic := range []string{topics.Online("dev-a"), topics.Events("dev-a"), topics.Telemetry("dev-a")} {
		a.publish(t, topic, false, "own-report")
		got = append(got, hub.until(t, topic, "own-report")...)
	}
	noneOn(t, "the hub", got, forged...)

	// The retained assignment is still the hub's.
	fresh := certClient(t, b, "dev-a")
	fresh.subscribe(t, topics.Assignment("dev-a"))
	fresh.until(t, topics.Assignment("dev-a"), "signed-by-hub")
}

func TestBindingTopicsArePerDevice(t *testing.T) {
	t.Parallel()
	c := fleetConfig()
	b := securedBroker(t, c)
	topics := bus.NewTopics(c.Prefix)
	hub := certClient(t, b, "fleethub")
	mes := certClient(t, b, "mes")
	mes.subscribe(t, "factory/line1/anomaly/#")
	a := certClient(t, b, "dev-a")
	if code := a.subscribe(t, "factory/line1/vibration/+"); code == 0x80 {
		t.Fatal("dev-a may not subscribe to its binding input")
	}
	bdev := certClient(t, b, "dev-b")
	bdev.subscribe(t, "factory/line1/vibration/+")
	bdev.subscribe(t, topics.Assignment("dev-b"))

	mes.publish(t, "factory/line1/vibration/s1", false, "sample")
	a.until(t, "factory/line1/vibration/s1", "sample")
	// Mosquitto routes a message when it receives it, before the PUBACK
	// that mes waited for: a sample for dev-b would be queued before this.
	hub.publish(t, topics.Assignment("dev-b"), false, "marker")
	noneOn(t, "dev-b", bdev.until(t, topics.Assignment("dev-b"), "marker"), "factory/line1/vibration/s1")
	bdev.publish(t, "factory/line1/anomaly/dev-a", false, "forged-by-b")
	bdev.publish(t, "factory/line1/anomaly/dev-b", false, "not-bound")
	a.publish(t, "factory/line1/anomaly/dev-a", false, "score")
	got := mes.until(t, "factory/line1/anomaly/dev-a", "score")
	noneOn(t, "mes", got, "factory/line1/anomaly/dev-a", "factory/line1/anomaly/dev-b")
}

// TestRevokedDeviceGetsNothing revokes a device in the ACL: it may still
// connect (its certificate is valid) but reads and writes nothing.
func TestRevokedDeviceGetsNothing(t *testing.T) {
	t.Parallel()
	c := fleetConfig()
	c.Revoked = []string{"dev-r"}
	b := securedBroker(t, c)
	topics := bus.NewTopics(c.Prefix)
	hub := certClient(t, b, "fleethub")
	hub.subscribe(t, topics.AllDevices(bus.KindState))
	hub.publish(t, topics.Assignment("dev-r"), true, "assign-r")
	hub.publish(t, topics.Root(), true, "root")
	r := certClient(t, b, "dev-r")
	r.subscribe(t, topics.Assignment("dev-r"))
	r.subscribe(t, topics.Root())
	r.subscribe(t, topics.State("dev-r"))
	r.publish(t, topics.State("dev-r"), false, "state-r")
	// dev-a's state reaches the hub; dev-r's, sent before, must not.
	a := certClient(t, b, "dev-a")
	a.publish(t, topics.State("dev-a"), false, "state-a")
	noneOn(t, "the hub", hub.until(t, topics.State("dev-a"), "state-a"), topics.State("dev-r"))
	// The retained assignment and root are sent right after the SUBACKs,
	// and the probe before the PUBACK of r's next publish: had any been
	// allowed, it would have arrived before that PUBACK.
	hub.publish(t, topics.State("dev-r"), false, "probe")
	hub.until(t, topics.State("dev-r"), "probe")
	r.publish(t, topics.Events("dev-r"), false, "sync")
	select {
	case m := <-r.msgs:
		t.Errorf("revoked device received %s = %q", m.Topic(), m.Payload())
	default:
	}
}

func TestClientWithoutValidCertificateCannotConnect(t *testing.T) {
	t.Parallel()
	b := securedBroker(t, fleetConfig())
	noCert := b.PKI.ClientTLSConfig()
	noCert.Certificates = nil
	other := testenv.NewPKI(t) // a CA the broker does not trust
	otherCert := b.PKI.ClientTLSConfig()
	otherCert.Certificates = []tls.Certificate{other.Client.Certificate}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"no client certificate", noCert},
		{"certificate from another CA", otherCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := dial(t, b.URL, tc.cfg, "fleethub", "")
			if err == nil {
				s.c.Disconnect(0)
				t.Fatal("connected")
			}
			t.Logf("refused as expected: %v", err)
		})
	}
	// Plain MQTT to the TLS port is no way in either.
	if _, err := dial(t, "tcp://"+b.Addr, nil, "fleethub", ""); err == nil {
		t.Fatal("plain-text connection accepted")
	}
}

func TestPasswordAuth(t *testing.T) {
	t.Parallel()
	c := brokerconf.DefaultConfig()
	c.Auth = brokerconf.AuthPassword
	c.Devices = []brokerconf.Device{{ID: "dev-a"}, {ID: "dev-b"}}
	files, err := brokerconf.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	if err := os.WriteFile(pwFile, files.PasswordFile, 0o600); err != nil {
		t.Fatal(err)
	}
	b := testenv.Mosquitto(t, testenv.WithTLS(), testenv.WithACL(string(files.ACL)),
		testenv.WithAnonymous(false),
		testenv.WithConfig(append(generatedSettings(files.MosquittoConf), "password_file "+pwFile)...))
	topics := bus.NewTopics(c.Prefix)

	if _, err := dial(t, b.URL, b.TLSConfig(), "dev-a", files.Passwords["dev-b"]); err == nil {
		t.Error("dev-a logged in with dev-b's password")
	}
	if _, err := dial(t, b.URL, b.TLSConfig(), "dev-c", "whatever"); err == nil {
		t.Error("unknown user logged in")
	}
	hub, err := dial(t, b.URL, b.TLSConfig(), "fleethub", files.Passwords["fleethub"])
	if err != nil {
		t.Fatalf("hub: %v", err)
	}
	a, err := dial(t, b.URL, b.TLSConfig(), "dev-a", files.Passwords["dev-a"])
	if err != nil {
		t.Fatalf("dev-a: %v", err)
	}
	hub.subscribe(t, topics.AllDevices(bus.KindState))
	a.publish(t, topics.State("dev-b"), true, "forged")
	a.publish(t, topics.State("dev-a"), true, "state-a")
	noneOn(t, "the hub", hub.until(t, topics.State("dev-a"), "state-a"), topics.State("dev-b"))
}
