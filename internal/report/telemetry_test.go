package report

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
)

// hist builds a histogram with bounds and counts, deriving Count.
func hist(bounds []float64, sum float64, counts ...uint64) Histogram {
	h := Histogram{Bounds: bounds, Counts: counts, Sum: sum}
	for _, c := range counts {
		h.Count += c
	}
	return h
}

func TestHistogramObserve(t *testing.T) {
	b := []float64{1, 2, 5}
	tests := []struct {
		name       string
		start      Histogram
		values     []float64
		wantCounts []uint64
		wantSum    float64
		wantBounds []float64
	}{
		{"inside buckets", hist(b, 0, 0, 0, 0, 0), []float64{0.5, 1.5, 3}, []uint64{1, 1, 1, 0}, 5, b},
		{"bound is inclusive", hist(b, 0, 0, 0, 0, 0), []float64{1, 2, 5}, []uint64{1, 1, 1, 0}, 8, b},
		{"just above a bound", hist(b, 0, 0, 0, 0, 0), []float64{math.Nextafter(1, 2)}, []uint64{0, 1, 0, 0}, math.Nextafter(1, 2), b},
		{"overflow", hist(b, 0, 0, 0, 0, 0), []float64{5.0001, 1e9}, []uint64{0, 0, 0, 2}, 5.0001 + 1e9, b},
		{"zero", hist(b, 0, 0, 0, 0, 0), []float64{0}, []uint64{1, 0, 0, 0}, 0, b},
		{"negative counts as zero", hist(b, 0, 0, 0, 0, 0), []float64{-3}, []uint64{1, 0, 0, 0}, 0, b},
		{"NaN and Inf ignored", hist(b, 0, 0, 0, 0, 0), []float64{math.NaN(), math.Inf(1), math.Inf(-1)}, []uint64{0, 0, 0, 0}, 0, b},
		{"adds to existing", hist(b, 3, 1, 1, 0, 0), []float64{4}, []uint64{1, 1, 1, 0}, 7, b},
		{"zero value takes default bounds", Histogram{}, []float64{0.3, 20000},
			func() []uint64 {
				c := make([]uint64, len(DefaultLatencyBoundsMs())+1)
				c[2], c[len(c)-1] = 1, 1
				return c
			}(), 20000.3, DefaultLatencyBoundsMs()},
		{"missing counts are allocated", Histogram{Bounds: b}, []float64{2}, []uint64{0, 1, 0, 0}, 2, b},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.start.Clone()
			for _, v := range tt.values {
				h.Observe(v)
			}
			if !slices.Equal(h.Counts, tt.wantCounts) {
				t.Errorf("counts = %v, want %v", h.Counts, tt.wantCounts)
			}
			if !slices.Equal(h.Bounds, tt.wantBounds) {
				t.Errorf("bounds = %v, want %v", h.Bounds, tt.wantBounds)
			}
			if math.Abs(h.Sum-tt.wantSum) > 1e-9 {
				t.Errorf("sum = %v, want %v", h.Sum, tt.wantSum)
			}
			if err := h.Validate(); err != nil {
				t.Errorf("Validate after Observe: %v", err)
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	b := []float64{1, 2, 5}
	tests := []struct {
		name    string
		h, o    Histogram
		want    Histogram
		wantErr error
	}{
		{"adds counts", hist(b, 4, 1, 0, 1, 0), hist(b, 10, 0, 1, 0, 1), hist(b, 14, 1, 1, 1, 1), nil},
		{"zero receiver takes other", Histogram{}, hist(b, 4, 1, 0, 1, 0), hist(b, 4, 1, 0, 1, 0), nil},
		{"zero other changes nothing", hist(b, 4, 1, 0, 1, 0), Histogram{}, hist(b, 4, 1, 0, 1, 0), nil},
		{"both zero", Histogram{}, Histogram{}, Histogram{}, nil},
		{"empty with bounds", hist(b, 0, 0, 0, 0, 0), hist(b, 1, 1, 0, 0, 0), hist(b, 1, 1, 0, 0, 0), nil},
		{"different bounds", hist(b, 0, 0, 0, 0, 0), hist([]float64{1, 2, 6}, 0, 0, 0, 0, 0), hist(b, 0, 0, 0, 0, 0), ErrBoundsMismatch},
		{"different bucket count", hist(b, 0, 0, 0, 0, 0), hist([]float64{1, 2}, 0, 0, 0, 0), hist(b, 0, 0, 0, 0, 0), ErrBoundsMismatch},
		{"other counts do not match bounds", hist(b, 0, 1, 0, 0, 0), hist(b, 0, 1, 0), hist(b, 0, 1, 0, 0, 0), ErrInvalidHistogram},
		{"other count disagrees with counts", hist(b, 0, 1, 0, 0, 0), Histogram{Bounds: b, Counts: []uint64{1, 0, 0, 0}, Count: 7}, hist(b, 0, 1, 0, 0, 0), ErrInvalidHistogram},
		{"other bounds not increasing", hist(b, 0, 1, 0, 0, 0), hist([]float64{2, 1, 5}, 0, 0, 0, 0, 0), hist(b, 0, 1, 0, 0, 0), ErrInvalidHistogram},
		{"other counts without bounds", hist(b, 0, 1, 0, 0, 0), Histogram{Counts: []uint64{3}, Count: 3}, hist(b, 0, 1, 0, 0, 0), ErrInvalidHistogram},
		{"invalid receiver", Histogram{Bounds: b, Counts: []uint64{1}}, hist(b, 0, 1, 0, 0, 0), Histogram{Bounds: b, Counts: []uint64{1}}, ErrInvalidHistogram},
		{"count overflow", hist(b, 0, math.MaxUint64, 0, 0, 0), hist(b, 0, 1, 0, 0, 0), hist(b, 0, math.MaxUint64, 0, 0, 0), ErrInvalidHistogram},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.h.Clone()
			err := h.Merge(tt.o)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Merge error = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("after Merge = %+v, want %+v", h, tt.want)
			}
		})
	}
}

