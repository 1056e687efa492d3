package hub

import (
	"reflect"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
)

func histogram(t *testing.T, values ...float64) report.Histogram {
	t.Helper()
	h, err := report.NewHistogram(report.DefaultLatencyBoundsMs())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		h.Observe(v)
	}
	return h
}

// TestMetricsBaselineSubtract: the rollups of the soak's first minute lose
// what the baseline had counted when the soak started; other minutes,
// devices and versions are left alone.
func TestMetricsBaselineSubtract(t *testing.T) {
	minute := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	next := minute.Add(time.Minute)
	rollup := func(device string, m time.Time, requests uint64, errs uint64, lat report.Histogram, compared, agreed uint64) store.TelemetryRollup {
		r := store.TelemetryRollup{Device: device, Model: "m", Version: "2.0.0", Minute: m, Reports: requests, Requests: requests, Latency: lat}
		if errs > 0 {
			r.Errors = map[string]uint64{report.ErrorInvalidInput: errs}
		}
		r.Shadow = store.ShadowRollup{Compared: compared, Agreed: agreed}
		return r
	}
	base := metricsBaseline{Minute: minute, Rollups: []store.TelemetryRollup{
		rollup("a", minute, 10, 10, report.Histogram{}, 4, 1),
		rollup("b", minute, 5, 0, histogram(t, 1, 2, 3, 4, 5), 0, 0),
	}}
	tests := []struct {
		name string
		in   store.TelemetryRollup
		want store.TelemetryRollup
	}{
		{name: "errors before the soak drop out",
			in:   rollup("a", minute, 15, 10, histogram(t, 0.2, 0.3, 0.2, 0.2, 0.3), 9, 6),
			want: rollup("a", minute, 5, 0, histogram(t, 0.2, 0.3, 0.2, 0.2, 0.3), 5, 5)},
		{name: "latency before the soak drops out",
			in:   rollup("b", minute, 7, 0, histogram(t, 1, 2, 3, 4, 5, 60, 70), 0, 0),
			want: rollup("b", minute, 2, 0, histogram(t, 60, 70), 0, 0)},
		{name: "later minute untouched",
			in:   rollup("a", next, 15, 10, report.Histogram{}, 9, 6),
			want: rollup("a", next, 15, 10, report.Histogram{}, 9, 6)},
		{name: "device without baseline untouched",
			in:   rollup("c", minute, 3, 1, histogram(t, 1, 1), 0, 0),
			want: rollup("c", minute, 3, 1, histogram(t, 1, 1), 0, 0)},
		{name: "store lost data: nothing negative",
			in:   rollup("a", minute, 2, 1, report.Histogram{}, 1, 1),
			want: rollup("a", minute, 0, 0, report.Histogram{}, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := base.subtractFrom([]store.TelemetryRollup{tt.in})
			if len(got) != 1 {
				t.Fatalf("got %d rollups", len(got))
			}
			g, w := got[0], tt.want
			// Sums are floats: compare them apart, within rounding.
			if d := g.Latency.Sum - w.Latency.Sum; d > 1e-9 || d < -1e-9 {
				t.Errorf("latency sum %v, want %v", g.Latency.Sum, w.Latency.Sum)
			}
			g.Latency.Sum, w.Latency.Sum = 0, 0
			if len(g.Errors) == 0 {
				g.Errors = nil
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("got\n%+v\nwant\n%+v", g, w)
			}
		})
	}
}
