package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/modelfleet/modelfleet/agent/accel"
	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/telemetry"
	"github.com/modelfleet/modelfleet/internal/report"
)

// newRecorder returns the telemetry recorder with the runtime's error kinds.
func newRecorder() *telemetry.Recorder {
	return telemetry.NewRecorder(telemetry.Options{Classify: telemetry.ClassifyBy(
		telemetry.Sentinel{Err: runtime.ErrInvalidInput, Kind: report.ErrorInvalidInput},
		telemetry.Sentinel{Err: runtime.ErrBusy, Kind: report.ErrorBusy},
		telemetry.Sentinel{Err: runtime.ErrNotLoaded, Kind: report.ErrorNotLoaded},
		telemetry.Sentinel{Err: runtime.ErrRun, Kind: report.ErrorRun},
	)})
}

// startTelemetry publishes aggregates every interval until ctx ends, then
// flushes the last window. The returned function waits for it.
func (a *Agent) startTelemetry(ctx context.Context) (func(), error) {
	interval := time.Duration(a.cfg.TelemetryIntervalSeconds) * time.Second
	if interval <= 0 {
		return func() {}, nil
	}
	so := telemetry.SamplerOptions{}
	if a.inventory.NVML.Available {
		so.GPUs = gpuStats
	}
	rep, err := telemetry.NewReporter(telemetry.ReporterConfig{
		Device:    a.cfg.DeviceID,
		Topic:     a.topics.Telemetry(a.cfg.DeviceID),
		Interval:  interval,
		Recorder:  a.rec,
		Sampler:   telemetry.NewSampler(so),
		Publisher: a.client,
		Logger:    a.log,
	})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rep.Run(ctx); err != nil {
			a.log.Error("telemetry reporter stopped", "err", err)
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
		defer cancel()
		rep.Report(fctx) // the last window
	}()
	return func() { <-done }, nil
}

// gpuStats samples GPU usage through NVML.
func gpuStats(ctx context.Context) ([]report.GPUStats, error) {
	inv := accel.Detect(ctx, accel.Options{})
	out := make([]report.GPUStats, 0, len(inv.GPUs))
	for _, g := range inv.GPUs {
		s := report.GPUStats{Index: g.Index, MemoryUsedBytes: g.MemoryUsedBytes, MemoryTotalBytes: g.MemoryTotalBytes}
		if g.UtilizationPercent != nil {
			s.UtilizationPercent = float64(*g.UtilizationPercent)
		}
		out = append(out, s)
	}
	return out, nil
}

// mountMetrics adds the Prometheus endpoint to mux.
func (a *Agent) mountMetrics(mux *http.ServeMux) {
	mux.Handle("/metrics", a.rec.Handler())
}

// coldStart records the time a lazy reload took.
func (a *Agent) coldStart(model, version string, d time.Duration) {
	a.rec.ColdStart(model, version, d)
}
