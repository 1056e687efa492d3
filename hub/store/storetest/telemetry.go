package storetest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
)

// Latency builds a histogram with the default bounds from observations in ms.
func Latency(ms ...float64) report.Histogram {
	h, _ := report.NewHistogram(report.DefaultLatencyBoundsMs())
	for _, v := range ms {
		h.Observe(v)
	}
	return h
}

// Payload builds a telemetry payload ending at end with one model entry.
func Payload(end time.Time, model string, m report.ModelTelemetry) report.Telemetry {
	return report.Telemetry{
		Schema: report.Schema, Time: end, Start: end.Add(-10 * time.Second), IntervalSeconds: 10, Sequence: 1,
		Models: map[string]report.ModelTelemetry{model: m},
		System: report.DeviceStats{CPUPercent: 10, UptimeSeconds: 60},
	}
}

func testTelemetry(t *testing.T, open opener) {
	t.Run("SameMinuteMerges", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		p1 := Payload(T0.Add(10*time.Second), "vibration", report.ModelTelemetry{
			Version: "1.0.0", Requests: 3, Errors: map[string]uint64{report.ErrorRun: 1},
			Latency: Latency(1, 2), ComputeMillis: report.ComputeMillis{CPU: 2.5},
			ColdStarts: 1, ColdStartMillis: 40,
		})
		p2 := Payload(T0.Add(59*time.Second), "vibration", report.ModelTelemetry{
			Version: "1.0.0", Requests: 5, Errors: map[string]uint64{report.ErrorRun: 1, report.ErrorBusy: 2},
			Latency: Latency(3, 30), ComputeMillis: report.ComputeMillis{CPU: 1, GPU: 4}, QueueRejections: 2,
		})
		wantErr(t, "AddTelemetry 1", s.AddTelemetry(ctx, "edge-1", p1), nil)
		wantErr(t, "AddTelemetry 2", s.AddTelemetry(ctx, "edge-1", p2), nil)
		rs, err := s.ListTelemetry(ctx, store.TelemetryQuery{})
		wantErr(t, "ListTelemetry", err, nil)
		if len(rs) != 1 {
			t.Fatalf("%d rollups, want 1: %+v", len(rs), rs)
		}
		r := rs[0]
		want := Latency(1, 2, 3, 30)
		if r.Device != "edge-1" || r.Model != "vibration" || r.Version != "1.0.0" || !r.Minute.Equal(T0) {
			t.Errorf("rollup identity = %s %s %s %v", r.Device, r.Model, r.Version, r.Minute)
		}
		if r.Reports != 2 || r.Requests != 8 || r.ColdStarts != 1 || r.ColdStartMillis != 40 || r.QueueRejections != 2 ||
			r.ComputeMillis != (report.ComputeMillis{CPU: 3.5, GPU: 4}) {
			t.Errorf("counters not added: %+v", r)
		}
		if !sameMap(r.Errors, map[string]uint64{report.ErrorRun: 2, report.ErrorBusy: 2}) {
			t.Errorf("Errors = %v, want run 2 busy 2", r.Errors)
		}
		if !sameHistogram(r.Latency, want) {
			t.Errorf("Latency = %+v, want the merged %+v", r.Latency, want)
		}
		d, _ := s.GetDevice(ctx, "edge-1")
		if !sameTime(d.TelemetryTime, p2.Time) || d.System == nil || d.System.CPUPercent != 10 {
			t.Errorf("device telemetry time %v system %+v; want %v and the payload's stats", d.TelemetryTime, d.System, p2.Time)
		}
	})

	t.Run("SeparateMinutesVersionsDevices", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		add := func(dev string, end time.Time, version string, reqs uint64) {
			t.Helper()
			p := Payload(end, "vibration", report.ModelTelemetry{Version: version, Requests: reqs, Latency: Latency(1)})
			wantErr(t, "AddTelemetry", s.AddTelemetry(ctx, dev, p), nil)
		}
		add("edge-1", T0.Add(59*time.Second), "1.0.0", 1)
		add("edge-1", T0.Add(60*time.Second), "1.0.0", 2) // the next minute
		add("edge-1", T0.Add(61*time.Second), "1.1.0", 4)
		add("edge-2", T0.Add(61*time.Second), "1.0.0", 8)
		rs, err := s.ListTelemetry(ctx, store.TelemetryQuery{Model: "vibration"})
		wantErr(t, "ListTelemetry", err, nil)
		var got []string
		for _, r := range rs {
			got = append(got, fmt.Sprintf("%s %s %s %d", r.Minute.Format("15:04"), r.Device, r.Version, r.Requests))
		}
		want := []string{"12:00 edge-1 1.0.0 1", "12:01 edge-1 1.0.0 2", "12:01 edge-1 1.1.0 4", "12:01 edge-2 1.0.0 8"}
		if !slices.Equal(got, want) {
			t.Errorf("rollups = %q, want %q", got, want)
		}
	})

	t.Run("Query", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		// edge-1 and edge-2 run 1.1.0 for three minutes; edge-3 runs 1.0.0.
		for m := range 3 {
			end := T0.Add(time.Duration(m)*time.Minute + 30*time.Second)
			for _, dev := range []string{"edge-1", "edge-2"} {
				p := Payload(end, "vibration", report.ModelTelemetry{
					Version: "1.1.0", Requests: 100, Errors: map[string]uint64{report.ErrorRun: 1},
					Latency: Latency(slices.Repeat([]float64{4}, 95)...),
				})
				mt := p.Models["vibration"]
				for range 4 {
					mt.Latency.Observe(400)
				}
				p.Models["vibration"] = mt
				wantErr(t, "AddTelemetry", s.AddTelemetry(ctx, dev, p), nil)
			}
			p := Payload(end, "vibration", report.ModelTelemetry{Version: "1.0.0", Requests: 10, Latency: Latency(1)})
			wantErr(t, "AddTelemetry", s.AddTelemetry(ctx, "edge-3", p), nil)
		}
		tests := []struct {
			name                      string
			q                         store.TelemetryQuery
			rollups, devices          int
			requests, errors          uint64
			latencyCount              uint64
			errorRate, p95Min, p95Max float64
		}{
			{"one version, all devices", store.TelemetryQuery{Model: "vibration", Version: "1.1.0"},
				6, 2, 600, 6, 594, 0.01, 2.5, 5},
			{"since a minute", store.TelemetryQuery{Model: "vibration", Version: "1.1.0", Since: T0.Add(time.Minute + 10*time.Second)},
				4, 2, 400, 4, 396, 0.01, 2.5, 5},
			{"until a minute", store.TelemetryQuery{Model: "vibration", Version: "1.1.0", Until: T0.Add(time.Minute)},
				2, 2, 200, 2, 198, 0.01, 2.5, 5},
			{"some devices", store.TelemetryQuery{Model: "vibration", Version: "1.1.0", Devices: []string{"edge-2", "edge-9"}},
				3, 1, 300, 3, 297, 0.01, 2.5, 5},
			{"all versions", store.TelemetryQuery{Model: "vibration"}, 9, 3, 630, 6, 597, 6.0 / 630, 2.5, 5},
			{"no devices", store.TelemetryQuery{Model: "vibration", Devices: []string{}}, 0, 0, 0, 0, 0, math.NaN(), math.NaN(), math.NaN()},
			{"other model", store.TelemetryQuery{Model: "camera"}, 0, 0, 0, 0, 0, math.NaN(), math.NaN(), math.NaN()},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				sum, err := s.QueryTelemetry(ctx, tt.q)
				wantErr(t, "QueryTelemetry", err, nil)
				if sum.Rollups != tt.rollups || sum.Devices != tt.devices || sum.Requests != tt.requests ||
					sum.ErrorCount() != tt.errors || sum.Latency.Count != tt.latencyCount {
					t.Errorf("summary = %d rollups, %d devices, %d requests, %d errors, %d latencies; want %d, %d, %d, %d, %d",
						sum.Rollups, sum.Devices, sum.Requests, sum.ErrorCount(), sum.Latency.Count,
						tt.rollups, tt.devices, tt.requests, tt.errors, tt.latencyCount)
				}
				if !sameFloat(sum.ErrorRate(), tt.errorRate) {
					t.Errorf("ErrorRate = %v, want %v", sum.ErrorRate(), tt.errorRate)
				}
				p95 := sum.P95LatencyMs()
				if math.IsNaN(tt.p95Min) != math.IsNaN(p95) || p95 < tt.p95Min || p95 > tt.p95Max {
					t.Errorf("p95 = %v ms, want within [%v, %v]", p95, tt.p95Min, tt.p95Max)
				}
			})
		}
	})

	t.Run("Shadow", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		for i, agreed := range []uint64{9, 10} {
			p := Payload(T0.Add(time.Duration(10+i)*time.Second), "vibration", report.ModelTelemetry{
				Version: "1.0.0", Requests: 10, Latency: Latency(1),
				Shadow: &report.ShadowStats{Version: "1.1.0", Compared: 10, Agreed: agreed, MaxAbsDiff: float64(i+1) / 100, Latency: Latency(2)},
			})
			wantErr(t, "AddTelemetry", s.AddTelemetry(ctx, "edge-1", p), nil)
		}
		candidate, err := s.QueryTelemetry(ctx, store.TelemetryQuery{Model: "vibration", Version: "1.1.0"})
		wantErr(t, "QueryTelemetry", err, nil)
		if candidate.Requests != 0 || candidate.Shadow.Compared != 20 || candidate.Shadow.Agreed != 19 ||
			candidate.Shadow.MaxAbsDiff != 0.02 || candidate.Shadow.Latency.Count != 2 || !sameFloat(candidate.ShadowAgreement(), 0.95) {
			t.Errorf("candidate summary = %+v; want only the shadow comparison, agreement 0.95", candidate)
		}
		serving, _ := s.QueryTelemetry(ctx, store.TelemetryQuery{Model: "vibration", Version: "1.0.0"})
		if serving.Requests != 20 || serving.Shadow.Compared != 0 || serving.Latency.Count != 2 {
			t.Errorf("serving summary = %+v; want its 20 requests and no shadow data", serving)
		}
	})

	t.Run("MixedVersionsWindow", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		p := Payload(T0.Add(10*time.Second), "vibration", report.ModelTelemetry{
			Version: "1.1.0", Versions: []string{"1.0.0", "1.1.0"}, Requests: 4, Latency: Latency(1),
		})
		wantErr(t, "AddTelemetry", s.AddTelemetry(ctx, "edge-1", p), nil)
		rs, _ := s.ListTelemetry(ctx, store.TelemetryQuery{})
		if len(rs) != 1 || rs[0].Version != "1.1.0" || !slices.Equal(rs[0].MixedWith, []string{"1.0.0"}) {
			t.Errorf("rollups = %+v; want one for 1.1.0 mixed with 1.0.0", rs)
		}
	})

	t.Run("RefusedPayloadStoresNothing", func(t *testing.T) {
		s, ctx := open(t), t.Context()
		good := Payload(T0.Add(10*time.Second), "vibration", report.ModelTelemetry{Version: "1.0.0", Requests: 1, Latency: Latency(1)})
		wantErr(t, "AddTelemetry", s.AddTelemetry(ctx, "edge-1", good), nil)

		otherBounds, _ := report.NewHistogram([]float64{1, 2, 3})
		otherBounds.Observe(1)
		broken := Latency(1)
		broken.Count++
		tests := []struct {
			name    string
			payload report.Telemetry
			also    error
		}{
			{"no time", Payload(time.Time{}, "vibration", report.ModelTelemetry{Requests: 1}), nil},
			{"bounds differ from the stored rollup", Payload(T0.Add(20*time.Second), "vibration",
				report.ModelTelemetry{Version: "1.0.0", Requests: 1, Latency: otherBounds}), report.ErrBoundsMismatch},
			{"inconsistent histogram", Payload(T0.Add(20*time.Second), "camera",
				report.ModelTelemetry{Version: "1.0.0", Requests: 1, Latency: broken}), report.ErrInvalidHistogram},
			{"NaN compute time", Payload(T0.Add(20*time.Second), "camera",
				report.ModelTelemetry{Version: "1.0.0", ComputeMillis: report.ComputeMillis{CPU: math.NaN()}}), nil},
			{"shadow agreed above compared", Payload(T0.Add(20*time.Second), "camera",
				report.ModelTelemetry{Version: "1.0.0", Shadow: &report.ShadowStats{Version: "2.0.0", Compared: 1, Agreed: 2}}), nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// A valid entry for another model travels with the bad one:
				// the payload is stored whole or not at all.
				tt.payload.Models["other"] = report.ModelTelemetry{Version: "1.0.0", Requests: 1}
				err := s.AddTelemetry(ctx, "edge-1", tt.payload)
				wantErr(t, "AddTelemetry", err, store.ErrInvalid)
				if tt.also != nil && !errors.Is(err, tt.also) {
					t.Errorf("error %v does not wrap %v", err, tt.also)
				}
			})
		}
		rs, _ := s.ListTelemetry(ctx, store.TelemetryQuery{})
		if len(rs) != 1 || rs[0].Requests != 1 || rs[0].Reports != 1 {
			t.Errorf("after refused payloads: %+v; want only the first rollup, unchanged", rs)
		}
	})
}

func sameHistogram(a, b report.Histogram) bool {
	return slices.Equal(a.Bounds, b.Bounds) && slices.Equal(a.Counts, b.Counts) && a.Count == b.Count &&
		math.Abs(a.Sum-b.Sum) < 1e-9
}

func sameFloat(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) < 1e-9
}
