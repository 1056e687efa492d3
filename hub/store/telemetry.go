package store

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// TelemetryRollup is what one device reported about one version of one
// model during one UTC minute, merged from every telemetry payload whose
// window ended in that minute. Payloads are deltas, so merging adds counts
// and adds histograms bucket by bucket (see Merge): rollups of any devices
// and minutes can be merged again into exact totals and, with identical
// bucket bounds, the same histogram as if every request had been observed
// in one place.
//
// A payload entry contributes to two rollups when the model had a shadow
// candidate: the serving version's rollup gets the request counts, and the
// candidate version's rollup gets the shadow comparison (Shadow). So a
// rollout's version has one set of rollups whether it runs active or shadow.
type TelemetryRollup struct {
	// Device, Model, Version and Minute identify the rollup. Minute is the
	// UTC minute in which the payloads' windows ended.
	Device  string    `json:"device"`
	Model   string    `json:"model"`
	Version string    `json:"version"`
	Minute  time.Time `json:"minute"`
	// Reports counts the payloads merged in.
	Reports uint64 `json:"reports"`
	// Requests counts finished requests served by this version, failed
	// ones included.
	Requests uint64 `json:"requests"`
	// Errors counts failed requests by kind (report.Error* constants).
	Errors map[string]uint64 `json:"errors,omitempty"`
	// Latency is the histogram of successful requests' latency in ms.
	Latency report.Histogram `json:"latency"`
	// ComputeMillis is session run time by kind of execution provider.
	ComputeMillis report.ComputeMillis `json:"compute_ms"`
	// ColdStarts and ColdStartMillis count lazy reloads and their total time.
	ColdStarts      uint64  `json:"cold_starts"`
	ColdStartMillis float64 `json:"cold_start_ms"`
	// QueueRejections counts requests refused for a full queue.
	QueueRejections uint64 `json:"queue_rejections"`
	// MixedWith lists other versions that served within the same payload
	// windows: a swap happened and those windows' counts mix the versions
	// (they are attributed to the version serving at the window's end).
	MixedWith []string `json:"mixed_with,omitempty"`
	// Shadow is this version's comparison against the serving version when
	// it ran as a shadow candidate.
	Shadow ShadowRollup `json:"shadow"`
}

// ShadowRollup aggregates shadow comparisons of a candidate version.
type ShadowRollup struct {
	// Compared counts requests run on both versions; Agreed those whose
	// outputs had the same argmax.
	Compared uint64 `json:"compared"`
	Agreed   uint64 `json:"agreed"`
	// MaxAbsDiff is the largest absolute output difference seen.
	MaxAbsDiff float64 `json:"max_abs_diff"`
	// Latency is the candidate's latency histogram in ms.
	Latency report.Histogram `json:"latency"`
}

// key returns the identity of the rollup as one comparable value.
func (r *TelemetryRollup) key() rollupKey {
	return rollupKey{r.Device, r.Model, r.Version, r.Minute.UnixMicro()}
}

// rollupKey identifies a TelemetryRollup; minute is in microseconds since
// the Unix epoch.
type rollupKey struct {
	device, model, version string
	minute                 int64
}

