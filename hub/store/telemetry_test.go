package store

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func latency(bounds []float64, ms ...float64) report.Histogram {
	h, err := report.NewHistogram(bounds)
	if err != nil {
		panic(err)
	}
	for _, v := range ms {
		h.Observe(v)
	}
	return h
}

func TestRollupsFromTelemetry(t *testing.T) {
	def := report.DefaultLatencyBoundsMs()
	p := report.Telemetry{
		Device: "spoofed", Time: t0.Add(90 * time.Second).In(time.FixedZone("CET", 3600)),
		Models: map[string]report.ModelTelemetry{
			"vibration": {
				Version: "1.0.0", Requests: 10, Errors: map[string]uint64{report.ErrorRun: 1}, Latency: latency(def, 1, 2),
				Shadow: &report.ShadowStats{Version: "1.1.0", Compared: 4, Agreed: 3, MaxAbsDiff: 0.5, Latency: latency(def, 3)},
			},
			"camera": {Version: "2.0.0", Versions: []string{"1.9.0", "2.0.0"}, Requests: 1},
		},
	}
	rs, err := RollupsFromTelemetry("edge-1", p)
	if err != nil {
		t.Fatal(err)
	}
	SortRollups(rs)
	type id struct{ dev, model, version string }
	var got []id
	for _, r := range rs {
		got = append(got, id{r.Device, r.Model, r.Version})
		if !r.Minute.Equal(t0.Add(time.Minute)) || r.Minute.Location() != time.UTC || r.Reports != 1 {
			t.Errorf("%s@%s: minute %v reports %d; want %v UTC, 1", r.Model, r.Version, r.Minute, r.Reports, t0.Add(time.Minute))
		}
	}
	want := []id{{"edge-1", "camera", "2.0.0"}, {"edge-1", "vibration", "1.0.0"}, {"edge-1", "vibration", "1.1.0"}}
	if !slices.Equal(got, want) {
		t.Fatalf("rollups %v, want %v", got, want)
	}
	if !slices.Equal(rs[0].MixedWith, []string{"1.9.0"}) {
		t.Errorf("camera MixedWith = %v, want [1.9.0]", rs[0].MixedWith)
	}
	serving, shadow := rs[1], rs[2]
	if serving.Requests != 10 || serving.Errors[report.ErrorRun] != 1 || serving.Latency.Count != 2 || serving.Shadow.Compared != 0 {
		t.Errorf("serving rollup = %+v", serving)
	}
	if shadow.Requests != 0 || shadow.Shadow.Compared != 4 || shadow.Shadow.Agreed != 3 || shadow.Shadow.Latency.Count != 1 || shadow.Latency.Count != 0 {
		t.Errorf("shadow rollup = %+v", shadow)
	}
	// The rollups own their histograms: changing the payload afterwards
	// must not change them.
	p.Models["vibration"].Latency.Counts[0] = 99
	if serving.Latency.Counts[0] == 99 {
		t.Error("rollup shares its histogram with the payload")
	}

	for _, bad := range []report.Telemetry{
		{},
		{Time: t0, Models: map[string]report.ModelTelemetry{"": {}}},
		{Time: t0, Models: map[string]report.ModelTelemetry{"m": {ColdStartMillis: math.Inf(1)}}},
		{Time: t0, Models: map[string]report.ModelTelemetry{"m": {ComputeMillis: report.ComputeMillis{GPU: -1}}}},
		{Time: t0, Models: map[string]report.ModelTelemetry{"m": {Latency: report.Histogram{Count: 1}}}},
	} {
		if _, err := RollupsFromTelemetry("edge-1", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("RollupsFromTelemetry(%+v) error %v, want ErrInvalid", bad, err)
		}
	}
}

