package telemetry

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// Sentinels standing in for the agent runtime's errors.
var (
	errInvalidInput = errors.New("invalid inference request")
	errBusy         = errors.New("model busy")
	errNotLoaded    = errors.New("model not loaded")
	errRun          = errors.New("model run failed")
)

func testClassifier() func(error) string {
	return ClassifyBy(
		Sentinel{Err: errInvalidInput, Kind: report.ErrorInvalidInput},
		Sentinel{Err: errBusy, Kind: report.ErrorBusy},
		Sentinel{Err: errNotLoaded, Kind: report.ErrorNotLoaded},
		Sentinel{Err: errRun, Kind: report.ErrorRun},
	)
}

func newTestRecorder() *Recorder {
	return NewRecorder(Options{Classify: testClassifier()})
}

// latencyHist builds the expected histogram of latencies in ms.
func latencyHist(ms ...float64) report.Histogram {
	h, _ := report.NewHistogram(report.DefaultLatencyBoundsMs())
	for _, v := range ms {
		h.Observe(v)
	}
	return h
}

// sameHistogram compares histograms exactly but for Sum, which sums of
// windows may round differently from the running total.
func sameHistogram(a, b report.Histogram) bool {
	return slices.Equal(a.Bounds, b.Bounds) && slices.Equal(a.Counts, b.Counts) && a.Count == b.Count &&
		math.Abs(a.Sum-b.Sum) <= 1e-9*max(1, math.Abs(b.Sum))
}

func TestBoundsMatchReport(t *testing.T) {
	ms := report.DefaultLatencyBoundsMs()
	if len(ms)+1 != numBuckets {
		t.Fatalf("numBuckets = %d, report has %d bounds", numBuckets, len(ms))
	}
	for i, v := range ms {
		if float64(boundsNs[i])/1e6 != v {
			t.Errorf("bound %d: %d ns, report says %v ms", i, boundsNs[i], v)
		}
	}
}