// Merge adds o's counts and histograms to r; the identity fields stay r's.
// It returns an error wrapping ErrInvalid and report.ErrBoundsMismatch or
// report.ErrInvalidHistogram, and leaves r unchanged, when a histogram
// cannot be merged, or wrapping ErrInvalid when a count would overflow.
func (r *TelemetryRollup) Merge(o TelemetryRollup) error {
	lat := r.Latency.Clone()
	if err := lat.Merge(o.Latency); err != nil {
		return fmt.Errorf("latency: %w: %w", ErrInvalid, err)
	}
	shadowLat := r.Shadow.Latency.Clone()
	if err := shadowLat.Merge(o.Shadow.Latency); err != nil {
		return fmt.Errorf("shadow latency: %w: %w", ErrInvalid, err)
	}
	var overflow bool
	add := func(a, b uint64) uint64 {
		if a+b < a {
			overflow = true
		}
		return a + b
	}
	n := *r
	n.Reports = add(r.Reports, o.Reports)
	n.Requests = add(r.Requests, o.Requests)
	n.ColdStarts = add(r.ColdStarts, o.ColdStarts)
	n.QueueRejections = add(r.QueueRejections, o.QueueRejections)
	n.Shadow.Compared = add(r.Shadow.Compared, o.Shadow.Compared)
	n.Shadow.Agreed = add(r.Shadow.Agreed, o.Shadow.Agreed)
	if len(o.Errors) > 0 {
		n.Errors = maps.Clone(r.Errors)
		if n.Errors == nil {
			n.Errors = make(map[string]uint64, len(o.Errors))
		}
		for k, c := range o.Errors {
			n.Errors[k] = add(n.Errors[k], c)
		}
	}
	if overflow {
		return fmt.Errorf("telemetry counts overflow: %w", ErrInvalid)
	}
	n.Latency, n.Shadow.Latency = lat, shadowLat
	n.ComputeMillis.CPU += o.ComputeMillis.CPU
	n.ComputeMillis.GPU += o.ComputeMillis.GPU
	n.ColdStartMillis += o.ColdStartMillis
	n.Shadow.MaxAbsDiff = max(r.Shadow.MaxAbsDiff, o.Shadow.MaxAbsDiff)
	n.MixedWith = slices.Clone(r.MixedWith)
	for _, v := range o.MixedWith {
		if v != n.Version && !slices.Contains(n.MixedWith, v) {
			n.MixedWith = append(n.MixedWith, v)
		}
	}
	slices.Sort(n.MixedWith)
	*r = n
	return nil
}

// ErrorCount returns the total of the rollup's errors.
func (r *TelemetryRollup) ErrorCount() uint64 {
	var n uint64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// Minute returns t's UTC minute: the Minute of rollups it falls in.
func Minute(t time.Time) time.Time { return t.UTC().Truncate(time.Minute) }

// RollupsFromTelemetry splits a telemetry payload received from device
// into rollups of the minute of t.Time: one per model for the serving
// version and, for a model with a shadow candidate, one with the candidate's
// comparison. Entries for the same key are merged. The device argument is
// authoritative (it comes from the topic); t.Device is ignored. It returns
// an error wrapping ErrInvalid for a payload without a time or with an
// invalid histogram or float.
func RollupsFromTelemetry(device string, t report.Telemetry) ([]TelemetryRollup, error) {
	if t.Time.IsZero() {
		return nil, fmt.Errorf("telemetry from %s has no time: %w", device, ErrInvalid)
	}
	minute := Minute(t.Time)
	byKey := map[rollupKey]*TelemetryRollup{}
	var keys []rollupKey
	add := func(r TelemetryRollup) error {
		k := r.key()
		if cur, ok := byKey[k]; ok {
			return cur.Merge(r)
		}
		// Merging into an empty rollup validates r's histograms and copies them.
		empty := TelemetryRollup{Device: r.Device, Model: r.Model, Version: r.Version, Minute: r.Minute}
		if err := empty.Merge(r); err != nil {
			return err
		}
		byKey[k] = &empty
		keys = append(keys, k)
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(t.Models)) {
		m := t.Models[name]
		if name == "" {
			return nil, fmt.Errorf("telemetry from %s: empty model name: %w", device, ErrInvalid)
		}
		if err := finite(m.ComputeMillis.CPU, m.ComputeMillis.GPU, m.ColdStartMillis); err != nil {
			return nil, fmt.Errorf("telemetry from %s, model %s: %w", device, name, err)
		}
		r := TelemetryRollup{
			Device: device, Model: name, Version: m.Version, Minute: minute, Reports: 1,
			Requests: m.Requests, Errors: m.Errors, Latency: m.Latency, ComputeMillis: m.ComputeMillis,
			ColdStarts: m.ColdStarts, ColdStartMillis: m.ColdStartMillis, QueueRejections: m.QueueRejections,
		}
		for _, v := range m.Versions {
			if v != m.Version {
				r.MixedWith = append(r.MixedWith, v)
			}
		}
		if err := add(r); err != nil {
			return nil, fmt.Errorf("telemetry from %s, model %s: %w", device, name, err)
		}
		if s := m.Shadow; s != nil {
			if err := finite(s.MaxAbsDiff); err != nil {
				return nil, fmt.Errorf("telemetry from %s, model %s shadow: %w", device, name, err)
			}
			if s.Agreed > s.Compared {
				return nil, fmt.Errorf("telemetry from %s, model %s: shadow agreed %d of %d compared: %w", device, name, s.Agreed, s.Compared, ErrInvalid)
			}
			sr := TelemetryRollup{
				Device: device, Model: name, Version: s.Version, Minute: minute, Reports: 1,
				Shadow: ShadowRollup{Compared: s.Compared, Agreed: s.Agreed, MaxAbsDiff: s.MaxAbsDiff, Latency: s.Latency},
			}
			if err := add(sr); err != nil {
				return nil, fmt.Errorf("telemetry from %s, model %s shadow %s: %w", device, name, s.Version, err)
			}
		}
	}
	out := make([]TelemetryRollup, len(keys))
	for i, k := range keys {
		out[i] = *byKey[k]
	}
	return out, nil
}

func finite(vs ...float64) error {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("value %v is not a finite non-negative number: %w", v, ErrInvalid)
		}
	}
	return nil
}

