package serve_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/serve"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// device is the device ID of the MQTT tests.
const device = "edge-1"

// mqttEnv is a real Mosquitto broker, the agent's connection serving a
// fleet through serve.MQTT, a client connection for the factory side, and
// an observer of every hub topic.
type mqttEnv struct {
	topics bus.Topics
	front  *serve.MQTT
	agent  *bus.Client
	client *bus.Client

	mu      sync.Mutex // guards hubSeen
	hubSeen []bus.Message
}

// connect opens a bus connection to broker, closed when the test ends.
func connect(t testing.TB, broker *testenv.Broker, id string) *bus.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := bus.Connect(ctx, bus.Config{Brokers: []string{broker.URL}, ClientID: id}, bus.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { c.Close(nil) })
	return c
}

// startMQTT starts a broker and serves fl over MQTT with the bindings; it
// returns once the front end is subscribed.
func startMQTT(t testing.TB, fl *fleet, opts serve.MQTTOptions, bindings ...serve.Binding) *mqttEnv {
	t.Helper()
	broker := testenv.Mosquitto(t)
	env := &mqttEnv{topics: bus.NewTopics(""), client: connect(t, broker, "factory"), agent: connect(t, broker, "agent-"+device)}
	observer := connect(t, broker, "hub-observer")
	if err := observer.Subscribe(context.Background(), env.topics.Prefix()+"/#", 1, func(m bus.Message) {
		env.mu.Lock()
		env.hubSeen = append(env.hubSeen, m)
		env.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	env.front = serve.NewMQTT(env.agent, env.topics, device, fl, opts)
	if len(bindings) > 0 {
		if err := env.front.SetBindings(context.Background(), bindings); err != nil {
			t.Fatalf("SetBindings before Run: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- env.front.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-env.front.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the MQTT front end did not subscribe in 30 s")
	}
	return env
}

// checkResidency fails the test if anything but inference requests (which
// clients send there by design) appeared under the hub prefix: no reply,
// result or error of the agent may.
func (env *mqttEnv) checkResidency(t testing.TB) {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	for _, m := range env.hubSeen {
		if _, kind, _, ok := env.topics.ParseDevice(m.Topic); !ok || kind != bus.KindInfer {
			t.Errorf("the agent published under the hub prefix: %s %s", m.Topic, m.Payload)
		}
	}
}

// inbox subscribes the client to filter and returns its messages.
func (env *mqttEnv) inbox(t testing.TB, filter string) <-chan bus.Message {
	t.Helper()
	ch := make(chan bus.Message, 256)
	if err := env.client.Subscribe(context.Background(), filter, 1, func(m bus.Message) { ch <- m }); err != nil {
		t.Fatal(err)
	}
	return ch
}

func (env *mqttEnv) publish(t testing.TB, topic string, payload []byte) {
	t.Helper()
	if err := env.client.Publish(context.Background(), topic, 1, false, payload); err != nil {
		t.Fatal(err)
	}
}

// receive waits for the next message on ch.
func receive(t testing.TB, ch <-chan bus.Message) bus.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no message in 20 s")
		return bus.Message{}
	}
}

// waitFor polls cond until it holds, for at most 20 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mqttReply is a reply on reply_to.
type mqttReply struct {
	inferResponse
	Code int `json:"code"`
}

func decodeReply(t testing.TB, m bus.Message) mqttReply {
	t.Helper()
	var r mqttReply
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		t.Fatalf("reply on %s is not JSON: %s", m.Topic, m.Payload)
	}
	return r
}

// mqttRequest builds a request for the example models.
func mqttRequest(id, replyTo string, shape []int64, data any) []byte {
	req := map[string]any{
		"id":     id,
		"inputs": []map[string]any{{"name": mlp.InputName, "shape": shape, "datatype": "FP32", "data": data}},
	}
	if replyTo != "" {
		req["reply_to"] = replyTo
	}
	b, _ := json.Marshal(req)
	return b
}

