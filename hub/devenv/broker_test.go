package devenv

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/bus"
)

// testLogger discards logs unless the test runs with -v.
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(&tWriter{t}, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w *tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// mustStartBroker starts a broker on a free loopback port, closed at the end
// of the test.
func mustStartBroker(tb testing.TB, dataDir string) *Broker {
	tb.Helper()
	b, err := StartBroker(tb.Context(), BrokerConfig{Addr: "127.0.0.1:0", DataDir: dataDir, Logger: testLogger(tb)})
	if err != nil {
		tb.Fatalf("StartBroker: %v", err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// mustConnect connects a bus client to b, closed at the end of the test.
func mustConnect(tb testing.TB, b *Broker, clientID string) *bus.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Second)
	defer cancel()
	cl, err := bus.Connect(ctx, bus.Config{Brokers: []string{b.URL()}, ClientID: clientID}, bus.Options{Logger: testLogger(tb)})
	if err != nil {
		tb.Fatalf("connect %s: %v", clientID, err)
	}
	tb.Cleanup(func() { cl.Close(nil) })
	return cl
}

// mustSubscribe subscribes cl to filter and returns the channel of messages.
func mustSubscribe(tb testing.TB, cl *bus.Client, filter string) <-chan bus.Message {
	tb.Helper()
	ch := make(chan bus.Message, 16)
	if err := cl.Subscribe(tb.Context(), filter, 1, func(m bus.Message) { ch <- m }); err != nil {
		tb.Fatalf("subscribe %s: %v", filter, err)
	}
	return ch
}

// receive waits for one message on ch.
func receive(tb testing.TB, ch <-chan bus.Message) bus.Message {
	tb.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		tb.Fatal("no message within 10s")
		return bus.Message{}
	}
}

func TestBrokerPubSubAndRetained(t *testing.T) {
	b := mustStartBroker(t, "")
	pub := mustConnect(t, b, "pub")
	early := mustSubscribe(t, mustConnect(t, b, "early"), "modelfleet/v1/devices/+/state")

	const topic = "modelfleet/v1/devices/d1/state"
	if err := pub.Publish(t.Context(), topic, 1, true, []byte(`{"model":"m1"}`)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if m := receive(t, early); m.Topic != topic || string(m.Payload) != `{"model":"m1"}` {
		t.Fatalf("live subscriber got %s %q", m.Topic, m.Payload)
	}

	// A subscriber arriving later gets the retained state.
	late := mustSubscribe(t, mustConnect(t, b, "late"), "modelfleet/v1/devices/+/state")
	m := receive(t, late)
	if m.Topic != topic || string(m.Payload) != `{"model":"m1"}` || !m.Retained {
		t.Fatalf("late subscriber got %s %q retained=%v, want the retained state", m.Topic, m.Payload, m.Retained)
	}
}

func TestBrokerRetainedSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b := mustStartBroker(t, dir)
	pub := mustConnect(t, b, "pub")
	const topic = "modelfleet/v1/devices/d2/state"
	if err := pub.Publish(t.Context(), topic, 1, true, []byte("v1")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	pub.Close(nil)
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	b2 := mustStartBroker(t, dir)
	m := receive(t, mustSubscribe(t, mustConnect(t, b2, "after-restart"), topic))
	if string(m.Payload) != "v1" || !m.Retained {
		t.Fatalf("after restart got %q retained=%v, want retained v1", m.Payload, m.Retained)
	}
}

func TestBrokerStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	b, err := StartBroker(ctx, BrokerConfig{Addr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("StartBroker: %v", err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		dctx, dcancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		cl, err := bus.Connect(dctx, bus.Config{Brokers: []string{b.URL()}, ClientID: "late"}, bus.Options{Logger: testLogger(t)})
		dcancel()
		if err != nil {
			break
		}
		cl.Close(nil)
		if time.Now().After(deadline) {
			t.Fatal("broker still accepts connections after its context ended")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close after context end: %v", err)
	}
}

func TestRefuseNonLoopback(t *testing.T) {
	tests := []struct {
		name        string
		addr        string
		allowRemote bool
		wantErr     error
	}{
		{name: "ipv4 loopback", addr: "127.0.0.1:1883"},
		{name: "ipv6 loopback", addr: "[::1]:1883"},
		{name: "localhost", addr: "localhost:0"},
		{name: "all interfaces", addr: ":1883", wantErr: ErrNotLoopback},
		{name: "unspecified", addr: "0.0.0.0:1883", wantErr: ErrNotLoopback},
		{name: "lan address", addr: "192.0.2.10:1883", wantErr: ErrNotLoopback},
		{name: "hostname", addr: "example.com:1883", wantErr: ErrNotLoopback},
		{name: "remote allowed", addr: "0.0.0.0:1883", allowRemote: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkListenAddr(tt.addr, tt.allowRemote)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("checkListenAddr(%q, %v) = %v, want %v", tt.addr, tt.allowRemote, err, tt.wantErr)
			}
		})
	}

	if _, err := StartBroker(t.Context(), BrokerConfig{Addr: ":0"}); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("StartBroker on :0 = %v, want ErrNotLoopback", err)
	}
	if _, err := StartS3(t.Context(), S3Config{Addr: ":0", DataDir: t.TempDir()}); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("StartS3 on :0 = %v, want ErrNotLoopback", err)
	}
}

func TestBrokerDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	mustStartBroker(t, dir)
	_, err := StartBroker(t.Context(), BrokerConfig{Addr: "127.0.0.1:0", DataDir: dir, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second broker on the same data dir = %v, want a 'locked' error", err)
	}
}