func TestHistogramMergeDoesNotAlias(t *testing.T) {
	o := hist([]float64{1}, 1, 1, 0)
	var h Histogram
	if err := h.Merge(o); err != nil {
		t.Fatal(err)
	}
	h.Observe(0.5)
	if o.Counts[0] != 1 || o.Count != 1 {
		t.Errorf("merging into a zero histogram shares slices with the source: %+v", o)
	}
}

func TestHistogramQuantile(t *testing.T) {
	b := []float64{1, 2, 5}
	tests := []struct {
		name string
		h    Histogram
		q    float64
		want float64 // NaN means NaN
	}{
		{"empty", hist(b, 0, 0, 0, 0, 0), 0.5, math.NaN()},
		{"zero value", Histogram{}, 0.5, math.NaN()},
		{"NaN q", hist(b, 1, 1, 0, 0, 0), math.NaN(), math.NaN()},
		{"invalid", Histogram{Bounds: b, Counts: []uint64{1}, Count: 1}, 0.5, math.NaN()},
		{"median of first bucket from zero", hist(b, 2, 4, 0, 0, 0), 0.5, 0.5},
		{"q=1 is the bucket's upper bound", hist(b, 2, 4, 0, 0, 0), 1, 1},
		{"q=0 is the lowest bucket's lower edge", hist(b, 6, 0, 0, 4, 0), 0, 2},
		{"interpolates in middle bucket", hist(b, 0, 0, 10, 0, 0), 0.25, 1.25},
		{"across buckets", hist(b, 0, 2, 2, 0, 0), 0.75, 1.5},
		{"p95 over spread", hist(b, 0, 50, 30, 20, 0), 0.95, 2 + 3*0.75},
		{"overflow reports last bound", hist(b, 0, 1, 0, 0, 9), 0.99, 5},
		{"q above 1 is clamped", hist(b, 0, 0, 10, 0, 0), 7, 2},
		{"q below 0 is clamped", hist(b, 0, 0, 10, 0, 0), -1, 1},
		{"skips empty buckets", hist(b, 0, 1, 0, 1, 0), 0.75, 3.5},
		{"single observation", hist(DefaultLatencyBoundsMs(), 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0.5, 3.75},
		{"non-positive first bound", hist([]float64{-1, 1}, 0, 2, 0, 0), 0.5, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.h.Quantile(tt.q)
			if math.IsNaN(tt.want) {
				if !math.IsNaN(got) {
					t.Errorf("Quantile(%v) = %v, want NaN", tt.q, got)
				}
				return
			}
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistogramQuantileMonotone(t *testing.T) {
	var h Histogram
	for i := range 1000 {
		h.Observe(float64(i%97) * 3.7)
	}
	prev := math.Inf(-1)
	for q := 0.0; q <= 1; q += 0.01 {
		v := h.Quantile(q)
		if v < prev {
			t.Fatalf("Quantile(%v) = %v < Quantile of a smaller q = %v", q, v, prev)
		}
		prev = v
	}
}

func TestNewHistogram(t *testing.T) {
	tests := []struct {
		name    string
		bounds  []float64
		wantErr bool
	}{
		{"default", DefaultLatencyBoundsMs(), false},
		{"one bound", []float64{1}, false},
		{"none", nil, true},
		{"not increasing", []float64{1, 1}, true},
		{"NaN", []float64{1, math.NaN()}, true},
		{"Inf", []float64{1, math.Inf(1)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHistogram(tt.bounds)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewHistogram error = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (len(h.Counts) != len(tt.bounds)+1 || h.Count != 0) {
				t.Errorf("NewHistogram = %+v", h)
			}
			if err != nil && !errors.Is(err, ErrInvalidHistogram) {
				t.Errorf("error %v does not wrap ErrInvalidHistogram", err)
			}
		})
	}
}

func TestDefaultLatencyBoundsMsIsACopy(t *testing.T) {
	DefaultLatencyBoundsMs()[0] = 42
	if DefaultLatencyBoundsMs()[0] == 42 {
		t.Fatal("DefaultLatencyBoundsMs returns shared storage")
	}
}

func TestModelTelemetryMerge(t *testing.T) {
	b := DefaultLatencyBoundsMs()
	lat := func(vs ...float64) Histogram {
		h, _ := NewHistogram(b)
		for _, v := range vs {
			h.Observe(v)
		}
		return h
	}
	first := ModelTelemetry{
		Version: "1.0.0", Requests: 3, Errors: map[string]uint64{ErrorRun: 1},
		Latency: lat(1, 2), ComputeMillis: ComputeMillis{CPU: 2.5}, ColdStarts: 1, ColdStartMillis: 40,
		Shadow: &ShadowStats{Version: "2.0.0", Compared: 2, Agreed: 1, MaxAbsDiff: 0.5, Latency: lat(3, 4)},
	}
	second := ModelTelemetry{
		Version: "1.0.0", Requests: 2, Errors: map[string]uint64{ErrorRun: 1, ErrorBusy: 1},
		Latency: lat(7), ComputeMillis: ComputeMillis{CPU: 1, GPU: 3}, QueueRejections: 1,
		Shadow: &ShadowStats{Version: "2.0.0", Compared: 1, Agreed: 1, MaxAbsDiff: 0.25, Latency: lat(8)},
	}
	m := first
	if err := m.Merge(second); err != nil {
		t.Fatal(err)
	}
	want := ModelTelemetry{
		Version: "1.0.0", Requests: 5, Errors: map[string]uint64{ErrorRun: 2, ErrorBusy: 1},
		Latency: lat(1, 2, 7), ComputeMillis: ComputeMillis{CPU: 3.5, GPU: 3}, ColdStarts: 1, ColdStartMillis: 40,
		QueueRejections: 1,
		Shadow:          &ShadowStats{Version: "2.0.0", Compared: 3, Agreed: 2, MaxAbsDiff: 0.5, Latency: lat(3, 4, 8)},
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("Merge =\n%+v\nwant\n%+v", m, want)
	}
	if first.Errors[ErrorRun] != 1 || first.Shadow.Compared != 2 || first.Latency.Count != 2 {
		t.Errorf("Merge modified the maps or pointers of its source: %+v", first)
	}

	t.Run("version change", func(t *testing.T) {
		m := ModelTelemetry{Version: "1.0.0", Requests: 1, Latency: lat(1)}
		if err := m.Merge(ModelTelemetry{Version: "1.1.0", Requests: 1, Latency: lat(1)}); err != nil {
			t.Fatal(err)
		}
		if m.Version != "1.1.0" || !slices.Equal(m.Versions, []string{"1.0.0", "1.1.0"}) {
			t.Errorf("Version %q Versions %v, want 1.1.0 and both", m.Version, m.Versions)
		}
	})
	t.Run("new shadow candidate replaces the old", func(t *testing.T) {
		m := ModelTelemetry{Shadow: &ShadowStats{Version: "2", Compared: 5}}
		if err := m.Merge(ModelTelemetry{Shadow: &ShadowStats{Version: "3", Compared: 1}}); err != nil {
			t.Fatal(err)
		}
		if m.Shadow.Version != "3" || m.Shadow.Compared != 1 {
			t.Errorf("Shadow = %+v, want candidate 3 only", m.Shadow)
		}
	})
	t.Run("bounds mismatch leaves m unchanged", func(t *testing.T) {
		m := ModelTelemetry{Requests: 1, Latency: lat(1)}
		bad, _ := NewHistogram([]float64{1, 2})
		err := m.Merge(ModelTelemetry{Requests: 1, Latency: bad})
		if !errors.Is(err, ErrBoundsMismatch) {
			t.Fatalf("Merge error = %v, want ErrBoundsMismatch", err)
		}
		if m.Requests != 1 {
			t.Errorf("Requests = %d after failed merge, want 1", m.Requests)
		}
	})
}

func sampleTelemetry() Telemetry {
	lat, _ := NewHistogram(DefaultLatencyBoundsMs())
	lat.Observe(1.5)
	lat.Observe(30)
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return Telemetry{
		Schema: Schema, Device: "dev-1", Time: start.Add(time.Minute), Start: start, IntervalSeconds: 60, Sequence: 7,
		Models: map[string]ModelTelemetry{
			"vibration": {
				Version: "1.2.0", Requests: 3, Errors: map[string]uint64{ErrorInvalidInput: 1},
				Latency: lat, ComputeMillis: ComputeMillis{CPU: 12.5, GPU: 0.25}, ColdStarts: 1, ColdStartMillis: 80,
				QueueRejections: 0,
				Shadow:          &ShadowStats{Version: "1.3.0", Compared: 2, Agreed: 2, MaxAbsDiff: 1e-6, Latency: lat.Clone()},
			},
		},
		System: DeviceStats{
			CPUPercent: 12.5, MemoryTotalBytes: 8 << 30, MemoryAvailableBytes: 3 << 30, ProcessRSSBytes: 90 << 20,
			Goroutines: 40, UptimeSeconds: 3600,
			GPUs: []GPUStats{{Index: 0, UtilizationPercent: 55, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 16 << 30}},
		},
	}
}

func TestTelemetryJSONRoundTrip(t *testing.T) {
	in := sampleTelemetry()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Telemetry
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip changed the payload:\n in %+v\nout %+v", in, out)
	}
	if err := out.Models["vibration"].Latency.Validate(); err != nil {
		t.Errorf("decoded histogram invalid: %v", err)
	}
}

func TestTelemetryUnknownFieldsTolerated(t *testing.T) {
	// A report from a newer agent: new fields at every level.
	raw := `{
		"schema": 2, "device": "dev-1", "time": "2025-03-01T12:01:00Z", "start": "2025-03-01T12:00:00Z",
		"interval_seconds": 60, "sequence": 3, "future_top": {"x": [1, 2]},
		"models": {"m": {"version": "1.0.0", "requests": 4, "errors": {"run": 1, "future_kind": 2},
			"latency": {"bounds": [1, 2], "counts": [1, 1, 0], "sum": 2.5, "count": 2, "future": true},
			"compute_ms": {"cpu": 1, "gpu": 0, "npu": 5}, "future_model_field": "x",
			"shadow": {"version": "2", "compared": 1, "agreed": 1, "max_abs_diff": 0, "latency": {}, "extra": 1}}},
		"system": {"cpu_percent": 5, "memory_total_bytes": 100, "future_sensor": 1,
			"gpus": [{"index": 0, "utilization_percent": 1, "memory_used_bytes": 2, "memory_total_bytes": 3, "temp_c": 60}]}
	}`
	var got Telemetry
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatalf("unknown fields rejected: %v", err)
	}
	m := got.Models["m"]
	if got.Schema != 2 || got.Sequence != 3 || m.Requests != 4 || m.Errors[ErrorRun] != 1 ||
		m.Latency.Count != 2 || m.Shadow == nil || m.Shadow.Compared != 1 ||
		got.System.MemoryTotalBytes != 100 || len(got.System.GPUs) != 1 || got.System.GPUs[0].MemoryTotalBytes != 3 {
		t.Errorf("known fields not decoded: %+v", got)
	}
	if err := m.Latency.Validate(); err != nil {
		t.Errorf("decoded latency invalid: %v", err)
	}
}

func TestErrorKinds(t *testing.T) {
	want := []string{"invalid_input", "busy", "run", "not_loaded", "other"}
	if got := ErrorKinds(); !slices.Equal(got, want) {
		t.Errorf("ErrorKinds() = %v, want %v", got, want)
	}
}
