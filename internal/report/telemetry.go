package report

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// Telemetry is one {prefix}/devices/{id}/telemetry payload, published with
// QoS 0 and not retained every reporting interval.
//
// It carries aggregates only — counts, error counts, latency histograms,
// compute time and resource usage — never an inference input or output, an
// error message or anything a client sent. Every count covers the window
// from Start to Time (a delta, not a running total), so the hub sums
// consecutive reports and merges histograms with [Histogram.Merge]; it never
// averages. Sequence lets the hub see windows lost in transit (QoS 0).
type Telemetry struct {
	Schema int    `json:"schema"`
	Device string `json:"device"`
	// Time is when the report was built: the end of its window.
	Time time.Time `json:"time"`
	// Start is the beginning of the window: the previous report's Time, or
	// the agent's start for the first report.
	Start time.Time `json:"start"`
	// IntervalSeconds is the length of the window, Time − Start as measured
	// by the agent's monotonic clock (so a wall-clock step cannot distort
	// it), to turn counts into rates. It exceeds the configured interval
	// when a failed publish was carried over into this report.
	IntervalSeconds float64 `json:"interval_seconds"`
	// Sequence numbers the reports of one agent run: 1, 2, 3… A gap means a
	// report was lost; a restart begins again at 1.
	Sequence uint64 `json:"sequence"`
	// Models maps model name to that model's aggregates in the window.
	Models map[string]ModelTelemetry `json:"models"`
	// System is the device's resource usage at Time.
	System DeviceStats `json:"system"`
}

// Error kinds, the keys of [ModelTelemetry.Errors]. The set is closed: an
// error the agent cannot classify counts as ErrorOther.
const (
	// ErrorInvalidInput is a request the model cannot take (wrong tensor
	// names, shapes or types): the client's fault.
	ErrorInvalidInput = "invalid_input"
	// ErrorBusy is a request refused because the model's concurrency limit
	// and queue were full.
	ErrorBusy = "busy"
	// ErrorRun is a valid request on which the runtime failed.
	ErrorRun = "run"
	// ErrorNotLoaded is a request for a model that is not loaded.
	ErrorNotLoaded = "not_loaded"
	// ErrorOther is any other failure (for example a cancelled request).
	ErrorOther = "other"
)

// ErrorKinds returns every error kind, in a fixed order.
func ErrorKinds() []string {
	return []string{ErrorInvalidInput, ErrorBusy, ErrorRun, ErrorNotLoaded, ErrorOther}
}

// OtherModel is the model name under which an agent aggregates requests for
// models beyond its limit of distinct names (for example requests naming
// models that do not exist). It cannot clash with a real model name: model
// names never contain parentheses.
const OtherModel = "(other)"

// ModelTelemetry is the aggregate of one model's requests in a window.
type ModelTelemetry struct {
	// Version is the version that served last.
	Version string `json:"version,omitempty"`
	// Versions lists, sorted, every version that served requests in the
	// window when there was more than one (a swap happened within the
	// window); the aggregates then mix them. Empty otherwise.
	Versions []string `json:"versions,omitempty"`
	// Requests counts finished requests, failed ones included.
	Requests uint64 `json:"requests"`
	// Errors counts failed requests by kind (Error* constants); kinds with no
	// failure are left out.
	Errors map[string]uint64 `json:"errors,omitempty"`
	// Latency is the distribution of successful requests' latencies in
	// milliseconds, from the request's arrival to its answer (queueing
	// included). Failed requests are counted in Errors only, so that fast
	// refusals cannot make a model look quick.
	Latency Histogram `json:"latency"`
	// ComputeMillis is the session run time, split by where it ran: the
	// basis for metering.
	ComputeMillis ComputeMillis `json:"compute_ms"`
	// ColdStarts counts lazy reloads of a model unloaded for idleness, and
	// ColdStartMillis is the total time they took.
	ColdStarts      uint64  `json:"cold_starts"`
	ColdStartMillis float64 `json:"cold_start_ms"`
	// QueueRejections counts requests refused because the model's
	// concurrency limit and queue were full. Those the agent recorded as
	// failed requests are also in Requests and Errors[ErrorBusy].
	QueueRejections uint64 `json:"queue_rejections"`
	// Shadow describes the candidate running in shadow mode beside this
	// model, when it was compared in the window.
	Shadow *ShadowStats `json:"shadow,omitempty"`
}

