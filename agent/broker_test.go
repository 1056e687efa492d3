package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// logBuffer collects log output for assertions and echoes it to the test log.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), substr)
}

// TestRefusedByBrokerKeepsServing rotates the device's MQTT password on the
// broker but not on the device: the restarted agent is refused (CONNACK
// "not authorised"), keeps serving the model installed before over HTTP,
// records the refusal for `fleetagent status`, says so in its log without
// repeating itself on every retry, and backs off between attempts.
func TestRefusedByBrokerKeepsServing(t *testing.T) {
	const current, stale = "current-password", "password-before-rotation"
	// The observing "hub" connects anonymously; the device must log in.
	h := newHarness(t, testenv.WithUser(device, current), testenv.WithAnonymous(true))
	h.cfg.MQTT.Username, h.cfg.MQTT.Password = device, current
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.waitState("v1 active", active("1.0.0"))
	if st := h.agent.BrokerStatus(); st.State != agent.BrokerConnected {
		t.Fatalf("broker state %q while connected", st.State)
	}
	h.stop()

	// The broker now expects `current`; the device still has `stale`.
	h.cfg.MQTT.Password = stale
	logs := &logBuffer{t: t}
	a := agent.New(h.cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent Run: %v", err)
			}
		}
	}
	defer stop()

	// Three refused attempts: with backoff that takes a few seconds.
	deadline := time.After(waitFor)
	for {
		st := a.BrokerStatus()
		if st.State == agent.BrokerRefused && st.FailedAttempts >= 3 {
			if !strings.Contains(st.LastError, "not Authorized") || st.Hint == "" {
				t.Errorf("status %+v: want the broker's refusal and a hint", st)
			}
			break
		}
		select {
		case <-deadline:
			t.Fatalf("no refusal recorded; status %+v", st)
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Local clients are still served by the model installed before.
	assertServes(t, a, "1.0.0", models.SeedV1)
	body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": mlp.InputName, "shape": []int{1, mlp.InputSize}, "datatype": "FP32", "data": window()}}})
	resp, err := http.Post("http://"+a.HTTPAddr()+"/v2/models/"+model+"/infer", "application/json", bytes.NewReader(body))
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP inference while refused by the broker: %s", resp.Status)
	}

	// What `fleetagent status` reads.
	onDisk, err := agent.ReadBrokerStatus(h.cfg.DataDir)
	must(t, err)
	if onDisk.State != agent.BrokerRefused || !strings.Contains(onDisk.LastError, "not Authorized") || onDisk.LastErrorAt == nil {
		t.Errorf("broker status file: %+v", onDisk)
	}
	// One line from the bus and one from the agent, however many attempts.
	if n := logs.count("refuse"); n != 2 {
		t.Errorf("%d log lines about the refusal after %d attempts, want 2", n, a.BrokerStatus().FailedAttempts)
	}

	// Fixed credentials: the agent connects and reports again.
	stop()
	if st, err := agent.ReadBrokerStatus(h.cfg.DataDir); err != nil || st.State != agent.BrokerStopped {
		t.Errorf("after stop: %+v, %v", st, err)
	}
	h.cfg.MQTT.Password = current
	h.start()
	v2 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "2.0.0", models.FileV2)
	h.publish(h.trust.Assignment(t, device, 2, v2))
	h.waitState("v2 active with the right password", active("2.0.0"))
	if st := h.agent.BrokerStatus(); st.State != agent.BrokerConnected || st.FailedAttempts != 0 {
		t.Errorf("after reconnecting: %+v", st)
	}
}