func TestMQTTRequestReply(t *testing.T) {
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	fl.serve("vibration-batch", models.FileBatch, v1)
	env := startMQTT(t, fl, serve.MQTTOptions{})
	replies := env.inbox(t, "factory/replies/#")
	rng := rand.New(rand.NewPCG(7, 7))

	t.Run("round trip", func(t *testing.T) {
		windows := randomWindows(rng, 1)
		env.publish(t, env.topics.Infer(device, "vibration"), mqttRequest("r-1", "factory/replies/r-1", []int64{1, 64}, windows))
		m := receive(t, replies)
		r := decodeReply(t, m)
		if m.Topic != "factory/replies/r-1" || r.ID != "r-1" || r.ModelName != "vibration" || r.ModelVersion != v1 || r.Error != "" {
			t.Fatalf("reply on %s: %s", m.Topic, m.Payload)
		}
		checkScores(t, r.ModelVersion, windows, r.Outputs[0].Data)
	})
	t.Run("batch, nested", func(t *testing.T) {
		windows := randomWindows(rng, 4)
		env.publish(t, env.topics.Infer(device, "vibration-batch"), mqttRequest("r-2", "factory/replies/r-2", []int64{4, 64}, nested(windows)))
		r := decodeReply(t, receive(t, replies))
		if r.ID != "r-2" || len(r.Outputs) != 1 || !slices.Equal(r.Outputs[0].Shape, []int64{4, 1}) {
			t.Fatalf("reply %+v", r)
		}
		checkScores(t, r.ModelVersion, windows, r.Outputs[0].Data)
	})
	for _, tc := range []struct {
		name    string
		model   string
		payload []byte
		code    int
		message string
	}{
		{"wrong shape", "vibration", mqttRequest("e-1", "factory/replies/e", []int64{1, 32}, make([]float32, 32)), 400, "dimension 1 must be 64"},
		{"unknown model", "nope", mqttRequest("e-2", "factory/replies/e", []int64{1, 64}, make([]float32, 64)), 404, `no model "nope"`},
		{"inputs not an array", "vibration", []byte(`{"id":"e-3","reply_to":"factory/replies/e","inputs":"x"}`), 400, `field "inputs" must be an array`},
		{"unknown field", "vibration", []byte(`{"id":"e-4","reply_to":"factory/replies/e","inputs":[],"deadline":5}`), 400, `unknown field "deadline"`},
		{"no inputs", "vibration", []byte(`{"id":"e-5","reply_to":"factory/replies/e","inputs":[]}`), 400, "no inputs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env.publish(t, env.topics.Infer(device, tc.model), tc.payload)
			r := decodeReply(t, receive(t, replies))
			if r.Code != tc.code || !strings.Contains(r.Error, tc.message) || r.ModelName != tc.model || r.ID == "" {
				t.Errorf("reply %+v, want code %d with %q", r, tc.code, tc.message)
			}
		})
	}
	t.Run("busy", func(t *testing.T) {
		release, err := fl.limit("vibration", 1, 0).Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		env.publish(t, env.topics.Infer(device, "vibration"), mqttRequest("b-1", "factory/replies/b", []int64{1, 64}, make([]float32, 64)))
		if r := decodeReply(t, receive(t, replies)); r.Code != 503 || !strings.Contains(r.Error, "busy") {
			t.Errorf("reply %+v, want 503 busy", r)
		}
	})

	t.Run("no answer outside the rules", func(t *testing.T) {
		before := env.front.Stats().Requests.Dropped
		for _, payload := range [][]byte{
			mqttRequest("d-1", "", []int64{1, 64}, make([]float32, 64)),                                  // no reply_to
			mqttRequest("d-2", env.topics.Telemetry(device), []int64{1, 64}, make([]float32, 64)),        // a hub topic
			mqttRequest("d-3", env.topics.Prefix(), []int64{1, 64}, make([]float32, 64)),                 // the prefix itself
			mqttRequest("d-4", "factory/replies/+", []int64{1, 64}, make([]float32, 64)),                 // a wildcard
			mqttRequest("d-5", "$SYS/broker/x", []int64{1, 64}, make([]float32, 64)),                     // a broker topic
			[]byte(`{"id":"d-6","reply_to":"` + env.topics.Events(device) + `","inputs":"bad request"}`), // bad, with a hub reply_to
			[]byte("not json at all"),
		} {
			env.publish(t, env.topics.Infer(device, "vibration"), payload)
		}
		waitFor(t, "7 dropped requests", func() bool { return env.front.Stats().Requests.Dropped == before+7 })
		// A last good request: once its reply is in, the refused ones would
		// have been published before it.
		env.publish(t, env.topics.Infer(device, "vibration"), mqttRequest("last", "factory/replies/last", []int64{1, 64}, make([]float32, 64)))
		if r := decodeReply(t, receive(t, replies)); r.ID != "last" {
			t.Fatalf("unexpected reply %+v", r)
		}
		env.checkResidency(t)
	})

	// A reply can reach the client before the agent has counted it.
	waitFor(t, "every request counted", func() bool {
		s := env.front.Stats().Requests
		return s.Received == s.OK+s.BadInput+s.Failed+s.Busy+s.Dropped
	})
	s := env.front.Stats().Requests
	if s.Received != s.OK+s.BadInput+s.Failed+s.Busy+s.Dropped {
		t.Errorf("stats do not add up: %+v", s)
	}
	if s.OK != 3 || s.BadInput != 4 || s.Failed != 1 || s.Busy != 1 || s.Dropped != 7 {
		t.Errorf("stats = %+v", s)
	}
}