// ComputeMillis is session run time in milliseconds by kind of execution
// provider.
type ComputeMillis struct {
	// CPU is time on the CPU execution provider.
	CPU float64 `json:"cpu"`
	// GPU is time on a GPU execution provider (CUDA).
	GPU float64 `json:"gpu"`
}

// ShadowStats compares a candidate version run on a sample of live requests
// beside the serving version, without serving its answers.
type ShadowStats struct {
	// Version is the candidate's version.
	Version string `json:"version"`
	// Compared counts requests run on both versions, and Agreed those whose
	// outputs had the same argmax.
	Compared uint64 `json:"compared"`
	Agreed   uint64 `json:"agreed"`
	// MaxAbsDiff is the largest absolute difference between corresponding
	// output values seen in the window.
	MaxAbsDiff float64 `json:"max_abs_diff"`
	// Latency is the distribution of the candidate's latencies in
	// milliseconds.
	Latency Histogram `json:"latency"`
}

// DeviceStats is the device's resource usage.
type DeviceStats struct {
	// CPUPercent is the busy share of all CPUs since the previous report
	// (since boot for the first), 0–100.
	CPUPercent float64 `json:"cpu_percent"`
	// MemoryTotalBytes and MemoryAvailableBytes describe the device's RAM
	// (MemAvailable: what can be allocated without swapping).
	MemoryTotalBytes     uint64 `json:"memory_total_bytes"`
	MemoryAvailableBytes uint64 `json:"memory_available_bytes"`
	// ProcessRSSBytes is the agent's resident memory, ONNX Runtime included.
	ProcessRSSBytes uint64 `json:"process_rss_bytes"`
	// Goroutines is the agent's goroutine count.
	Goroutines int `json:"goroutines"`
	// UptimeSeconds is how long the agent has been running.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// GPUs describes the NVIDIA GPUs, if any.
	GPUs []GPUStats `json:"gpus,omitempty"`
}

// GPUStats is the usage of one GPU.
type GPUStats struct {
	// Index is the GPU's NVML index.
	Index int `json:"index"`
	// UtilizationPercent is the share of time a kernel ran, 0–100.
	UtilizationPercent float64 `json:"utilization_percent"`
	MemoryUsedBytes    uint64  `json:"memory_used_bytes"`
	MemoryTotalBytes   uint64  `json:"memory_total_bytes"`
}

// DefaultLatencyBoundsMs returns the upper bounds, in milliseconds, of the
// latency histograms agents report: 0.1 ms to 10 s. Agents and the hub must
// use the same bounds to merge histograms. Each call returns a new slice.
func DefaultLatencyBoundsMs() []float64 {
	return []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}
}

// Errors returned by the [Histogram] methods.
var (
	// ErrBoundsMismatch means two histograms with different bucket bounds
	// were merged: they cannot be combined without guessing.
	ErrBoundsMismatch = errors.New("histogram bucket bounds differ")
	// ErrInvalidHistogram means a histogram's fields are inconsistent (for
	// example a report from a faulty or malicious agent).
	ErrInvalidHistogram = errors.New("invalid histogram")
)

// Histogram counts observations in buckets with fixed upper bounds, like a
// Prometheus histogram but not cumulative: Counts[i] counts the values v
// with Bounds[i-1] < v ≤ Bounds[i], and the last count, at index
// len(Bounds), the values above the last bound.
//
// The zero value is an empty histogram without bounds: [Histogram.Observe]
// gives it [DefaultLatencyBoundsMs] and [Histogram.Merge] those of the
// histogram merged into it. A Histogram is not safe for concurrent use.
type Histogram struct {
	// Bounds are the buckets' upper bounds, strictly increasing and finite.
	Bounds []float64 `json:"bounds"`
	// Counts has len(Bounds)+1 entries; the last is the overflow bucket.
	Counts []uint64 `json:"counts"`
	// Sum is the sum of the observed values.
	Sum float64 `json:"sum"`
	// Count is the number of observations, the sum of Counts.
	Count uint64 `json:"count"`
}

