package sqlite

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// benchPayloads builds n realistic telemetry payloads: 100 devices
// reporting every 10 s, two models each, one with a shadow candidate, so
// most payloads merge into an existing minute rollup (6 per minute).
func benchPayloads(n int) (devices []string, payloads []report.Telemetry) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	lat, _ := report.NewHistogram(report.DefaultLatencyBoundsMs())
	for i := range 200 {
		lat.Observe(float64(i%40) * 1.7)
	}
	for i := range n {
		dev := fmt.Sprintf("edge-%03d", i%100)
		end := t0.Add(time.Duration(i/100) * 10 * time.Second)
		devices = append(devices, dev)
		payloads = append(payloads, report.Telemetry{
			Schema: report.Schema, Device: dev, Time: end, Start: end.Add(-10 * time.Second),
			IntervalSeconds: 10, Sequence: uint64(i/100 + 1),
			Models: map[string]report.ModelTelemetry{
				"vibration": {Version: "1.0.0", Requests: 200, Errors: map[string]uint64{report.ErrorRun: 2},
					Latency: lat, ComputeMillis: report.ComputeMillis{CPU: 150}},
				"camera": {Version: "2.0.0", Requests: 200, Latency: lat, ComputeMillis: report.ComputeMillis{GPU: 90},
					Shadow: &report.ShadowStats{Version: "2.1.0", Compared: 20, Agreed: 19, MaxAbsDiff: 0.01, Latency: lat}},
			},
			System: report.DeviceStats{CPUPercent: 30, MemoryTotalBytes: 8 << 30, UptimeSeconds: 3600},
		})
	}
	return devices, payloads
}

// BenchmarkAddTelemetry measures telemetry payloads stored per second, and
// reports the ratio to a baseline on the same file: one plain autocommit
// INSERT of the payload's JSON per message, the least any durable store of
// the message costs. Store and baseline run in alternating blocks, so load
// from other processes weighs on both alike.
func BenchmarkAddTelemetry(b *testing.B) {
	s := mustOpenB(b)
	ctx := b.Context()
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE raw_telemetry (device TEXT, payload TEXT)`); err != nil {
		b.Fatal(err)
	}
	devices, payloads := benchPayloads(b.N)
	raws := make([]string, b.N)
	for i, p := range payloads {
		raw, _ := json.Marshal(p)
		raws[i] = string(raw)
	}
	const block = 50
	var storeTime, baseTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for lo := 0; lo < b.N; lo += block {
		hi := min(lo+block, b.N)
		start := time.Now()
		for i := lo; i < hi; i++ {
			if err := s.AddTelemetry(ctx, devices[i], payloads[i]); err != nil {
				b.Fatal(err)
			}
		}
		storeTime += time.Since(start)

		b.StopTimer()
		start = time.Now()
		for i := lo; i < hi; i++ {
			if _, err := s.w.ExecContext(ctx, `INSERT INTO raw_telemetry VALUES (?, ?)`, devices[i], raws[i]); err != nil {
				b.Fatal(err)
			}
		}
		baseTime += time.Since(start)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/storeTime.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/baseTime.Seconds(), "raw-inserts/s")
	b.ReportMetric(baseTime.Seconds()/storeTime.Seconds(), "x-raw-insert")
}

// BenchmarkAddTelemetryParallel is BenchmarkAddTelemetry from several
// goroutines at once, as an ingest worker pool would call it: writes are
// serialised on the one writer connection, so it shows the cost of queueing
// rather than more throughput.
func BenchmarkAddTelemetryParallel(b *testing.B) {
	s := mustOpenB(b)
	ctx := b.Context()
	devices, payloads := benchPayloads(100_000)
	next := make(chan int, 1)
	next <- 0
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := <-next
			next <- i + 1
			i %= len(payloads)
			if err := s.AddTelemetry(ctx, devices[i], payloads[i]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func mustOpenB(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "hub.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}