func TestClassifyBy(t *testing.T) {
	classify := testClassifier()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"invalid input wrapped", fmt.Errorf("model m: %w: shape [1 3]", errInvalidInput), report.ErrorInvalidInput},
		{"busy wrapped twice", fmt.Errorf("m: %w", fmt.Errorf("%w: 4 running", errBusy)), report.ErrorBusy},
		{"not loaded", errNotLoaded, report.ErrorNotLoaded},
		{"run", fmt.Errorf("%w: CUDA out of memory", errRun), report.ErrorRun},
		{"joined, first sentinel wins", errors.Join(errRun, errInvalidInput), report.ErrorInvalidInput},
		{"unknown", errors.New("context canceled"), report.ErrorOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.err); got != tt.want {
				t.Errorf("classify(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestRecorderObserve(t *testing.T) {
	r := newTestRecorder()
	r.Observe("m", "1.0.0", ProviderCPU, 3*time.Millisecond, 2*time.Millisecond, nil)
	r.Observe("m", "1.0.0", ProviderCUDA, 20*time.Millisecond, 15*time.Millisecond, nil)
	r.Observe("m", "1.0.0", ProviderCPU, 100*time.Microsecond, 0, fmt.Errorf("m: %w", errInvalidInput))
	r.Observe("m", "", ProviderCPU, 10*time.Microsecond, 0, fmt.Errorf("m: %w", errBusy))
	r.Observe("m", "1.0.0", ProviderCPU, 9*time.Millisecond, 8*time.Millisecond, errRun)
	r.Observe("m", "1.0.0", "openvino", time.Millisecond, time.Millisecond, errors.New("something else"))
	r.Observe("m", "1.0.0", ProviderCPU, -time.Second, -time.Second, nil) // clock went backwards

	got := r.Snapshot(false)["m"]
	want := report.ModelTelemetry{
		Version:         "1.0.0",
		Requests:        7,
		Errors:          map[string]uint64{report.ErrorInvalidInput: 1, report.ErrorBusy: 1, report.ErrorRun: 1, report.ErrorOther: 1},
		Latency:         latencyHist(3, 20, 0),
		ComputeMillis:   report.ComputeMillis{CPU: 2 + 8 + 1, GPU: 15},
		QueueRejections: 1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Snapshot =\n%+v\nwant\n%+v", got, want)
	}
}

func TestRecorderNilClassifierCountsOther(t *testing.T) {
	r := NewRecorder(Options{})
	r.Observe("m", "1", ProviderCPU, time.Millisecond, 0, errBusy)
	got := r.Snapshot(false)["m"]
	if !reflect.DeepEqual(got.Errors, map[string]uint64{report.ErrorOther: 1}) || got.QueueRejections != 0 {
		t.Errorf("without a classifier: errors %v, rejections %d; want one other, none", got.Errors, got.QueueRejections)
	}
}

func TestRecorderUnknownKindCountsOther(t *testing.T) {
	r := NewRecorder(Options{Classify: func(error) string { return "made-up" }})
	r.Observe("m", "1", ProviderCPU, time.Millisecond, 0, errRun)
	if got := r.Snapshot(false)["m"].Errors; !reflect.DeepEqual(got, map[string]uint64{report.ErrorOther: 1}) {
		t.Errorf("errors = %v, want one other", got)
	}
}

func TestRecorderWindows(t *testing.T) {
	r := newTestRecorder()
	r.Observe("m", "1", ProviderCPU, time.Millisecond, time.Millisecond, nil)
	r.Observe("m", "1", ProviderCPU, time.Millisecond, time.Millisecond, errRun)

	peek := r.Snapshot(false)
	first := r.Snapshot(true)
	if !reflect.DeepEqual(peek, first) {
		t.Errorf("Snapshot(false) then Snapshot(true) differ:\n%+v\n%+v", peek, first)
	}
	if first["m"].Requests != 2 {
		t.Fatalf("first window: %d requests, want 2", first["m"].Requests)
	}
	empty := r.Snapshot(true)["m"]
	wantEmpty := report.ModelTelemetry{Version: "1", Latency: latencyHist()}
	if !reflect.DeepEqual(empty, wantEmpty) {
		t.Errorf("window after reset = %+v, want zero counts %+v", empty, wantEmpty)
	}

	r.Observe("m", "1", ProviderCPU, 2*time.Millisecond, time.Millisecond, nil)
	r.Rejected("m")
	third := r.Snapshot(true)["m"]
	if third.Requests != 1 || third.QueueRejections != 1 || third.Errors != nil {
		t.Errorf("third window = %+v, want 1 request, 1 rejection, no errors", third)
	}

	tot := r.Totals()["m"]
	sum := first["m"]
	for _, w := range []report.ModelTelemetry{empty, third} {
		if err := sum.Merge(w); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(tot, sum) {
		t.Errorf("Totals =\n%+v\nsum of windows =\n%+v", tot, sum)
	}
}

func TestRecorderVersionSwap(t *testing.T) {
	r := newTestRecorder()
	r.Observe("m", "1.0.0", ProviderCPU, time.Millisecond, time.Millisecond, nil)
	r.Snapshot(true)

	// A swap within the window: both versions serve.
	r.Observe("m", "1.0.0", ProviderCPU, time.Millisecond, time.Millisecond, nil)
	r.ColdStart("m", "1.1.0", 40*time.Millisecond)
	r.Observe("m", "1.1.0", ProviderCPU, time.Millisecond, time.Millisecond, nil)
	r.Observe("m", "", ProviderCPU, 0, 0, errBusy) // belongs to the serving version
	w := r.Snapshot(true)["m"]
	if w.Version != "1.1.0" || !slices.Equal(w.Versions, []string{"1.0.0", "1.1.0"}) {
		t.Errorf("mixed window: Version %q Versions %v, want 1.1.0 and both", w.Version, w.Versions)
	}
	if w.ColdStarts != 1 || w.ColdStartMillis != 40 || w.Requests != 3 {
		t.Errorf("mixed window = %+v", w)
	}

	// 1.0.0 has no requests in this window, so it is pruned at its end.
	r.Observe("m", "1.1.0", ProviderCPU, time.Millisecond, time.Millisecond, nil)
	var buf promBuffer
	r.writePrometheus(&buf.Buffer)
	if !buf.contains(`version="1.0.0"`) || !buf.contains(`version="1.1.0"`) {
		t.Errorf("both versions should still have series before pruning:\n%s", buf.String())
	}
	if w := r.Snapshot(true)["m"]; w.Versions != nil || w.Requests != 1 {
		t.Errorf("window after swap = %+v, want one version", w)
	}
	buf.Reset()
	r.writePrometheus(&buf.Buffer)
	if buf.contains(`version="1.0.0"`) || !buf.contains(`version="1.1.0"`) {
		t.Errorf("the idle old version should be pruned, the serving one kept:\n%s", buf.String())
	}
	// 1.1.0 served 2 requests and 1 busy refusal; 1.0.0's left with it.
	if tot := r.Totals()["m"]; tot.Requests != 3 || tot.Version != "1.1.0" || tot.ColdStarts != 1 {
		t.Errorf("totals after pruning = %+v", tot)
	}
}

func TestRecorderMaxModels(t *testing.T) {
	r := NewRecorder(Options{MaxModels: 2, Classify: testClassifier()})
	r.Observe("a", "1", ProviderCPU, time.Millisecond, 0, nil)
	r.Observe("b", "1", ProviderCPU, time.Millisecond, 0, nil)
	for i := range 50 {
		r.Observe(fmt.Sprintf("random-%d", i), "9", ProviderCPU, 0, 0, errNotLoaded)
	}
	r.Rejected("another")
	r.Shadow("yet-another", "2", true, 0, time.Millisecond)
	r.Observe("a", "1", ProviderCPU, time.Millisecond, 0, nil)

	snap := r.Snapshot(false)
	if len(snap) != 3 {
		t.Fatalf("models = %v, want a, b and %s", slices.Sorted(mapsKeys(snap)), report.OtherModel)
	}
	other := snap[report.OtherModel]
	if other.Requests != 50 || other.Errors[report.ErrorNotLoaded] != 50 || other.QueueRejections != 1 ||
		other.Version != "" || other.Shadow == nil || other.Shadow.Version != "" {
		t.Errorf("%s = %+v", report.OtherModel, other)
	}
	if snap["a"].Requests != 2 {
		t.Errorf("a = %+v, want 2 requests", snap["a"])
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestRecorderShadow(t *testing.T) {
	r := newTestRecorder()
	r.Observe("m", "1", ProviderCPU, time.Millisecond, 0, nil)
	if got := r.Snapshot(false)["m"].Shadow; got != nil {
		t.Errorf("Shadow = %+v before any comparison, want nil", got)
	}
	r.Shadow("m", "2", true, 0.01, 2*time.Millisecond)
	r.Shadow("m", "2", false, -0.5, 4*time.Millisecond)
	r.Shadow("m", "2", true, 0.2, 6*time.Millisecond)
	want := &report.ShadowStats{Version: "2", Compared: 3, Agreed: 2, MaxAbsDiff: 0.5, Latency: latencyHist(2, 4, 6)}
	if got := r.Snapshot(true)["m"].Shadow; !reflect.DeepEqual(got, want) {
		t.Errorf("Shadow = %+v, want %+v", got, want)
	}
	if got := r.Snapshot(false)["m"].Shadow; got != nil {
		t.Errorf("Shadow = %+v in a window without comparisons, want nil", got)
	}

	r.Shadow("m", "3", false, math.NaN(), time.Millisecond)
	got := r.Snapshot(false)["m"].Shadow
	if got == nil || got.Version != "3" || got.Compared != 1 || got.MaxAbsDiff != math.MaxFloat64 {
		t.Errorf("Shadow of new candidate with NaN difference = %+v", got)
	}
}

func TestRecorderForget(t *testing.T) {
	r := newTestRecorder()
	r.Observe("m", "1", ProviderCPU, time.Millisecond, 0, nil)
	r.Observe("n", "1", ProviderCPU, time.Millisecond, 0, nil)
	r.Forget("m")
	if snap := r.Snapshot(false); len(snap) != 1 || snap["n"].Requests != 1 {
		t.Errorf("after Forget: %+v, want only n", snap)
	}
}

// TestRecorderConcurrentWindows checks, under the race detector, that
// every observation lands in exactly one window while reports are taken.
func TestRecorderConcurrentWindows(t *testing.T) {
	r := newTestRecorder()
	const workers, perWorker = 4, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				var err error
				if i%10 == 0 {
					err = errRun
				}
				model := fmt.Sprintf("m%d", w%2)
				r.Observe(model, "1", ProviderCPU, time.Duration(i)*time.Microsecond, time.Microsecond, err)
				if i%100 == 0 {
					r.Shadow(model, "2", i%200 == 0, 0.1, time.Millisecond)
					r.Rejected(model)
				}
			}
		})
	}
	sums := map[string]report.ModelTelemetry{}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	collect := func() {
		for name, w := range r.Snapshot(true) {
			s := sums[name]
			if err := s.Merge(w); err != nil {
				t.Error(err)
			}
			sums[name] = s
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			collect()
		}
	}
	collect()

	var requests uint64
	for name, tot := range r.Totals() {
		s := sums[name]
		requests += s.Requests
		if s.Requests != tot.Requests || !reflect.DeepEqual(s.Errors, tot.Errors) ||
			!sameHistogram(s.Latency, tot.Latency) || s.QueueRejections != tot.QueueRejections ||
			s.Shadow.Compared != tot.Shadow.Compared || s.Shadow.Agreed != tot.Shadow.Agreed {
			t.Errorf("%s: windows add up to %+v, totals are %+v", name, s, tot)
		}
		if math.Abs(s.ComputeMillis.CPU-tot.ComputeMillis.CPU) > 1e-6 {
			t.Errorf("%s: compute %v in windows, %v in totals", name, s.ComputeMillis.CPU, tot.ComputeMillis.CPU)
		}
	}
	if requests != workers*perWorker {
		t.Errorf("windows hold %d requests, want %d", requests, workers*perWorker)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	r := newTestRecorder()
	r.Observe("m", "1.0.0", ProviderCPU, time.Millisecond, time.Millisecond, nil)
	err := fmt.Errorf("x: %w", errRun)
	allocs := testing.AllocsPerRun(1000, func() {
		r.Observe("m", "1.0.0", ProviderCPU, 3*time.Millisecond, 2*time.Millisecond, nil)
		r.Observe("m", "1.0.0", ProviderCUDA, 3*time.Millisecond, 2*time.Millisecond, err)
		r.Shadow("m", "1.1.0", true, 0.1, time.Millisecond)
	})
	if allocs != 0 {
		t.Errorf("Observe and Shadow allocate %v times per call, want 0", allocs)
	}
}

// mutexBaselineNs is the cost of an uncontended mutex-guarded increment,
// the least any goroutine-safe counter costs, measured once per run.
var mutexBaselineNs = sync.OnceValue(func() float64 {
	// Timed by hand: testing.Benchmark cannot run inside a benchmark.
	const n = 5_000_000
	best := math.Inf(1)
	for range 3 {
		var mu sync.Mutex
		var c uint64
		start := time.Now()
		for range n {
			mu.Lock()
			c++
			mu.Unlock()
		}
		best = min(best, float64(time.Since(start).Nanoseconds())/n)
		_ = c
	}
	return best
})

// reportBaselineRatio adds the cost per operation relative to the mutex
// baseline measured in the same run.
func reportBaselineRatio(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/mutexBaselineNs(), "x-mutex-baseline")
}