// NewHistogram returns an empty histogram with the given bounds (copied).
// It returns ErrInvalidHistogram if the bounds are empty, not finite or not
// strictly increasing.
func NewHistogram(boundsMs []float64) (Histogram, error) {
	h := Histogram{Bounds: slices.Clone(boundsMs), Counts: make([]uint64, len(boundsMs)+1)}
	if len(boundsMs) == 0 {
		return Histogram{}, fmt.Errorf("%w: no bucket bounds", ErrInvalidHistogram)
	}
	if err := h.Validate(); err != nil {
		return Histogram{}, err
	}
	return h, nil
}

// isZero reports whether h is the zero value (no bounds, no observations).
func (h Histogram) isZero() bool {
	return len(h.Bounds) == 0 && len(h.Counts) == 0 && h.Count == 0 && h.Sum == 0
}

// Validate checks that h is the zero value or a consistent histogram:
// finite, strictly increasing bounds, len(Bounds)+1 counts adding up to
// Count, and a finite Sum. It returns an error wrapping ErrInvalidHistogram.
func (h Histogram) Validate() error {
	if h.isZero() {
		return nil
	}
	if len(h.Bounds) == 0 {
		return fmt.Errorf("%w: observations without bucket bounds", ErrInvalidHistogram)
	}
	for i, b := range h.Bounds {
		if math.IsNaN(b) || math.IsInf(b, 0) {
			return fmt.Errorf("%w: bound %d is %v", ErrInvalidHistogram, i, b)
		}
		if i > 0 && b <= h.Bounds[i-1] {
			return fmt.Errorf("%w: bounds not strictly increasing at %d (%v after %v)", ErrInvalidHistogram, i, b, h.Bounds[i-1])
		}
	}
	if len(h.Counts) != len(h.Bounds)+1 {
		return fmt.Errorf("%w: %d counts for %d bounds (want %d)", ErrInvalidHistogram, len(h.Counts), len(h.Bounds), len(h.Bounds)+1)
	}
	var total uint64
	for _, c := range h.Counts {
		if total+c < total {
			return fmt.Errorf("%w: counts overflow", ErrInvalidHistogram)
		}
		total += c
	}
	if total != h.Count {
		return fmt.Errorf("%w: counts add up to %d, count is %d", ErrInvalidHistogram, total, h.Count)
	}
	if math.IsNaN(h.Sum) || math.IsInf(h.Sum, 0) {
		return fmt.Errorf("%w: sum is %v", ErrInvalidHistogram, h.Sum)
	}
	return nil
}

// Clone returns a deep copy of h.
func (h Histogram) Clone() Histogram {
	h.Bounds = slices.Clone(h.Bounds)
	h.Counts = slices.Clone(h.Counts)
	return h
}

// Observe adds one value, in the unit of the bounds (milliseconds for
// latencies). A histogram without bounds first takes
// [DefaultLatencyBoundsMs]. Negative values count as 0; NaN and infinite
// values are ignored, as they would make Sum meaningless (and unencodable
// as JSON).
func (h *Histogram) Observe(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	if len(h.Bounds) == 0 {
		h.Bounds = DefaultLatencyBoundsMs()
	}
	if n := len(h.Bounds) + 1; len(h.Counts) != n {
		// Only a histogram built by hand gets here; keep what fits rather
		// than panic on the hot path.
		c := make([]uint64, n)
		copy(c, h.Counts)
		h.Counts = c
	}
	v = max(v, 0)
	h.Counts[sort.SearchFloat64s(h.Bounds, v)]++
	h.Sum += v
	h.Count++
}

// Merge adds the observations of o to h. Both must be valid (see
// [Histogram.Validate]) and have the same bounds, except that an empty
// zero-value h takes o's bounds and a zero-value o changes nothing. It
// returns an error wrapping ErrBoundsMismatch or ErrInvalidHistogram and
// leaves h unchanged on error.
func (h *Histogram) Merge(o Histogram) error {
	if err := h.Validate(); err != nil {
		return fmt.Errorf("merge into: %w", err)
	}
	if err := o.Validate(); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	switch {
	case o.isZero():
		return nil
	case h.isZero():
		*h = o.Clone()
		return nil
	case !slices.Equal(h.Bounds, o.Bounds):
		return fmt.Errorf("%w: %v and %v", ErrBoundsMismatch, h.Bounds, o.Bounds)
	}
	if h.Count+o.Count < h.Count {
		return fmt.Errorf("%w: count overflow", ErrInvalidHistogram)
	}
	for i, c := range o.Counts {
		h.Counts[i] += c // cannot overflow: each is at most its Count
	}
	h.Count += o.Count
	h.Sum += o.Sum
	return nil
}