// TelemetryQuery selects rollups. Zero fields select everything.
type TelemetryQuery struct {
	// Model selects one model; empty for all.
	Model string
	// Version selects one version of the model; empty for all.
	Version string
	// Devices selects devices; nil for all (an empty non-nil slice selects
	// none).
	Devices []string
	// Since selects minutes at or after Since's minute; zero for all.
	Since time.Time
	// Until selects minutes that begin before Until; zero for no end.
	Until time.Time
}

// TelemetrySummary is the merge of the rollups a TelemetryQuery selected:
// the inputs of rollout gates.
type TelemetrySummary struct {
	// Rollups is how many rollups were merged, and Devices how many
	// distinct devices they came from.
	Rollups int `json:"rollups"`
	Devices int `json:"devices"`
	// First and Last are the earliest and latest minutes merged (zero when
	// nothing matched).
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Reports counts the payloads behind the rollups.
	Reports uint64 `json:"reports"`
	// Requests counts finished requests, failed ones included.
	Requests uint64 `json:"requests"`
	// Errors counts failed requests by kind.
	Errors map[string]uint64 `json:"errors"`
	// Latency merges the rollups' latency histograms.
	Latency report.Histogram `json:"latency"`
	// LatencySkipped counts latency observations left out of Latency
	// because their histogram had other bucket bounds than the rest (an
	// agent configured differently); they cannot be merged without guessing.
	LatencySkipped uint64 `json:"latency_skipped,omitempty"`
	// ComputeMillis sums session run time by kind of execution provider.
	ComputeMillis report.ComputeMillis `json:"compute_ms"`
	// ColdStarts, ColdStartMillis and QueueRejections are summed.
	ColdStarts      uint64  `json:"cold_starts"`
	ColdStartMillis float64 `json:"cold_start_ms"`
	QueueRejections uint64  `json:"queue_rejections"`
	// Shadow merges the shadow comparisons; its Latency obeys the same
	// bounds rule as Latency, skipped observations counted in
	// ShadowLatencySkipped.
	Shadow               ShadowRollup `json:"shadow"`
	ShadowLatencySkipped uint64       `json:"shadow_latency_skipped,omitempty"`
}

