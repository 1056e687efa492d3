package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/serve"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
)

// latencies collects per-request durations and reports percentiles, and
// their ratio to the bare Inferer.Infer of the same run.
type latencies []time.Duration

func (l latencies) percentile(p int) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func (l latencies) report(b *testing.B, bare latencies) {
	if len(l) == 0 {
		return
	}
	p50, p99 := l.percentile(50), l.percentile(99)
	b.ReportMetric(float64(p50.Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(p99.Nanoseconds())/1e3, "p99-µs")
	if len(bare) > 0 {
		b.ReportMetric(float64(p50)/float64(bare.percentile(50)), "p50-x-bare")
		b.ReportMetric(float64(p99)/float64(bare.percentile(99)), "p99-x-bare")
	}
}

// measureBare times the in-process Inferer.Infer on one window, the
// baseline of the front ends' overhead.
func measureBare(b *testing.B, fl *fleet, model string, n int) latencies {
	b.Helper()
	window := randomWindows(rand.New(rand.NewPCG(1, 1)), 1)
	inputs := map[string]runtime.Tensor{mlp.InputName: runtime.NewTensor([]int64{1, mlp.InputSize}, window)}
	var l latencies
	for range n {
		start := time.Now()
		if _, _, err := fl.Infer(context.Background(), model, inputs); err != nil {
			b.Fatal(err)
		}
		l = append(l, time.Since(start))
	}
	return l
}

// BenchmarkFrontEnds measures one window scored by the example model
// through each front end on loopback, against the bare Inferer.Infer
// measured in the same run: p50/p99 latency and their ratios (x-bare).
func BenchmarkFrontEnds(b *testing.B) {
	fl := newFleet(b)
	fl.serve("vibration", models.FileV1, v1)
	bare := measureBare(b, fl, "vibration", 2000)
	window := randomWindows(rand.New(rand.NewPCG(2, 2)), 1)

	b.Run("bare-infer", func(b *testing.B) {
		inputs := map[string]runtime.Tensor{mlp.InputName: runtime.NewTensor([]int64{1, mlp.InputSize}, window)}
		var l latencies
		for b.Loop() {
			start := time.Now()
			if _, _, err := fl.Infer(context.Background(), "vibration", inputs); err != nil {
				b.Fatal(err)
			}
			l = append(l, time.Since(start))
		}
		l.report(b, bare)
	})

	b.Run("http-oip", func(b *testing.B) {
		srv := startHTTP(b, fl, serve.HTTPOptions{})
		client := srv.Client()
		body := windowRequest("bench", []int64{1, mlp.InputSize}, window)
		url := srv.URL + "/v2/models/vibration/infer"
		var l latencies
		for b.Loop() {
			start := time.Now()
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
			l = append(l, time.Since(start))
		}
		l.report(b, bare)
	})

	env := startMQTT(b, fl, serve.MQTTOptions{}, serve.Binding{Model: "vibration", Input: "factory/bench/vibration/+", Output: "factory/bench/anomaly/{4}"})
	b.Run("mqtt-request-reply", func(b *testing.B) {
		replies := env.inbox(b, "factory/bench/replies")
		request := mqttRequest("bench", "factory/bench/replies", []int64{1, mlp.InputSize}, window)
		topic := env.topics.Infer(device, "vibration")
		var l latencies
		for b.Loop() {
			start := time.Now()
			env.publish(b, topic, request)
			if r := decodeReply(b, receive(b, replies)); r.Error != "" {
				b.Fatal(r.Error)
			}
			l = append(l, time.Since(start))
		}
		l.report(b, bare)
	})
	b.Run("mqtt-binding", func(b *testing.B) {
		results := env.inbox(b, "factory/bench/anomaly/#")
		reading, _ := json.Marshal(window)
		var l latencies
		for b.Loop() {
			start := time.Now()
			env.publish(b, "factory/bench/vibration/s1", reading)
			receive(b, results)
			l = append(l, time.Since(start))
		}
		l.report(b, bare)
	})
}