// BenchmarkObserve measures the hot-path cost the agent pays per request,
// absolute (ns/op) and as a ratio to a bare mutex-guarded counter.
func BenchmarkObserve(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		r := newTestRecorder()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			r.Observe("model-a", "1.0.0", ProviderCPU, time.Duration(i%5000)*time.Microsecond, time.Millisecond, nil)
		}
		reportBaselineRatio(b)
	})
	b.Run("serial-error", func(b *testing.B) {
		r := newTestRecorder()
		err := fmt.Errorf("m: %w", errRun)
		b.ReportAllocs()
		for b.Loop() {
			r.Observe("model-a", "1.0.0", ProviderCPU, time.Millisecond, time.Millisecond, err)
		}
		reportBaselineRatio(b)
	})
	b.Run("parallel-one-model", func(b *testing.B) {
		r := newTestRecorder()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Observe("model-a", "1.0.0", ProviderCPU, 2*time.Millisecond, time.Millisecond, nil)
			}
		})
		reportBaselineRatio(b)
	})
	b.Run("parallel-many-models", func(b *testing.B) {
		r := newTestRecorder()
		names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				r.Observe(names[i%len(names)], "1.0.0", ProviderCPU, 2*time.Millisecond, time.Millisecond, nil)
			}
		})
		reportBaselineRatio(b)
	})
}
