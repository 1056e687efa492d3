package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// shape describes the JSON the telemetry topic may carry.
type shape struct {
	kind   string           // "object", "map", "list", "string", "number"
	fields map[string]shape // object: the documented fields
	keys   []string         // map: the allowed keys; nil allows any (model names)
	elem   *shape           // map values and list elements
}

var (
	str = shape{kind: "string"}
	num = shape{kind: "number"}
)

func object(fields map[string]shape) shape { return shape{kind: "object", fields: fields} }

var histogramShape = object(map[string]shape{
	"bounds": {kind: "list", elem: &num},
	"counts": {kind: "list", elem: &num},
	"sum":    num,
	"count":  num,
})

// telemetryShape is the allow-list: aggregates only. A field added to
// report.Telemetry must be added here, after checking it carries no
// request data.
var telemetryShape = object(map[string]shape{
	"schema":           num,
	"device":           str,
	"time":             str,
	"start":            str,
	"interval_seconds": num,
	"sequence":         num,
	"models": {kind: "map", elem: ptr(object(map[string]shape{
		"version":          str,
		"versions":         {kind: "list", elem: &str},
		"requests":         num,
		"errors":           {kind: "map", keys: report.ErrorKinds(), elem: &num},
		"latency":          histogramShape,
		"compute_ms":       object(map[string]shape{"cpu": num, "gpu": num}),
		"cold_starts":      num,
		"cold_start_ms":    num,
		"queue_rejections": num,
		"shadow": object(map[string]shape{
			"version":      str,
			"compared":     num,
			"agreed":       num,
			"max_abs_diff": num,
			"latency":      histogramShape,
		}),
	}))},
	"system": object(map[string]shape{
		"cpu_percent":            num,
		"memory_total_bytes":     num,
		"memory_available_bytes": num,
		"process_rss_bytes":      num,
		"goroutines":             num,
		"uptime_seconds":         num,
		"gpus": {kind: "list", elem: ptr(object(map[string]shape{
			"index":               num,
			"utilization_percent": num,
			"memory_used_bytes":   num,
			"memory_total_bytes":  num,
		}))},
	}),
})

func ptr(s shape) *shape { return &s }

// conform checks v against s, recording the object fields it saw by path.
func conform(path string, v any, s shape, seen map[string]bool) []string {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, a...)) }
	switch s.kind {
	case "string":
		if _, ok := v.(string); !ok {
			bad("want a string, got %T", v)
		}
	case "number":
		if _, ok := v.(float64); !ok {
			bad("want a number, got %T", v)
		}
	case "list":
		l, ok := v.([]any)
		if !ok {
			bad("want a list, got %T", v)
			break
		}
		for _, e := range l {
			errs = append(errs, conform(path+"[]", e, *s.elem, seen)...)
		}
	case "map", "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, got %T", v)
			break
		}
		for k, e := range m {
			if s.kind == "map" {
				if s.keys != nil && !slices.Contains(s.keys, k) {
					bad("key %q not allowed (allowed: %v)", k, s.keys)
				}
				errs = append(errs, conform(path+".*", e, *s.elem, seen)...)
				continue
			}
			fs, ok := s.fields[k]
			if !ok {
				bad("undocumented field %q: telemetry carries aggregates only", k)
				continue
			}
			seen[path+"."+k] = true
			errs = append(errs, conform(path+"."+k, e, fs, seen)...)
		}
	}
	return errs
}

// allPaths lists every object field path of s.
func allPaths(path string, s shape) []string {
	var out []string
	switch s.kind {
	case "object":
		for k, f := range s.fields {
			out = append(out, path+"."+k)
			out = append(out, allPaths(path+"."+k, f)...)
		}
	case "map":
		out = append(out, allPaths(path+".*", *s.elem)...)
	case "list":
		out = append(out, allPaths(path+"[]", *s.elem)...)
	}
	return out
}

// TestTelemetryCarriesAggregatesOnly proves the data-residency rule of the
// telemetry topic: whatever the agent records, the payload holds only the
// documented aggregate fields, and nothing of the requests themselves —
// not even error messages, which may quote a request.
func TestTelemetryCarriesAggregatesOnly(t *testing.T) {
	const secret = "SECRET-SENSOR-READING-0.7341"
	rec := NewRecorder(Options{Classify: testClassifier()})
	// Every kind of event, with errors that quote the request.
	rec.Observe("vibration", "1.0.0", ProviderCPU, 2*time.Millisecond, time.Millisecond, nil)
	rec.Observe("vibration", "1.0.0", ProviderCPU, time.Millisecond, 0,
		fmt.Errorf("%w: input %q has shape [1 3], want [1 4]", errInvalidInput, secret))
	rec.Observe("vibration", "1.0.0", ProviderCPU, time.Millisecond, 0, errors.New("client sent "+secret))
	rec.ColdStart("vibration", "1.1.0", 30*time.Millisecond)
	rec.Observe("vibration", "1.1.0", ProviderCUDA, 4*time.Millisecond, 3*time.Millisecond, fmt.Errorf("%w: %s", errRun, secret))
	rec.Observe("vibration", "1.1.0", ProviderCUDA, 4*time.Millisecond, 3*time.Millisecond, nil)
	rec.Observe("vibration", "", ProviderCPU, 0, 0, fmt.Errorf("%w: queue full", errBusy))
	rec.Rejected("vibration")
	rec.Shadow("vibration", "1.2.0", false, 0.4, 5*time.Millisecond)

	pub := &fakePublisher{}
	sampler := NewSampler(SamplerOptions{
		ProcFS: fixtureFS(t, mustRead(t, "proc-debian12/stat")),
		GPUs: func(context.Context) ([]report.GPUStats, error) {
			return []report.GPUStats{{Index: 0, UtilizationPercent: 10, MemoryUsedBytes: 1 << 20, MemoryTotalBytes: 1 << 30}}, nil
		},
	})
	rep, err := NewReporter(ReporterConfig{Device: "dev-1", Topic: "t", Recorder: rec, Sampler: sampler, Publisher: pub, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rep.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	payload := pub.msgs[0].payload

	if strings.Contains(string(payload), secret) || strings.Contains(string(payload), "shape [1 3]") {
		t.Errorf("payload leaks request data:\n%s", payload)
	}
	var doc any
	if err := json.Unmarshal(payload, &doc); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range conform("$", doc, telemetryShape, seen) {
		t.Error(e)
	}
	// Every documented field must have been exercised, so that the
	// allow-list cannot silently drift from report.Telemetry.
	var missing []string
	for _, p := range allPaths("$", telemetryShape) {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("fields of the allow-list not in the payload (extend the test): %v\n%s", missing, payload)
	}
}
