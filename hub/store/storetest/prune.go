package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
)

func testPrune(t *testing.T, open opener) {
	s, ctx := open(t), t.Context()
	for m := range 3 {
		at := T0.Add(time.Duration(m) * time.Minute)
		p := Payload(at.Add(time.Second), "vibration", report.ModelTelemetry{Version: "1.0.0", Requests: 1})
		wantErr(t, "AddTelemetry", s.AddTelemetry(ctx, "edge-1", p), nil)
		_, err := s.AddEvent(ctx, store.Event{Device: "edge-1", Time: at, Type: report.EventWarning})
		wantErr(t, "AddEvent", err, nil)
	}
	n, err := s.Prune(ctx, T0.Add(2*time.Minute))
	wantErr(t, "Prune", err, nil)
	if n != 4 {
		t.Errorf("Prune removed %d rows, want 4 (2 rollups, 2 events)", n)
	}
	rs, _ := s.ListTelemetry(ctx, store.TelemetryQuery{})
	es, _ := s.ListEvents(ctx, "", time.Time{}, 0)
	if len(rs) != 1 || len(es) != 1 {
		t.Errorf("after Prune: %d rollups, %d events; want 1 and 1", len(rs), len(es))
	}
	if _, err := s.GetDevice(ctx, "edge-1"); err != nil {
		t.Errorf("Prune removed the device: %v", err)
	}
}

// testConcurrentUse mixes writers and readers, for the race detector and
// for "database is locked" errors.
func testConcurrentUse(t *testing.T, open opener) {
	s, ctx := open(t), t.Context()
	var wg sync.WaitGroup
	for w := range 4 {
		dev := []string{"edge-1", "edge-2", "edge-3", "edge-4"}[w]
		wg.Go(func() {
			for i := range 25 {
				p := Payload(T0.Add(time.Duration(i)*time.Second), "vibration",
					report.ModelTelemetry{Version: "1.0.0", Requests: 1, Latency: Latency(float64(i))})
				if err := s.AddTelemetry(ctx, dev, p); err != nil {
					t.Error(err)
					return
				}
				if err := s.SetOnline(ctx, dev, i%2 == 0, T0.Add(time.Duration(i)*time.Second)); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			for range 25 {
				if _, err := s.QueryTelemetry(ctx, store.TelemetryQuery{Model: "vibration"}); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.ListDevices(ctx, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	sum, err := s.QueryTelemetry(ctx, store.TelemetryQuery{Model: "vibration"})
	wantErr(t, "QueryTelemetry", err, nil)
	if sum.Requests != 100 || sum.Reports != 100 || sum.Latency.Count != 100 {
		t.Errorf("after 100 concurrent payloads: %d requests, %d reports, %d latencies; want 100 each", sum.Requests, sum.Reports, sum.Latency.Count)
	}
}