// Quantile estimates the q-quantile (0 ≤ q ≤ 1; values outside are clamped)
// by linear interpolation within the bucket that holds it, taking 0 as the
// lower edge of the first bucket when its bound is positive. A quantile that
// falls in the overflow bucket is reported as the last bound, the largest
// value the histogram can vouch for. It returns NaN for an empty or invalid
// histogram and for a NaN q.
func (h Histogram) Quantile(q float64) float64 {
	if math.IsNaN(q) || h.Count == 0 || h.Validate() != nil {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	rank := q * float64(h.Count)
	var below uint64 // observations in the buckets before i
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		if float64(below+c) >= rank {
			if i == len(h.Bounds) {
				return h.Bounds[len(h.Bounds)-1]
			}
			upper := h.Bounds[i]
			lower := 0.0
			if i > 0 {
				lower = h.Bounds[i-1]
			} else if upper <= 0 {
				lower = upper
			}
			return lower + (upper-lower)*(rank-float64(below))/float64(c)
		}
		below += c
	}
	return h.Bounds[len(h.Bounds)-1] // unreachable for a valid histogram
}

// Mean returns Sum/Count, or NaN for an empty histogram.
func (h Histogram) Mean() float64 {
	if h.Count == 0 {
		return math.NaN()
	}
	return h.Sum / float64(h.Count)
}

// Merge adds o, the aggregate of a later window of the same model, to m:
// counts add up, histograms merge, MaxAbsDiff takes the larger value, and
// Version becomes o's (when set). Shadow stats of another candidate replace
// m's. It returns an error wrapping ErrBoundsMismatch or ErrInvalidHistogram
// and leaves m unchanged on error.
func (m *ModelTelemetry) Merge(o ModelTelemetry) error {
	lat := m.Latency.Clone()
	if err := lat.Merge(o.Latency); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	var shadow *ShadowStats
	switch {
	case o.Shadow == nil && m.Shadow != nil:
		s := *m.Shadow
		s.Latency = s.Latency.Clone()
		shadow = &s
	case o.Shadow != nil && (m.Shadow == nil || m.Shadow.Version != o.Shadow.Version):
		s := *o.Shadow
		s.Latency = s.Latency.Clone()
		shadow = &s
	case o.Shadow != nil:
		s := *m.Shadow
		s.Latency = s.Latency.Clone()
		if err := s.Latency.Merge(o.Shadow.Latency); err != nil {
			return fmt.Errorf("shadow latency: %w", err)
		}
		s.Compared += o.Shadow.Compared
		s.Agreed += o.Shadow.Agreed
		s.MaxAbsDiff = max(s.MaxAbsDiff, o.Shadow.MaxAbsDiff)
		shadow = &s
	}

	versions := m.servedVersions()
	for _, v := range o.servedVersions() {
		if !slices.Contains(versions, v) {
			versions = append(versions, v)
		}
	}
	slices.Sort(versions)
	if len(versions) < 2 {
		versions = nil
	}
	if o.Version != "" {
		m.Version = o.Version
	}
	m.Versions = versions
	m.Requests += o.Requests
	if len(o.Errors) > 0 {
		errs := make(map[string]uint64, len(m.Errors)+len(o.Errors))
		for k, n := range m.Errors {
			errs[k] = n
		}
		for k, n := range o.Errors {
			errs[k] += n
		}
		m.Errors = errs
	}
	m.Latency = lat
	m.ComputeMillis.CPU += o.ComputeMillis.CPU
	m.ComputeMillis.GPU += o.ComputeMillis.GPU
	m.ColdStarts += o.ColdStarts
	m.ColdStartMillis += o.ColdStartMillis
	m.QueueRejections += o.QueueRejections
	m.Shadow = shadow
	return nil
}

// servedVersions returns the versions that served requests in m's window.
func (m *ModelTelemetry) servedVersions() []string {
	switch {
	case len(m.Versions) > 0:
		return slices.Clone(m.Versions)
	case m.Requests > 0 && m.Version != "":
		return []string{m.Version}
	}
	return nil
}
