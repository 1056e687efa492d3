package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// Publisher sends one MQTT message; *bus.Client satisfies it.
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

// DefaultInterval is the reporting interval when none is configured.
const DefaultInterval = time.Minute

// publishTimeout bounds one publish, so that a broker outage cannot stall
// the reporting loop beyond it.
const publishTimeout = 5 * time.Second

// ReporterConfig configures a [Reporter].
type ReporterConfig struct {
	// Device is the device ID written in every report.
	Device string
	// Topic is where reports go: bus.Topics.Telemetry(Device).
	Topic string
	// Interval is the time between reports; 0 means DefaultInterval.
	Interval time.Duration
	// Recorder supplies the model aggregates. Required.
	Recorder *Recorder
	// Sampler supplies the resource usage; nil means NewSampler with
	// default options (this device's /proc, no GPU).
	Sampler *Sampler
	// Publisher sends the reports. Required.
	Publisher Publisher
	// Logger receives publish and sampling failures; nil means
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Reporter publishes a [report.Telemetry] on its topic every interval,
// with QoS 0 and not retained: a lost report costs one window of
// statistics, which the sequence number reveals, and a stale one must not
// greet the hub when it subscribes.
//
// It publishes every interval even when no model was used: the device
// stats change anyway, and a steady stream lets the hub tell an idle device
// from a silent one. A report that fails to publish is not lost: its window
// is merged into the next report, which then covers both (its
// IntervalSeconds says so).
//
// Run and Report may be called concurrently.
type Reporter struct {
	cfg ReporterConfig
	log *slog.Logger

	mu         sync.Mutex // guards all following fields
	start      time.Time  // of the current window
	seq        uint64     // of the last published report
	pending    map[string]report.ModelTelemetry
	failing    bool   // the last publish failed
	lastSample string // error of the last sample, to log changes only
}

// NewReporter checks cfg and returns a Reporter. It has no side effects.
// Its first window starts when the Recorder was created.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	var errs []error
	if cfg.Recorder == nil {
		errs = append(errs, errors.New("telemetry reporter: Recorder is required"))
	}
	if cfg.Publisher == nil {
		errs = append(errs, errors.New("telemetry reporter: Publisher is required"))
	}
	if cfg.Topic == "" {
		errs = append(errs, errors.New("telemetry reporter: Topic is required"))
	}
	if cfg.Interval < 0 {
		errs = append(errs, fmt.Errorf("telemetry reporter: negative Interval %v", cfg.Interval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Sampler == nil {
		cfg.Sampler = NewSampler(SamplerOptions{})
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Reporter{
		cfg:   cfg,
		log:   log.With("component", "telemetry", "device", cfg.Device),
		start: cfg.Recorder.started,
	}, nil
}

// Run publishes a report every interval until ctx ends, then returns nil.
// Failures are logged, not returned: telemetry must never stop the agent.
func (r *Reporter) Run(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			_, _ = r.Report(ctx) // logged by Report
		}
	}
}

// Report builds a report of the window since the previous one and
// publishes it now; the agent calls it once more before it disconnects, so
// the last window is not lost. It returns the report and the publish
// error, if any (the report's window then carries over into the next).
func (r *Reporter) Report(ctx context.Context) (report.Telemetry, error) {
	stats, serr := r.cfg.Sampler.Sample(ctx)
	r.cfg.Recorder.SetDeviceStats(stats)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.logSample(serr)
	now := r.cfg.Now()
	models := r.cfg.Recorder.Snapshot(true)
	for name, old := range r.pending {
		if cur, ok := models[name]; ok {
			if err := old.Merge(cur); err != nil {
				// Impossible with one Recorder (same bounds); keep the newer.
				r.log.Error("merge carried-over telemetry", "model", name, "err", err)
				continue
			}
		}
		models[name] = old
	}
	t := report.Telemetry{
		Schema:          report.Schema,
		Device:          r.cfg.Device,
		Time:            now.UTC(),
		Start:           r.start.UTC(),
		IntervalSeconds: now.Sub(r.start).Seconds(),
		Sequence:        r.seq + 1,
		Models:          models,
		System:          stats,
	}
	payload, err := json.Marshal(t)
	if err != nil {
		// Only non-finite floats can get here, and the Recorder and Sampler
		// produce none; drop the window rather than retry it forever.
		r.log.Error("encode telemetry report; window dropped", "err", err)
		r.pending, r.start = nil, now
		return t, fmt.Errorf("encode telemetry: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	err = r.cfg.Publisher.Publish(pctx, r.cfg.Topic, 0, false, payload)
	cancel()
	if err != nil {
		r.pending = models
		if !r.failing {
			r.log.Warn("publish telemetry failed; its window carries over into the next report", "topic", r.cfg.Topic, "err", err)
		} else {
			r.log.Debug("publish telemetry failed again", "topic", r.cfg.Topic, "err", err)
		}
		r.failing = true
		return t, err
	}
	if r.failing {
		r.log.Info("publish telemetry recovered", "topic", r.cfg.Topic, "interval_seconds", t.IntervalSeconds)
	}
	r.failing = false
	r.pending, r.start, r.seq = nil, now, t.Sequence
	return t, nil
}

// logSample logs sampling errors when they change, not every interval. r.mu
// must be held.
func (r *Reporter) logSample(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	switch {
	case msg == r.lastSample:
	case err != nil:
		r.log.Warn("device stats incomplete", "err", err)
	default:
		r.log.Info("device stats complete again")
	}
	r.lastSample = msg
}
