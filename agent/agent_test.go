package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/internal/testenv"
	"github.com/modelfleet/modelfleet/manifest"
)

const (
	device = "edge-1"
	model  = "vibration-anomaly"
	// waitFor bounds every wait for the agent; generous for -race on 2 cores.
	waitFor = 60 * time.Second
)

// harness is a broker, S3, a trust root, an observer client standing in for
// the hub, and the agent under test.
type harness struct {
	t      *testing.T
	broker *testenv.Broker
	s3     *testenv.ObjectStore
	trust  *fleettest.Trust
	cfg    agent.Config
	hub    *bus.Client
	topics bus.Topics

	mu        sync.Mutex // guards all following fields
	state     report.State
	events    []report.Event
	telemetry []report.Telemetry
	notify    chan struct{}

	agent *agent.Agent
	stop  func()
}

func newHarness(t *testing.T, brokerOpts ...testenv.BrokerOption) *harness {
	t.Helper()
	runtimetest.Init(t)
	h := &harness{
		t:      t,
		broker: testenv.Mosquitto(t, brokerOpts...),
		s3:     testenv.MinIO(t),
		trust:  fleettest.NewTrust(t),
		topics: bus.NewTopics(""),
		notify: make(chan struct{}, 1),
	}
	dir := t.TempDir()
	h.cfg = agent.DefaultConfig()
	h.cfg.DeviceID = device
	h.cfg.MQTT.Brokers = []string{h.broker.URL}
	h.cfg.S3 = agent.S3Config{Endpoint: h.s3.Endpoint, Region: h.s3.Region, AccessKey: h.s3.AccessKey, SecretKey: h.s3.SecretKey, Insecure: true}
	h.cfg.DataDir = filepath.Join(dir, "data")
	h.cfg.TrustRoot = h.trust.WriteRoot(t, dir)
	h.cfg.Fetch.RetryBaseMillis, h.cfg.Fetch.RetryMaxMillis = 50, 500
	h.cfg.Serving.HTTPAddr = "127.0.0.1:0"
	h.cfg.TelemetryIntervalSeconds = 1

	ctx := context.Background()
	hub, err := bus.Connect(ctx, bus.Config{Brokers: []string{h.broker.URL}, ClientID: "test-hub-" + t.Name()}, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close(nil) })
	h.hub = hub
	observe(t, h, h.topics.State(device), 1, func(s report.State) { h.state = s })
	observe(t, h, h.topics.Events(device), 1, func(e report.Event) { h.events = append(h.events, e) })
	observe(t, h, h.topics.Telemetry(device), 0, func(tm report.Telemetry) { h.telemetry = append(h.telemetry, tm) })
	return h
}