// TestMQTTSlowModelDoesNotBlockOthers: requests for a model whose runs
// wait (its only slot is taken) hold at most ModelConcurrency workers;
// another model's requests are answered meanwhile.
func TestMQTTSlowModelDoesNotBlockOthers(t *testing.T) {
	fl := newFleet(t)
	fl.serve("slow", models.FileV1, v1)
	fl.serve("fast", models.FileV2, v2)
	env := startMQTT(t, fl, serve.MQTTOptions{Workers: 2, ModelConcurrency: 1})
	replies := env.inbox(t, "factory/replies/#")
	release, err := fl.limit("slow", 1, 100).Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		env.publish(t, env.topics.Infer(device, "slow"), mqttRequest("slow", "factory/replies/slow", []int64{1, 64}, make([]float32, 64)))
	}
	windows := randomWindows(rand.New(rand.NewPCG(8, 8)), 1)
	for range 3 {
		env.publish(t, env.topics.Infer(device, "fast"), mqttRequest("fast", "factory/replies/fast", []int64{1, 64}, windows))
		r := decodeReply(t, receive(t, replies))
		if r.ID != "fast" {
			t.Fatalf("got a reply to %q while the slow model was blocked", r.ID)
		}
		checkScores(t, r.ModelVersion, windows, r.Outputs[0].Data)
	}
	release()
	for range 5 {
		if r := decodeReply(t, receive(t, replies)); r.ID != "slow" || r.Error != "" {
			t.Errorf("reply %+v", r)
		}
	}
}

