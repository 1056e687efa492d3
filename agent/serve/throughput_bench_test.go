package serve_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"

	agentruntime "github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/serve"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/internal/bus"
)

// throughputParallelism is b.SetParallelism's factor: with GOMAXPROCS 2,
// 8 requests are in flight at once.
const throughputParallelism = 4

// BenchmarkFrontEndsThroughput measures requests per second with several
// requests in flight (throughputParallelism × GOMAXPROCS clients), one
// window each, through the in-process Inferer.Infer (the baseline), the
// OIP HTTP front end and MQTT request/reply on loopback. Compare each
// front end's requests/s with bare-infer's of the same run.
func BenchmarkFrontEndsThroughput(b *testing.B) {
	fl := newFleet(b)
	fl.serve("vibration", models.FileV1, v1)
	window := randomWindows(rand.New(rand.NewPCG(3, 3)), 1)
	clients := throughputParallelism * runtime.GOMAXPROCS(0)
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "requests/s")
		b.ReportMetric(float64(clients), "in-flight")
	}

	b.Run("bare-infer", func(b *testing.B) {
		inputs := map[string]agentruntime.Tensor{mlp.InputName: agentruntime.NewTensor([]int64{1, mlp.InputSize}, window)}
		b.SetParallelism(throughputParallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := fl.Infer(context.Background(), "vibration", inputs); err != nil {
					b.Error(err)
					return
				}
			}
		})
		report(b)
	})

	b.Run("http-oip", func(b *testing.B) {
		srv := startHTTP(b, fl, serve.HTTPOptions{})
		client := srv.Client()
		client.Transport.(*http.Transport).MaxIdleConnsPerHost = clients
		body := windowRequest("bench", []int64{1, mlp.InputSize}, window)
		url := srv.URL + "/v2/models/vibration/infer"
		b.SetParallelism(throughputParallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		report(b)
	})

	env := startMQTT(b, fl, serve.MQTTOptions{})
	// Each client has its own reply topic, so replies need no matching.
	// Subscribed once: the sub-benchmark's function runs several times.
	inboxes := make([]<-chan bus.Message, clients)
	requests := make([][]byte, clients)
	for i := range clients {
		replyTo := fmt.Sprintf("factory/bench/replies/%d", i)
		inboxes[i] = env.inbox(b, replyTo)
		requests[i] = mqttRequest("bench", replyTo, []int64{1, mlp.InputSize}, window)
	}
	b.Run("mqtt-request-reply", func(b *testing.B) {
		topic := env.topics.Infer(device, "vibration")
		var next atomic.Int32
		b.SetParallelism(throughputParallelism)
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)-1) % clients
			for pb.Next() {
				if err := env.client.Publish(context.Background(), topic, 1, false, requests[i]); err != nil {
					b.Error(err)
					return
				}
				if r := decodeReply(b, receive(b, inboxes[i])); r.Error != "" {
					b.Error(r.Error)
					return
				}
			}
		})
		report(b)
	})
}