// Summarize merges rollups into a summary. Histograms are merged when their
// bounds equal the reference bounds: report.DefaultLatencyBoundsMs if any
// rollup uses them, else the first rollup's; the others are counted as
// skipped.
func Summarize(rollups []TelemetryRollup) TelemetrySummary {
	s := TelemetrySummary{Errors: map[string]uint64{}}
	devices := map[string]bool{}
	latRef := referenceBounds(rollups, func(r *TelemetryRollup) report.Histogram { return r.Latency })
	shadowRef := referenceBounds(rollups, func(r *TelemetryRollup) report.Histogram { return r.Shadow.Latency })
	for i := range rollups {
		r := &rollups[i]
		s.Rollups++
		devices[r.Device] = true
		if s.First.IsZero() || r.Minute.Before(s.First) {
			s.First = r.Minute
		}
		if r.Minute.After(s.Last) {
			s.Last = r.Minute
		}
		s.Reports += r.Reports
		s.Requests += r.Requests
		for k, c := range r.Errors {
			s.Errors[k] += c
		}
		s.LatencySkipped += mergeIfBounds(&s.Latency, r.Latency, latRef)
		s.ComputeMillis.CPU += r.ComputeMillis.CPU
		s.ComputeMillis.GPU += r.ComputeMillis.GPU
		s.ColdStarts += r.ColdStarts
		s.ColdStartMillis += r.ColdStartMillis
		s.QueueRejections += r.QueueRejections
		s.Shadow.Compared += r.Shadow.Compared
		s.Shadow.Agreed += r.Shadow.Agreed
		s.Shadow.MaxAbsDiff = max(s.Shadow.MaxAbsDiff, r.Shadow.MaxAbsDiff)
		s.ShadowLatencySkipped += mergeIfBounds(&s.Shadow.Latency, r.Shadow.Latency, shadowRef)
	}
	s.Devices = len(devices)
	return s
}

func referenceBounds(rollups []TelemetryRollup, h func(*TelemetryRollup) report.Histogram) []float64 {
	def := report.DefaultLatencyBoundsMs()
	var first []float64
	for i := range rollups {
		b := h(&rollups[i]).Bounds
		if len(b) == 0 {
			continue
		}
		if slices.Equal(b, def) {
			return def
		}
		if first == nil {
			first = b
		}
	}
	return first
}

// mergeIfBounds merges o into h if its bounds are ref and returns the
// number of observations it left out.
func mergeIfBounds(h *report.Histogram, o report.Histogram, ref []float64) uint64 {
	if o.Count == 0 && len(o.Bounds) == 0 {
		return 0
	}
	if !slices.Equal(o.Bounds, ref) {
		return o.Count
	}
	if err := h.Merge(o); err != nil {
		// Stored rollups were validated when written; a histogram that no
		// longer merges is counted as skipped rather than failing a gate.
		return o.Count
	}
	return 0
}

// ErrorCount returns the total of failed requests.
func (s *TelemetrySummary) ErrorCount() uint64 {
	var n uint64
	for _, c := range s.Errors {
		n += c
	}
	return n
}

// ErrorRate returns failed requests per finished request, 0–1, or NaN when
// there were no requests (no evidence either way).
func (s *TelemetrySummary) ErrorRate() float64 {
	if s.Requests == 0 {
		return math.NaN()
	}
	return float64(s.ErrorCount()) / float64(s.Requests)
}

// LatencyQuantile estimates the q-quantile of successful requests' latency
// in ms (see report.Histogram.Quantile); NaN without observations.
func (s *TelemetrySummary) LatencyQuantile(q float64) float64 { return s.Latency.Quantile(q) }

// P95LatencyMs is LatencyQuantile(0.95).
func (s *TelemetrySummary) P95LatencyMs() float64 { return s.Latency.Quantile(0.95) }

// ShadowAgreement returns the share of shadow comparisons that agreed, 0–1,
// or NaN when nothing was compared.
func (s *TelemetrySummary) ShadowAgreement() float64 {
	if s.Shadow.Compared == 0 {
		return math.NaN()
	}
	return float64(s.Shadow.Agreed) / float64(s.Shadow.Compared)
}

// SortRollups orders rollups by minute, device, model and version: the
// order ListTelemetry returns.
func SortRollups(rs []TelemetryRollup) {
	slices.SortFunc(rs, func(a, b TelemetryRollup) int {
		return cmp.Or(a.Minute.Compare(b.Minute), cmp.Compare(a.Device, b.Device),
			cmp.Compare(a.Model, b.Model), cmp.Compare(a.Version, b.Version))
	})
}