// f32le encodes values as little-endian float32 bytes.
func f32le(values []float32) []byte {
	b := make([]byte, 0, 4*len(values))
	for _, v := range values {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// bindingResult is what a binding publishes.
type bindingResult struct {
	Model       string               `json:"model"`
	Version     string               `json:"version"`
	SourceTopic string               `json:"source_topic"`
	Outputs     map[string][]float32 `json:"outputs"`
	Shapes      map[string][]int64   `json:"shapes"`
	Error       string               `json:"error"`
	Code        int                  `json:"code"`
}

func decodeResult(t testing.TB, m bus.Message) bindingResult {
	t.Helper()
	var r bindingResult
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		t.Fatalf("result on %s is not JSON: %s", m.Topic, m.Payload)
	}
	return r
}

func TestMQTTBindings(t *testing.T) {
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	fl.serve("vibration-batch", models.FileBatch, v1)
	line1 := serve.Binding{Model: "vibration", Input: "factory/line1/vibration/+", Output: "factory/line1/anomaly/{4}", ErrorTopic: "factory/line1/errors/{4}", QoS: 1}
	env := startMQTT(t, fl, serve.MQTTOptions{}, line1)
	if err := env.front.SetBindings(context.Background(), []serve.Binding{
		line1,
		{Model: "vibration", Input: "factory/+/raw/#", Output: "plant/{2}/raw-score/{5}", Format: serve.FormatF32LE, ErrorTopic: "plant/errors"},
		{Model: "vibration-batch", Input: "factory/line3/batch", Output: "factory/line3/scores"},
		{Model: "retired", Input: "factory/line4/vibration", ErrorTopic: "factory/line4/errors"},
	}); err != nil {
		t.Fatalf("SetBindings while running: %v", err)
	}
	anomalies := env.inbox(t, "factory/line1/anomaly/#")
	errs := env.inbox(t, "factory/+/errors/#")
	plant := env.inbox(t, "plant/#")
	line3 := env.inbox(t, "factory/line3/scores")
	rng := rand.New(rand.NewPCG(9, 9))

	t.Run("JSON array, topic level substituted", func(t *testing.T) {
		windows := randomWindows(rng, 1)
		payload, _ := json.Marshal(windows)
		env.publish(t, "factory/line1/vibration/s7", payload)
		m := receive(t, anomalies)
		r := decodeResult(t, m)
		if m.Topic != "factory/line1/anomaly/s7" || r.Model != "vibration" || r.Version != v1 || r.SourceTopic != "factory/line1/vibration/s7" ||
			!slices.Equal(r.Shapes[mlp.OutputName], []int64{1, 1}) {
			t.Fatalf("result on %s: %s", m.Topic, m.Payload)
		}
		checkScores(t, r.Version, windows, r.Outputs[mlp.OutputName])
	})
	t.Run("JSON object", func(t *testing.T) {
		windows := randomWindows(rng, 1)
		payload, _ := json.Marshal(map[string]any{mlp.InputName: nested(windows)})
		env.publish(t, "factory/line1/vibration/s8", payload)
		m := receive(t, anomalies)
		if m.Topic != "factory/line1/anomaly/s8" {
			t.Fatalf("result on %s", m.Topic)
		}
		r := decodeResult(t, m)
		checkScores(t, r.Version, windows, r.Outputs[mlp.OutputName])
	})
	t.Run("f32le, # filter", func(t *testing.T) {
		windows := randomWindows(rng, 1)
		env.publish(t, "factory/line2/raw/cell-a/s3", f32le(windows))
		m := receive(t, plant)
		r := decodeResult(t, m)
		if m.Topic != "plant/line2/raw-score/s3" || r.SourceTopic != "factory/line2/raw/cell-a/s3" {
			t.Fatalf("result on %s: %s", m.Topic, m.Payload)
		}
		checkScores(t, r.Version, windows, r.Outputs[mlp.OutputName])
	})
	t.Run("batch model, flat array of 3 windows", func(t *testing.T) {
		windows := randomWindows(rng, 3)
		payload, _ := json.Marshal(windows)
		env.publish(t, "factory/line3/batch", payload)
		r := decodeResult(t, receive(t, line3))
		if !slices.Equal(r.Shapes[mlp.OutputName], []int64{3, 1}) {
			t.Fatalf("shapes %v", r.Shapes)
		}
		checkScores(t, r.Version, windows, r.Outputs[mlp.OutputName])
	})
	t.Run("bad payloads go to the error topic", func(t *testing.T) {
		for _, tc := range []struct {
			topic, errTopic string
			payload         []byte
			code            int
			message         string
		}{
			{"factory/line1/vibration/s9", "factory/line1/errors/s9", []byte("hello"), 400, "send a JSON array"},
			{"factory/line1/vibration/s9", "factory/line1/errors/s9", []byte("[1,2,3]"), 400, "takes 64 values"},
			{"factory/line1/vibration/s9", "factory/line1/errors/s9", []byte(`["NaN"]`), 400, "JSON has no NaN"},
			{"factory/line1/vibration/s9", "factory/line1/errors/s9", []byte(`{"samples":[1]}`), 400, `unknown input "samples"`},
			{"factory/line4/vibration", "factory/line4/errors", []byte("[1]"), 404, `no model "retired"`},
		} {
			env.publish(t, tc.topic, tc.payload)
			m := receive(t, errs)
			r := decodeResult(t, m)
			if m.Topic != tc.errTopic || r.Code != tc.code || !strings.Contains(r.Error, tc.message) || r.SourceTopic != tc.topic {
				t.Errorf("%s: error on %s: %s; want %d with %q on %s", tc.payload, m.Topic, m.Payload, tc.code, tc.message, tc.errTopic)
			}
		}
		env.publish(t, "factory/line2/raw/x/s1", []byte{1, 2, 3}) // not a multiple of 4 bytes
		if r := decodeResult(t, receive(t, plant)); r.Code != 400 || !strings.Contains(r.Error, "4 bytes per float32") {
			t.Errorf("f32le error %+v", r)
		}
	})

	waitFor(t, "every reading counted", func() bool {
		s := env.front.Stats().Bindings
		return s.Received == s.OK+s.BadInput+s.Failed+s.Busy+s.Dropped
	})
	s := env.front.Stats().Bindings
	if s.OK != 4 || s.BadInput != 5 || s.Failed != 1 || s.Received != s.OK+s.BadInput+s.Failed+s.Busy+s.Dropped {
		t.Errorf("stats = %+v", s)
	}
	env.checkResidency(t)
}

// TestMQTTSetBindingsRefused: bindings that would publish under the hub
// prefix, read from it or feed themselves are refused as a whole, and the
// bindings in force keep working.
func TestMQTTSetBindingsRefused(t *testing.T) {
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	good := serve.Binding{Model: "vibration", Input: "factory/line1/vibration/+", Output: "factory/line1/anomaly/{4}"}
	env := startMQTT(t, fl, serve.MQTTOptions{}, good)
	for _, bad := range []serve.Binding{
		{Model: "vibration", Input: "factory/x", Output: env.topics.Telemetry(device)},
		{Model: "vibration", Input: "factory/x", Output: env.topics.Prefix() + "/devices/{2}/state"},
		{Model: "vibration", Input: "factory/x", ErrorTopic: env.topics.Events(device)},
		{Model: "vibration", Input: env.topics.Infer(device, "+"), Output: "factory/y"},
		{Model: "vibration", Input: "factory/#", Output: "factory/scores"},
	} {
		err := env.front.SetBindings(context.Background(), []serve.Binding{good, bad})
		if !errors.Is(err, serve.ErrInvalidBinding) {
			t.Errorf("SetBindings(%+v) = %v, want ErrInvalidBinding", bad, err)
		}
	}
	if got := env.front.Bindings(); len(got) != 1 || got[0] != good {
		t.Errorf("bindings after refusals = %+v", got)
	}
	anomalies := env.inbox(t, "factory/line1/anomaly/#")
	env.publish(t, "factory/line1/vibration/s1", mustMarshal(make([]float32, 64)))
	if m := receive(t, anomalies); m.Topic != "factory/line1/anomaly/s1" {
		t.Errorf("result on %s", m.Topic)
	}
	env.checkResidency(t)
}

// TestMQTTBindingsReplaced: bindings change while running; the removed
// filter is unsubscribed, and adding it back works.
func TestMQTTBindingsReplaced(t *testing.T) {
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	a := serve.Binding{Model: "vibration", Input: "factory/a/+", Output: "factory/out/a/{3}"}
	b := serve.Binding{Model: "vibration", Input: "factory/b/+", Output: "factory/out/b/{3}"}
	env := startMQTT(t, fl, serve.MQTTOptions{}, a)
	out := env.inbox(t, "factory/out/#")
	reading := mustMarshal(make([]float32, 64))

	env.publish(t, "factory/a/1", reading)
	if m := receive(t, out); m.Topic != "factory/out/a/1" {
		t.Fatalf("result on %s", m.Topic)
	}
	if err := env.front.SetBindings(context.Background(), []serve.Binding{b}); err != nil {
		t.Fatal(err)
	}
	env.publish(t, "factory/a/2", reading)
	env.publish(t, "factory/b/2", reading)
	if m := receive(t, out); m.Topic != "factory/out/b/2" {
		t.Fatalf("result on %s", m.Topic)
	}
	// The bus client unsubscribes removed filters: a/2 is not delivered at
	// all. A second reading on b, served after it, proves it is not late.
	env.publish(t, "factory/b/3", reading)
	if m := receive(t, out); m.Topic != "factory/out/b/3" {
		t.Fatalf("result on %s (the removed binding still served)", m.Topic)
	}
	if st := env.front.Stats(); st.Ignored != 0 {
		t.Errorf("Ignored = %d: the removed filter is still subscribed", st.Ignored)
	}
	if err := env.front.SetBindings(context.Background(), []serve.Binding{a, b}); err != nil {
		t.Fatalf("adding a filter back: %v", err)
	}
	env.publish(t, "factory/a/3", reading)
	if m := receive(t, out); m.Topic != "factory/out/a/3" {
		t.Fatalf("result on %s", m.Topic)
	}
	if err := env.front.SetBindings(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-out:
		t.Errorf("unexpected result on %s", m.Topic)
	default:
	}
}

// TestMQTTClientInterface: the bus client is what the front end takes.
func TestMQTTClientInterface(t *testing.T) {
	var _ serve.MQTTClient = (*bus.Client)(nil)
}