// observe decodes every payload on topic as a T and records it with keep,
// under the harness lock, then wakes the waiters.
func observe[T any](t *testing.T, h *harness, topic string, qos byte, keep func(T)) {
	t.Helper()
	must(t, h.hub.Subscribe(context.Background(), topic, qos, func(m bus.Message) {
		var v T
		if err := json.Unmarshal(m.Payload, &v); err != nil {
			t.Errorf("%s payload: %v", topic, err)
		}
		h.mu.Lock()
		keep(v)
		h.mu.Unlock()
		h.poke()
	}))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (h *harness) poke() {
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// start runs the agent in-process until the test ends or stopAgent.
func (h *harness) start() {
	h.t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a := agent.New(h.cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.agent = a
	h.stop = func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("agent Run: %v", err)
		}
		h.stop = nil
	}
	h.t.Cleanup(func() {
		if h.stop != nil {
			h.stop()
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (h *harness) publish(raw []byte) {
	h.t.Helper()
	must(h.t, h.hub.Publish(context.Background(), h.topics.Assignment(device), 1, true, raw))
}

// waitState waits until the reported state satisfies ok.
func (h *harness) waitState(what string, ok func(report.State) bool) report.State {
	h.t.Helper()
	deadline := time.After(waitFor)
	for {
		h.mu.Lock()
		s := h.state
		h.mu.Unlock()
		if s.Models != nil && ok(s) {
			return s
		}
		select {
		case <-h.notify:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			h.t.Fatalf("timed out waiting for state: %s; last state: %+v", what, s)
		}
	}
}

// waitEvent waits for an event satisfying ok, received after index from.
func (h *harness) waitEvent(what string, from int, ok func(report.Event) bool) report.Event {
	h.t.Helper()
	deadline := time.After(waitFor)
	for {
		h.mu.Lock()
		evs := append([]report.Event(nil), h.events[min(from, len(h.events)):]...)
		h.mu.Unlock()
		for _, e := range evs {
			if ok(e) {
				return e
			}
		}
		select {
		case <-h.notify:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			h.t.Fatalf("timed out waiting for event: %s; events: %+v", what, evs)
		}
	}
}

func (h *harness) eventCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.events)
}

func active(version string) func(report.State) bool {
	return func(s report.State) bool {
		m, ok := s.Models[model]
		return ok && m.Version == version && m.Phase == "active" && m.Pending == ""
	}
}

// window is a deterministic input for the example model.
func window() []float32 {
	w := make([]float32, mlp.InputSize)
	for i := range w {
		w[i] = float32(math.Sin(float64(i) / 3))
	}
	return w
}

// assertServes checks that the agent answers with version and the score of
// the weights of seed.
func assertServes(t *testing.T, a *agent.Agent, version string, seed uint64) {
	t.Helper()
	in := window()
	out, got, err := a.Infer(context.Background(), model, map[string]runtime.Tensor{mlp.InputName: runtime.NewTensor([]int64{1, mlp.InputSize}, in)})
	if err != nil {
		t.Fatalf("infer: %v", err)
	}
	if got != version {
		t.Fatalf("served by version %s, want %s", got, version)
	}
	score := out[mlp.OutputName].Float32()[0]
	want := mlp.Reference(mlp.NewWeights(seed), in, 1)[0]
	if math.Abs(float64(score-want)) > 1e-5 {
		t.Fatalf("score %v, want %v (weights of seed %d)", score, want, seed)
	}
}

func TestInstallAndUpgrade(t *testing.T) {
	h := newHarness(t)
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.waitState("v1 active", active("1.0.0"))
	assertServes(t, h.agent, "1.0.0", models.SeedV1)
	h.waitEvent("installed v1", 0, func(e report.Event) bool { return e.Type == report.EventInstalled && e.Version == "1.0.0" })

	v2 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "2.0.0", models.FileV2)
	h.publish(h.trust.Assignment(t, device, 2, v2))
	s := h.waitState("v2 active", active("2.0.0"))
	if s.Models[model].Previous != "1.0.0" {
		t.Errorf("previous = %q, want 1.0.0 kept for rollback", s.Models[model].Previous)
	}
	assertServes(t, h.agent, "2.0.0", models.SeedV2)

	// Removing the model from the assignment unloads it.
	from := h.eventCount()
	h.publish(h.trust.Assignment(t, device, 3))
	h.waitEvent("removed", from, func(e report.Event) bool { return e.Type == report.EventRemoved && e.Model == model })
	if _, _, err := h.agent.Infer(context.Background(), model, nil); !errors.Is(err, agent.ErrNoModel) {
		t.Fatalf("infer after removal: %v, want ErrNoModel", err)
	}
}

// TestOfflineConvergence publishes the assignment while the agent is not
// running: the retained message makes it converge when it starts.
func TestOfflineConvergence(t *testing.T) {
	h := newHarness(t)
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.start()
	h.waitState("v1 active", active("1.0.0"))
	assertServes(t, h.agent, "1.0.0", models.SeedV1)
}

// TestRestartServesWithoutHub restarts the agent while the broker is down:
// it serves the persisted active model at once.
func TestRestartServesWithoutHub(t *testing.T) {
	h := newHarness(t)
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.waitState("v1 active", active("1.0.0"))
	h.stop()

	h.broker.Stop(t)
	h.start()
	deadline := time.Now().Add(waitFor)
	for {
		_, _, err := h.agent.Infer(context.Background(), model, map[string]runtime.Tensor{mlp.InputName: runtime.NewTensor([]int64{1, mlp.InputSize}, window())})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted agent does not serve without the broker: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	assertServes(t, h.agent, "1.0.0", models.SeedV1)

	// When the broker comes back the agent reconnects, reports, and takes
	// new assignments.
	h.broker.Start(t)
	v2 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "2.0.0", models.FileV2)
	h.publish(h.trust.Assignment(t, device, 2, v2))
	h.waitState("v2 active after broker restart", active("2.0.0"))
}

// TestRejections sends one bad document after another to an agent serving
// v1; each is refused with an event naming the reason and v1 keeps serving.
func TestRejections(t *testing.T) {
	h := newHarness(t)
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 10, v1))
	h.waitState("v1 active", active("1.0.0"))
	s3, bucket := h.s3.Client, h.s3.Bucket
	seq := uint64(10)
	next := func() uint64 { seq++; return seq }

	tests := []struct {
		name string
		doc  func() []byte
		// wantEvent is the event type; wantReason a fragment of its reason.
		wantEvent, wantReason string
		wantPhase             string
	}{
		{
			name: "tampered manifest",
			doc: func() []byte {
				m := h.trust.Publish(t, s3, bucket, model, "2.0.0", models.FileV2)
				return h.trust.Assignment(t, device, next(), tamper(t, m))
			},
			wantEvent: report.EventRejected, wantReason: manifest.ErrBadSignature.Error(),
		},
		{
			name:      "wrong device",
			doc:       func() []byte { return h.trust.Assignment(t, "edge-2", next(), v1) },
			wantEvent: report.EventRejected, wantReason: manifest.ErrWrongDevice.Error(),
		},
		{
			name:      "replayed sequence",
			doc:       func() []byte { return h.trust.Assignment(t, device, 5, v1) },
			wantEvent: report.EventRejected, wantReason: manifest.ErrRollback.Error(),
		},
		{
			name: "expired",
			doc: func() []byte {
				a := fleettest.AssignmentDoc(device, next(), v1)
				a.Issued, a.Expires = time.Now().Add(-3*time.Hour).UTC().Truncate(time.Second), time.Now().Add(-2*time.Hour).UTC().Truncate(time.Second)
				return fleettest.Sign(t, a, h.trust.Director)
			},
			wantEvent: report.EventRejected, wantReason: manifest.ErrExpired.Error(),
		},
		{
			name: "signed by the release key instead of the director",
			doc: func() []byte {
				return fleettest.Sign(t, fleettest.AssignmentDoc(device, next(), v1), h.trust.Release)
			},
			wantEvent: report.EventRejected, wantReason: "",
		},
		{
			name: "sha256 mismatch (object replaced in storage)",
			doc: func() []byte {
				m := h.trust.Publish(t, s3, bucket, model, "3.0.0", models.FileV2)
				evil := fleettest.ModelBytes(t, models.FileV2)
				evil[len(evil)-10] ^= 0x01 // same size, other content
				fleettest.Upload(t, s3, bucket, "models/"+model+"/3.0.0/"+models.FileV2, evil)
				return h.trust.Assignment(t, device, next(), m)
			},
			wantEvent: report.EventRolledBack, wantReason: "sha256", wantPhase: "rolled-back",
		},
		{
			name: "object larger than declared",
			doc: func() []byte {
				m := h.trust.Publish(t, s3, bucket, model, "4.0.0", models.FileV2)
				fleettest.Upload(t, s3, bucket, "models/"+model+"/4.0.0/"+models.FileV2, append(fleettest.ModelBytes(t, models.FileV2), make([]byte, 1<<20)...))
				return h.trust.Assignment(t, device, next(), m)
			},
			wantEvent: report.EventRolledBack, wantReason: "size", wantPhase: "rolled-back",
		},
		{
			name: "model that ONNX Runtime refuses",
			doc: func() []byte {
				m := h.trust.Publish(t, s3, bucket, model, "5.0.0", models.FileBroken)
				return h.trust.Assignment(t, device, next(), m)
			},
			wantEvent: report.EventRolledBack, wantReason: "load", wantPhase: "rolled-back",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := h.eventCount()
			h.publish(tt.doc())
			ev := h.waitEvent(tt.wantEvent, from, func(e report.Event) bool { return e.Type == tt.wantEvent })
			if !strings.Contains(ev.Reason, tt.wantReason) {
				t.Errorf("event reason %q does not mention %q", ev.Reason, tt.wantReason)
			}
			t.Logf("event: %s: %s", ev.Type, ev.Reason)
			if tt.wantPhase != "" {
				h.waitState(tt.wantPhase, func(s report.State) bool {
					m := s.Models[model]
					return m.Phase == tt.wantPhase && m.Version == "1.0.0" && m.Error != ""
				})
			}
			assertServes(t, h.agent, "1.0.0", models.SeedV1)
		})
	}
}

