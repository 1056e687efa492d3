package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// TestServingFrontEnds drives the agent's three front ends against a real
// broker and checks that nothing an input contains reaches the hub topics.
func TestServingFrontEnds(t *testing.T) {
	h := newHarness(t)
	// Everything published under the hub prefix, to check data residency.
	var mu sync.Mutex
	var hubTraffic [][]byte
	spy, err := bus.Connect(context.Background(), bus.Config{Brokers: []string{h.broker.URL}, ClientID: "spy"}, bus.Options{})
	must(t, err)
	t.Cleanup(func() { spy.Close(nil) })
	must(t, spy.Subscribe(context.Background(), h.topics.Prefix()+"/#", 1, func(m bus.Message) {
		if _, kind, _, ok := h.topics.ParseDevice(m.Topic); ok && kind == bus.KindInfer {
			return // requests addressed to the device, by the client
		}
		mu.Lock()
		hubTraffic = append(hubTraffic, append([]byte(m.Topic+" "), m.Payload...))
		mu.Unlock()
	}))

	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	a := fleettest.AssignmentDoc(device, 1, v1)
	a.Models[0].Bindings = []manifest.Binding{{Input: "factory/line1/vibration/+", Output: "factory/line1/anomaly/{4}"}}
	h.publish(fleettest.Sign(t, a, h.trust.Director))
	h.waitState("v1 active", active("1.0.0"))

	// Distinctive input values: if any shows up in hub traffic, inputs leaked.
	in := make([]float32, mlp.InputSize)
	for i := range in {
		in[i] = 1234.5 + float32(i)/1024
	}
	want := mlp.Reference(mlp.NewWeights(models.SeedV1), in, 1)[0]

	// KServe v2 over HTTP.
	body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": mlp.InputName, "shape": []int{1, mlp.InputSize}, "datatype": "FP32", "data": in}}})
	resp, err := http.Post("http://"+h.agent.HTTPAddr()+"/v2/models/"+model+"/infer", "application/json", bytes.NewReader(body))
	must(t, err)
	var oip struct {
		ModelVersion string `json:"model_version"`
		Outputs      []struct {
			Name string    `json:"name"`
			Data []float32 `json:"data"`
		} `json:"outputs"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&oip))
	resp.Body.Close()
	if resp.StatusCode != 200 || oip.ModelVersion != "1.0.0" || len(oip.Outputs) != 1 || math.Abs(float64(oip.Outputs[0].Data[0]-want)) > 1e-5 {
		t.Fatalf("OIP infer: status %d, %+v, want score %v", resp.StatusCode, oip, want)
	}
	resp, err = http.Get("http://" + h.agent.HTTPAddr() + "/v2/models/nope/ready")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("unknown model ready: status %d, want 404", resp.StatusCode)
	}

	// MQTT request/reply and the binding from the assignment.
	client, err := bus.Connect(context.Background(), bus.Config{Brokers: []string{h.broker.URL}, ClientID: "factory"}, bus.Options{})
	must(t, err)
	t.Cleanup(func() { client.Close(nil) })
	replies := make(chan []byte, 4)
	must(t, client.Subscribe(context.Background(), "factory/#", 1, func(m bus.Message) {
		if strings.HasPrefix(m.Topic, "factory/replies/") || strings.HasPrefix(m.Topic, "factory/line1/anomaly/") {
			replies <- m.Payload
		}
	}))
	req, _ := json.Marshal(map[string]any{"id": "r1", "reply_to": "factory/replies/1",
		"inputs": []map[string]any{{"name": mlp.InputName, "shape": []int{1, mlp.InputSize}, "datatype": "FP32", "data": in}}})
	must(t, client.Publish(context.Background(), h.topics.Infer(device, model), 1, false, req))
	assertScore(t, <-waitMsg(t, replies), want)

	reading, _ := json.Marshal(in)
	must(t, client.Publish(context.Background(), "factory/line1/vibration/press-7", 1, false, reading))
	assertScore(t, <-waitMsg(t, replies), want)

	// Telemetry reaches the hub with the three requests counted.
	deadline := time.Now().Add(waitFor)
	var requests uint64
	for requests < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("telemetry counted %d requests, want 3", requests)
		}
		time.Sleep(100 * time.Millisecond)
		requests = 0
		mu.Lock()
		for _, msg := range hubTraffic {
			topic, payload, _ := bytes.Cut(msg, []byte(" "))
			if string(topic) != h.topics.Telemetry(device) {
				continue
			}
			var tm report.Telemetry
			must(t, json.Unmarshal(payload, &tm))
			requests += tm.Models[model].Requests
		}
		mu.Unlock()
	}
	resp, err = http.Get("http://" + h.agent.HTTPAddr() + "/metrics")
	must(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte(`modelfleet_requests_total{model="`+model+`"`)) {
		t.Errorf("/metrics lacks the request counter:\n%s", metrics)
	}

	// Data residency: no input value in anything published to the hub.
	mu.Lock()
	defer mu.Unlock()
	if len(hubTraffic) == 0 {
		t.Fatal("spy saw no hub traffic at all")
	}
	for _, msg := range hubTraffic {
		for _, v := range in[:8] {
			if bytes.Contains(msg, []byte(strconv.FormatFloat(float64(v), 'f', -1, 32))) || bytes.Contains(msg, []byte(fmt.Sprint(v))) {
				t.Fatalf("input value %v leaked to the hub: %s", v, msg)
			}
		}
		if bytes.Contains(msg, reading[:20]) {
			t.Fatalf("reading payload leaked to the hub: %s", msg)
		}
	}
}

func waitMsg(t *testing.T, ch chan []byte) chan []byte {
	t.Helper()
	out := make(chan []byte, 1)
	select {
	case m := <-ch:
		out <- m
	case <-time.After(waitFor):
		t.Fatal("no reply")
	}
	return out
}

// assertScore finds the model's score in a reply (request/reply or
// binding result) and compares it with want.
func assertScore(t *testing.T, payload []byte, want float32) {
	t.Helper()
	var generic map[string]any
	must(t, json.Unmarshal(payload, &generic))
	var score float64
	found := false
	switch outs := generic["outputs"].(type) {
	case []any: // request/reply: OIP tensors
		for _, o := range outs {
			m := o.(map[string]any)
			if m["name"] == mlp.OutputName {
				score, found = m["data"].([]any)[0].(float64), true
			}
		}
	case map[string]any: // binding: name → flat data
		if d, ok := outs[mlp.OutputName].([]any); ok {
			score, found = d[0].(float64), true
		}
	}
	if !found || math.Abs(score-float64(want)) > 1e-5 {
		t.Fatalf("reply %s: score %v (found %v), want %v", payload, score, found, want)
	}
}
