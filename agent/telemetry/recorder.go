package telemetry

import (
	"errors"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// Execution providers, as passed to [Recorder.Observe]. They match the
// agent runtime's provider names.
const (
	// ProviderCPU is ONNX Runtime's CPU execution provider.
	ProviderCPU = "cpu"
	// ProviderCUDA is ONNX Runtime's CUDA execution provider; its time counts
	// as GPU time.
	ProviderCUDA = "cuda"
)

// DefaultMaxModels is the default limit of distinct model names a
// [Recorder] keeps apart.
const DefaultMaxModels = 256

// Sentinel maps errors matching Err (by errors.Is) to an error kind, one of
// [report.ErrorKinds].
type Sentinel struct {
	Err  error
	Kind string
}

// ClassifyBy returns a classifier for [Options.Classify] that gives an
// error the Kind of the first sentinel it matches with errors.Is, and
// [report.ErrorOther] when it matches none. The agent passes the runtime's
// errors:
//
//	telemetry.ClassifyBy(
//		telemetry.Sentinel{Err: runtime.ErrInvalidInput, Kind: report.ErrorInvalidInput},
//		telemetry.Sentinel{Err: runtime.ErrBusy, Kind: report.ErrorBusy},
//		telemetry.Sentinel{Err: runtime.ErrNotLoaded, Kind: report.ErrorNotLoaded},
//		telemetry.Sentinel{Err: runtime.ErrRun, Kind: report.ErrorRun},
//	)
func ClassifyBy(sentinels ...Sentinel) func(error) string {
	sentinels = slices.Clone(sentinels)
	return func(err error) string {
		for _, s := range sentinels {
			if errors.Is(err, s.Err) {
				return s.Kind
			}
		}
		return report.ErrorOther
	}
}

// Options configure a [Recorder]. The zero value is usable.
type Options struct {
	// Classify maps the error of a failed request to its kind, one of
	// [report.ErrorKinds] (see [ClassifyBy]). Any other result counts as
	// [report.ErrorOther], so the set of kinds stays closed. nil counts every
	// error as ErrorOther.
	Classify func(error) string
	// MaxModels bounds the distinct model names kept apart; requests for
	// further names are aggregated under [report.OtherModel]. It protects
	// the agent's memory and the hub from clients that name models at
	// random. 0 means DefaultMaxModels.
	MaxModels int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Error kinds as array indexes, in the order of report.ErrorKinds.
const (
	kindInvalidInput = iota
	kindBusy
	kindRun
	kindNotLoaded
	kindOther
	numKinds
)

// kindNames are the report names of the kind indexes.
var kindNames = [numKinds]string{report.ErrorInvalidInput, report.ErrorBusy, report.ErrorRun, report.ErrorNotLoaded, report.ErrorOther}

// kindIndex returns the index of the named kind, kindOther for unknown names.
func kindIndex(name string) int {
	switch name {
	case report.ErrorInvalidInput:
		return kindInvalidInput
	case report.ErrorBusy:
		return kindBusy
	case report.ErrorRun:
		return kindRun
	case report.ErrorNotLoaded:
		return kindNotLoaded
	}
	return kindOther
}

// numBuckets is the number of latency buckets: one per bound of
// report.DefaultLatencyBoundsMs plus the overflow bucket.
const numBuckets = 17

// boundsNs are report.DefaultLatencyBoundsMs in nanoseconds. Integer bounds
// keep bucketing exact; the initialiser fails at start-up if numBuckets
// disagrees with the report's bounds.
var boundsNs = func() (b [numBuckets - 1]int64) {
	ms := report.DefaultLatencyBoundsMs()
	if len(ms) != len(b) {
		panic("telemetry: numBuckets does not match report.DefaultLatencyBoundsMs")
	}
	for i, v := range ms {
		b[i] = int64(math.Round(v * 1e6))
	}
	return b
}()

// hist is a latency histogram over boundsNs with an exact nanosecond sum.
type hist struct {
	counts [numBuckets]uint64
	sumNs  int64
	n      uint64
}

func (h *hist) observe(d time.Duration) {
	ns := max(int64(d), 0)
	i := 0
	for i < len(boundsNs) && ns > boundsNs[i] {
		i++
	}
	h.counts[i]++
	h.sumNs += ns
	h.n++
}

func (h *hist) add(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.sumNs += o.sumNs
	h.n += o.n
}

// report converts h to the wire format, in milliseconds.
func (h *hist) report() report.Histogram {
	return report.Histogram{
		Bounds: report.DefaultLatencyBoundsMs(),
		Counts: slices.Clone(h.counts[:]),
		Sum:    millis(h.sumNs),
		Count:  h.n,
	}
}

// millis converts nanoseconds to milliseconds.
func millis(ns int64) float64 { return float64(ns) / 1e6 }

// counters aggregate the requests of one model version over one period.
type counters struct {
	requests    uint64
	errors      [numKinds]uint64
	latency     hist     // successful requests only
	computeNs   [2]int64 // by device: 0 CPU, 1 GPU
	coldStarts  uint64
	coldStartNs int64
}

// shadowCounters aggregate shadow comparisons over one period.
type shadowCounters struct {
	compared   uint64
	agreed     uint64
	maxAbsDiff float64
	latency    hist
}

// Indexes of the two periods every counter is kept for.
const (
	window = 0 // since the last Snapshot(true), for the hub
	total  = 1 // since the start, for Prometheus
)

// series are the counters of one model version.
type series struct{ c [2]counters }

// shadowSeries are the shadow counters of one candidate version.
type shadowSeries struct{ c [2]shadowCounters }

// model holds everything recorded about one model name.
type model struct {
	mu            sync.Mutex // guards all following fields
	version       string     // the version that served last
	series        map[string]*series
	rejected      [2]uint64
	shadowVersion string // the candidate compared last
	shadow        map[string]*shadowSeries
}

// seriesFor returns the series of version, creating it. m.mu must be held.
func (m *model) seriesFor(version string) *series {
	s := m.series[version]
	if s == nil {
		s = &series{}
		m.series[version] = s
	}
	return s
}

// Recorder counts what the agent's models do, per model and version. It is
// safe for concurrent use, and cheap enough to call on every request: one
// read-locked map lookup and one per-model mutex, no allocation.
//
// It keeps every counter twice: for the current window, reset by
// [Recorder.Snapshot] (the hub's deltas), and since the start (Prometheus'
// cumulative counters).
type Recorder struct {
	classify  func(error) string
	maxModels int
	started   time.Time

	mu     sync.RWMutex // guards models (the map; entries have their own lock)
	models map[string]*model

	devMu sync.Mutex // guards dev
	dev   *report.DeviceStats
}

// NewRecorder returns an empty Recorder.
func NewRecorder(opts Options) *Recorder {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	r := &Recorder{
		classify:  opts.Classify,
		maxModels: opts.MaxModels,
		started:   now(),
		models:    map[string]*model{},
	}
	if r.maxModels <= 0 {
		r.maxModels = DefaultMaxModels
	}
	return r
}

// model returns the entry for name, creating it, and the name it is kept
// under (report.OtherModel once MaxModels names are taken).
func (r *Recorder) model(name string) (*model, string) {
	r.mu.RLock()
	m, ok := r.models[name]
	if !ok && len(r.models) >= r.maxModels {
		name = report.OtherModel
		m, ok = r.models[name]
	}
	r.mu.RUnlock()
	if ok {
		return m, name
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.models[name]; ok {
		return m, name
	}
	if len(r.models) >= r.maxModels {
		name = report.OtherModel
		if m, ok := r.models[name]; ok {
			return m, name
		}
	}
	m = &model{series: map[string]*series{}, shadow: map[string]*shadowSeries{}}
	r.models[name] = m
	return m, name
}

// lockModel returns the entry for name, locked, and the version to record
// under: version, or the version that served last when version is empty
// (errors raised before a version was chosen, such as a full queue, belong
// to the serving version). Models beyond the limit record no version.
func (r *Recorder) lockModel(name, version string) (*model, string) {
	m, key := r.model(name)
	if key == report.OtherModel {
		version = ""
	}
	m.mu.Lock()
	if version == "" {
		version = m.version
	} else {
		m.version = version
	}
	return m, version
}

// Observe records one finished request of model: its latency from arrival
// to answer, the session run time it used on provider ([ProviderCPU] or
// [ProviderCUDA]; others count as CPU time), and its error, nil on success.
// Failed requests are counted by kind (see [Options.Classify]) and kept out
// of the latency histogram; requests refused for a full queue also count as
// queue rejections, so the caller need not call [Recorder.Rejected] for
// them. version may be empty when the request failed before a version was
// chosen. Negative durations count as 0.
func (r *Recorder) Observe(model, version, provider string, latency, compute time.Duration, err error) {
	kind := -1
	if err != nil {
		kind = kindOther
		if r.classify != nil {
			kind = kindIndex(r.classify(err))
		}
	}
	dev := 0
	if provider == ProviderCUDA {
		dev = 1
	}
	compute = max(compute, 0)

	m, version := r.lockModel(model, version)
	s := m.seriesFor(version)
	for i := range s.c {
		c := &s.c[i]
		c.requests++
		if kind >= 0 {
			c.errors[kind]++
		} else {
			c.latency.observe(latency)
		}
		c.computeNs[dev] += int64(compute)
	}
	if kind == kindBusy {
		m.rejected[window]++
		m.rejected[total]++
	}
	m.mu.Unlock()
}

// ColdStart records that version of model was loaded lazily, for a request
// that arrived while it was unloaded for idleness, taking d.
func (r *Recorder) ColdStart(model, version string, d time.Duration) {
	m, version := r.lockModel(model, version)
	s := m.seriesFor(version)
	for i := range s.c {
		s.c[i].coldStarts++
		s.c[i].coldStartNs += int64(max(d, 0))
	}
	m.mu.Unlock()
}

// Rejected records a request for model refused because its concurrency
// limit and queue were full, for callers that do not pass the request to
// [Recorder.Observe] (which counts such refusals itself).
func (r *Recorder) Rejected(model string) {
	m, _ := r.model(model)
	m.mu.Lock()
	m.rejected[window]++
	m.rejected[total]++
	m.mu.Unlock()
}

// Shadow records one comparison of candidateVersion of model, run in shadow
// mode on a live request: whether its output's argmax agreed with the
// serving version's, the largest absolute difference between their
// outputs, and the candidate's latency. A NaN or infinite difference (the
// outputs themselves were not finite) is recorded as math.MaxFloat64, so
// that it stands out yet the report stays valid JSON.
func (r *Recorder) Shadow(model, candidateVersion string, agreed bool, maxAbsDiff float64, latency time.Duration) {
	maxAbsDiff = math.Abs(maxAbsDiff)
	if math.IsNaN(maxAbsDiff) || math.IsInf(maxAbsDiff, 0) {
		maxAbsDiff = math.MaxFloat64
	}
	m, key := r.model(model)
	if key == report.OtherModel {
		candidateVersion = ""
	}
	m.mu.Lock()
	ss := m.shadow[candidateVersion]
	if ss == nil {
		ss = &shadowSeries{}
		m.shadow[candidateVersion] = ss
	}
	m.shadowVersion = candidateVersion
	for i := range ss.c {
		c := &ss.c[i]
		c.compared++
		if agreed {
			c.agreed++
		}
		c.maxAbsDiff = max(c.maxAbsDiff, maxAbsDiff)
		c.latency.observe(latency)
	}
	m.mu.Unlock()
}

// Forget drops everything recorded about model, for a model removed from
// the device. Its Prometheus series disappear; its requests since the last
// Snapshot are not reported.
func (r *Recorder) Forget(model string) {
	r.mu.Lock()
	delete(r.models, model)
	r.mu.Unlock()
}

// Snapshot returns the aggregates of every model recorded since the last
// Snapshot(true) (or the start): the window a telemetry report covers.
// With reset, the window is closed atomically per model, so every
// observation lands in exactly one window. Only one consumer (the
// [Reporter]) should reset. Models without requests in the window are
// included with zero counts.
//
// Resetting also drops the counters of versions other than the serving
// one that had no activity in the closed window, so that a long-running
// agent does not keep every version it ever ran; their cumulative
// Prometheus series end.
func (r *Recorder) Snapshot(reset bool) map[string]report.ModelTelemetry {
	return r.collect(window, reset)
}

// Totals returns the aggregates of every model since the start (cumulative,
// like the Prometheus counters).
func (r *Recorder) Totals() map[string]report.ModelTelemetry {
	return r.collect(total, false)
}

// collect builds the reports of one period for every model.
func (r *Recorder) collect(period int, reset bool) map[string]report.ModelTelemetry {
	r.mu.RLock()
	models := make(map[string]*model, len(r.models))
	for name, m := range r.models {
		models[name] = m
	}
	r.mu.RUnlock()

	out := make(map[string]report.ModelTelemetry, len(models))
	for name, m := range models {
		m.mu.Lock()
		out[name] = m.build(period)
		if reset {
			m.resetWindow()
		}
		m.mu.Unlock()
	}
	return out
}

// build returns the report of one period of m. m.mu must be held.
func (m *model) build(period int) report.ModelTelemetry {
	mt := report.ModelTelemetry{Version: m.version, QueueRejections: m.rejected[period]}
	var (
		lat         hist
		computeNs   [2]int64
		coldStartNs int64
		errs        [numKinds]uint64
		versions    []string
	)
	for v, s := range m.series {
		c := &s.c[period]
		if c.requests > 0 && v != "" {
			versions = append(versions, v)
		}
		mt.Requests += c.requests
		for k, n := range c.errors {
			errs[k] += n
		}
		lat.add(&c.latency)
		computeNs[0] += c.computeNs[0]
		computeNs[1] += c.computeNs[1]
		mt.ColdStarts += c.coldStarts
		coldStartNs += c.coldStartNs
	}
	if len(versions) > 1 {
		slices.Sort(versions)
		mt.Versions = versions
	}
	for k, n := range errs {
		if n > 0 {
			if mt.Errors == nil {
				mt.Errors = map[string]uint64{}
			}
			mt.Errors[kindNames[k]] = n
		}
	}
	mt.Latency = lat.report()
	mt.ComputeMillis = report.ComputeMillis{CPU: millis(computeNs[0]), GPU: millis(computeNs[1])}
	mt.ColdStartMillis = millis(coldStartNs)
	if ss := m.shadow[m.shadowVersion]; ss != nil && ss.c[period].compared > 0 {
		c := &ss.c[period]
		mt.Shadow = &report.ShadowStats{
			Version:    m.shadowVersion,
			Compared:   c.compared,
			Agreed:     c.agreed,
			MaxAbsDiff: c.maxAbsDiff,
			Latency:    c.latency.report(),
		}
	}
	return mt
}

// resetWindow starts a new window and drops idle old versions. m.mu must be
// held.
func (m *model) resetWindow() {
	for v, s := range m.series {
		if v != m.version && s.c[window] == (counters{}) {
			delete(m.series, v)
			continue
		}
		s.c[window] = counters{}
	}
	for v, ss := range m.shadow {
		if v != m.shadowVersion && ss.c[window] == (shadowCounters{}) {
			delete(m.shadow, v)
			continue
		}
		ss.c[window] = shadowCounters{}
	}
	m.rejected[window] = 0
}

// SetDeviceStats stores the device's latest resource usage for the
// Prometheus gauges. The [Reporter] calls it after each sample.
func (r *Recorder) SetDeviceStats(s report.DeviceStats) {
	s.GPUs = slices.Clone(s.GPUs)
	r.devMu.Lock()
	r.dev = &s
	r.devMu.Unlock()
}

// deviceStats returns the latest resource usage, nil before the first.
func (r *Recorder) deviceStats() *report.DeviceStats {
	r.devMu.Lock()
	defer r.devMu.Unlock()
	return r.dev
}