// tamper changes the version inside a signed manifest without re-signing.
func tamper(t *testing.T, env []byte) []byte {
	t.Helper()
	var doc map[string]any
	must(t, json.Unmarshal(env, &doc))
	doc["signed"].(map[string]any)["version"] = "9.9.9"
	b, err := json.Marshal(doc)
	must(t, err)
	return b
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

// bigDownloadUnderWay starts an agent that reaches S3 through a proxy of 8
// MiB/s, installs v1, assigns a 24 MiB v2 and returns once the proxy has
// sent minBytes of it (counted from the v2 assignment on), so callers can
// interrupt the download.
func bigDownloadUnderWay(t *testing.T, minBytes int64) (h *harness, proxy *testenv.Proxy, big, v2 []byte) {
	t.Helper()
	h = newHarness(t)
	proxy = testenv.NewProxy(t, h.s3.Endpoint, 8<<20)
	h.cfg.S3.Endpoint = proxy.Addr
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.waitState("v1 active", active("1.0.0"))

	big = fleettest.PaddedModel(models.SeedV2, 24<<20)
	v2 = fleettest.Sign(t, fleettest.VibrationManifest(model, "2.0.0",
		fleettest.Upload(t, h.s3.Client, h.s3.Bucket, "models/big.onnx", big)), h.trust.Release)
	proxy.Reset()
	h.publish(h.trust.Assignment(t, device, 2, v2))
	deadline := time.Now().Add(waitFor)
	for proxy.Served() < minBytes {
		if time.Now().After(deadline) {
			t.Fatal("the download of v2 did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return h, proxy, big, v2
}

// TestS3OutageDuringDownload kills S3 while the agent downloads a new
// version and brings it back: the agent completes the install.
func TestS3OutageDuringDownload(t *testing.T) {
	h, proxy, big, _ := bigDownloadUnderWay(t, 2<<20)
	// The download is under way: cut S3 off.
	h.s3.Kill(t)
	proxy.CloseAll() // what the server had already sent is lost with the connection
	time.Sleep(time.Second)
	assertServes(t, h.agent, "1.0.0", models.SeedV1)
	h.s3.Start(t)
	if served := proxy.Served(); served >= int64(len(big)) {
		t.Fatalf("the whole model (%d bytes) was sent before the outage: the test did not interrupt anything", served)
	}
	h.waitState("v2 active after the outage", active("2.0.0"))
	assertServes(t, h.agent, "2.0.0", models.SeedV2)
	if served := proxy.Served(); served >= 2*int64(len(big)) {
		t.Errorf("S3 sent %d bytes for a %d-byte model: the download restarted instead of resuming", served, len(big))
	}
}

// TestBrokerRestart restarts the broker under a running agent: it
// reconnects, republishes its state and takes new assignments.
func TestBrokerRestart(t *testing.T) {
	h := newHarness(t)
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.waitState("v1 active", active("1.0.0"))
	h.broker.Restart(t)
	v2 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "2.0.0", models.FileV2)
	h.publish(h.trust.Assignment(t, device, 2, v2))
	h.waitState("v2 active after broker restart", active("2.0.0"))
}

// TestScaleToZero unloads an idle model and reloads it on the next request.
func TestScaleToZero(t *testing.T) {
	h := newHarness(t)
	h.cfg.Serving.IdleTTLSeconds = 1
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.waitState("v1 active", active("1.0.0"))
	h.waitState("v1 unloaded when idle", func(s report.State) bool {
		m := s.Models[model]
		return m.Version == "1.0.0" && !m.Loaded
	})
	assertServes(t, h.agent, "1.0.0", models.SeedV1) // lazy reload
	h.waitState("v1 loaded again", func(s report.State) bool { return s.Models[model].Loaded })
}

// TestBusy refuses requests beyond the concurrency limit and queue.
func TestBusy(t *testing.T) {
	h := newHarness(t)
	h.cfg.Serving.Concurrency, h.cfg.Serving.QueueLength = 1, 0
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.waitState("v1 active", active("1.0.0"))
	// Many concurrent callers against a limit of one: some must be refused
	// as busy, none may fail otherwise, and the agent keeps serving.
	var wg sync.WaitGroup
	var mu sync.Mutex
	busy, okCount := 0, 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				_, _, err := h.agent.Infer(context.Background(), model, map[string]runtime.Tensor{mlp.InputName: runtime.NewTensor([]int64{1, mlp.InputSize}, window())})
				mu.Lock()
				switch {
				case err == nil:
					okCount++
				case errors.Is(err, runtime.ErrBusy):
					busy++
				default:
					t.Errorf("unexpected error: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d served, %d refused as busy", okCount, busy)
	if okCount == 0 || busy == 0 {
		t.Fatalf("%d served and %d refused: want both (limit 1, no queue, 16 callers)", okCount, busy)
	}
	assertServes(t, h.agent, "1.0.0", models.SeedV1)
}

// TestShadow runs a candidate beside the active model on live requests:
// callers get the active model's answers, the hub gets the comparison.
func TestShadow(t *testing.T) {
	h := newHarness(t)
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	v2 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "2.0.0", models.FileV2)
	a := fleettest.AssignmentDoc(device, 1, v1, v2)
	a.Models[1].Mode = manifest.ModeShadow
	h.publish(fleettest.Sign(t, a, h.trust.Director))
	h.waitState("v1 active, v2 shadow", func(s report.State) bool {
		sh := s.Models[model+"@shadow"]
		return active("1.0.0")(s) && sh.Version == "2.0.0" && sh.Phase == "active"
	})
	for range 20 {
		assertServes(t, h.agent, "1.0.0", models.SeedV1) // never the candidate's answer
	}
	deadline := time.After(waitFor)
	for {
		var compared uint64
		var diff float64
		h.mu.Lock()
		for _, tm := range h.telemetry {
			if sh := tm.Models[model].Shadow; sh != nil && sh.Version == "2.0.0" {
				compared += sh.Compared
				diff = math.Max(diff, sh.MaxAbsDiff)
			}
		}
		h.mu.Unlock()
		if compared > 0 {
			if diff == 0 {
				t.Errorf("v1 and v2 have different weights but the shadow report shows no difference")
			}
			break
		}
		select {
		case <-h.notify:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("no shadow comparison reached the hub")
		}
	}

	// Dropping the shadow entry unloads the candidate.
	from := h.eventCount()
	h.publish(h.trust.Assignment(t, device, 2, v1))
	h.waitEvent("shadow removed", from, func(e report.Event) bool { return e.Type == report.EventRemoved && e.Model == model+"@shadow" })
	assertServes(t, h.agent, "1.0.0", models.SeedV1)
}

// TestCUDAFallbackReported asks for the CUDA variant on a machine without
// a GPU: the model runs on the CPU and the hub is told.
func TestCUDAFallbackReported(t *testing.T) {
	h := newHarness(t)
	h.cfg.Variants = []string{"cuda", "cpu"}
	h.start()
	art := fleettest.Upload(t, h.s3.Client, h.s3.Bucket, "models/cuda.onnx", fleettest.ModelBytes(t, models.FileV1))
	art.Variant = "cuda"
	m := fleettest.Sign(t, fleettest.VibrationManifest(model, "1.0.0", art), h.trust.Release)
	h.publish(h.trust.Assignment(t, device, 1, m))
	s := h.waitState("v1 active", active("1.0.0"))
	if p := s.Models[model].Provider; p != "cpu" {
		t.Errorf("provider = %q, want cpu (no GPU here)", p)
	}
	ev := h.waitEvent("provider warning", 0, func(e report.Event) bool {
		return e.Type == report.EventWarning && strings.Contains(e.Reason, "execution provider")
	})
	t.Logf("event: %s", ev.Reason)
	assertServes(t, h.agent, "1.0.0", models.SeedV1)
}

// TestNewerAssignmentMidDownload: an assignment arriving while a large
// version downloads cancels that install and applies the newer one; when
// the large version is wanted again, its download resumes where it stopped.
func TestNewerAssignmentMidDownload(t *testing.T) {
	h, proxy, big, v2 := bigDownloadUnderWay(t, 4<<20)
	// v3 (small) supersedes v2 mid-download.
	v3 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "3.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 3, v3))
	h.waitState("v3 active", active("3.0.0"))
	if served := proxy.Served(); served >= int64(len(big)) {
		t.Fatalf("v2 downloaded completely (%d bytes) before v3 took over: nothing was interrupted", served)
	}
	// The hub rolls back to v2 explicitly: the partial download is reused.
	a := fleettest.AssignmentDoc(device, 4, v2)
	a.Models[0].AllowDowngrade = true
	h.publish(fleettest.Sign(t, a, h.trust.Director))
	h.waitState("v2 active", active("2.0.0"))
	assertServes(t, h.agent, "2.0.0", models.SeedV2)
	if served := proxy.Served(); served >= 2*int64(len(big)) {
		t.Errorf("S3 sent %d bytes for a %d-byte model: the interrupted download restarted", served, len(big))
	}
	h.waitEvent("v2 installed", 0, func(e report.Event) bool { return e.Type == report.EventInstalled && e.Version == "2.0.0" })
	// Duplicate delivery of the accepted assignment changes nothing.
	from := h.eventCount()
	h.publish(fleettest.Sign(t, a, h.trust.Director))
	time.Sleep(500 * time.Millisecond)
	h.mu.Lock()
	for _, e := range h.events[from:] {
		t.Errorf("duplicate delivery caused an event: %+v", e)
	}
	h.mu.Unlock()
}