func TestRollupMerge(t *testing.T) {
	def := report.DefaultLatencyBoundsMs()
	a := TelemetryRollup{Device: "d", Model: "m", Version: "2.0.0", Minute: t0, Reports: 1, Requests: 5,
		Errors: map[string]uint64{report.ErrorRun: 1}, Latency: latency(def, 1), MixedWith: []string{"1.0.0"},
		ComputeMillis: report.ComputeMillis{CPU: 1}, Shadow: ShadowRollup{MaxAbsDiff: 0.3}}
	b := TelemetryRollup{Device: "other", Model: "x", Reports: 2, Requests: 7,
		Errors: map[string]uint64{report.ErrorRun: 2, report.ErrorBusy: 1}, Latency: latency(def, 2, 3),
		MixedWith: []string{"2.0.0", "0.9.0", "1.0.0"}, ComputeMillis: report.ComputeMillis{CPU: 2, GPU: 1},
		Shadow: ShadowRollup{Compared: 3, Agreed: 3, MaxAbsDiff: 0.1, Latency: latency(def, 5)}}
	aErrors := a.Errors
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if a.Device != "d" || a.Model != "m" || a.Version != "2.0.0" {
		t.Errorf("identity changed: %s %s %s", a.Device, a.Model, a.Version)
	}
	if a.Reports != 3 || a.Requests != 12 || a.ErrorCount() != 4 || a.Errors[report.ErrorBusy] != 1 ||
		a.Latency.Count != 3 || a.ComputeMillis != (report.ComputeMillis{CPU: 3, GPU: 1}) ||
		a.Shadow.Compared != 3 || a.Shadow.MaxAbsDiff != 0.3 || a.Shadow.Latency.Count != 1 {
		t.Errorf("merged = %+v", a)
	}
	if !slices.Equal(a.MixedWith, []string{"0.9.0", "1.0.0"}) {
		t.Errorf("MixedWith = %v, want [0.9.0 1.0.0] (own version left out)", a.MixedWith)
	}
	if aErrors[report.ErrorRun] != 1 {
		t.Error("Merge changed the map it was given")
	}

	before := a
	if err := a.Merge(TelemetryRollup{Requests: 1, Latency: latency([]float64{1, 2}, 1)}); !errors.Is(err, ErrInvalid) || !errors.Is(err, report.ErrBoundsMismatch) {
		t.Errorf("merge of other bounds: %v, want ErrInvalid and ErrBoundsMismatch", err)
	}
	if a.Requests != before.Requests {
		t.Error("a failed merge changed the rollup")
	}
	if err := a.Merge(TelemetryRollup{Requests: math.MaxUint64}); !errors.Is(err, ErrInvalid) || a.Requests != before.Requests {
		t.Errorf("overflowing merge: %v, requests %d", err, a.Requests)
	}
}

func TestSummarize(t *testing.T) {
	def := report.DefaultLatencyBoundsMs()
	odd := []float64{1, 10}
	rs := []TelemetryRollup{
		{Device: "a", Minute: t0.Add(time.Minute), Requests: 10, Errors: map[string]uint64{report.ErrorRun: 1}, Latency: latency(odd, 5, 5)},
		{Device: "a", Minute: t0, Requests: 90, Latency: latency(def, slices.Repeat([]float64{4}, 90)...)},
		{Device: "b", Minute: t0.Add(2 * time.Minute), Requests: 0,
			Shadow: ShadowRollup{Compared: 10, Agreed: 9, MaxAbsDiff: 0.2, Latency: latency(def, 1)}},
	}
	s := Summarize(rs)
	if s.Rollups != 3 || s.Devices != 2 || !s.First.Equal(t0) || !s.Last.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("summary identity = %d rollups %d devices %v..%v", s.Rollups, s.Devices, s.First, s.Last)
	}
	if s.Requests != 100 || s.ErrorRate() != 0.01 {
		t.Errorf("requests %d error rate %v; want 100, 0.01", s.Requests, s.ErrorRate())
	}
	// The default bounds win as reference even though the odd histogram
	// came first; its observations are counted as skipped.
	if s.Latency.Count != 90 || s.LatencySkipped != 2 || !slices.Equal(s.Latency.Bounds, def) {
		t.Errorf("latency count %d skipped %d bounds %v", s.Latency.Count, s.LatencySkipped, s.Latency.Bounds)
	}
	if p95 := s.P95LatencyMs(); p95 < 2.5 || p95 > 5 {
		t.Errorf("p95 = %v, want within the 2.5–5 ms bucket", p95)
	}
	if s.ShadowAgreement() != 0.9 || s.Shadow.MaxAbsDiff != 0.2 {
		t.Errorf("shadow agreement %v max diff %v", s.ShadowAgreement(), s.Shadow.MaxAbsDiff)
	}

	empty := Summarize(nil)
	if !math.IsNaN(empty.ErrorRate()) || !math.IsNaN(empty.P95LatencyMs()) || !math.IsNaN(empty.ShadowAgreement()) {
		t.Errorf("empty summary: error rate %v p95 %v agreement %v; want NaN (no evidence)", empty.ErrorRate(), empty.P95LatencyMs(), empty.ShadowAgreement())
	}
}
