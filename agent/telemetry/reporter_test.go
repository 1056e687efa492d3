package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// published is one message a fakePublisher received.
type published struct {
	topic    string
	qos      byte
	retained bool
	payload  []byte
}

// fakePublisher records messages and fails the first `fail` publishes.
type fakePublisher struct {
	mu   sync.Mutex // guards all following fields
	fail int
	msgs []published
}

func (p *fakePublisher) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail > 0 {
		p.fail--
		return errors.New("mqtt publish: not connected")
	}
	p.msgs = append(p.msgs, published{topic, qos, retained, append([]byte(nil), payload...)})
	return nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fixtureSampler reads the Debian 12 fixtures instead of this machine's
// /proc, so reports are deterministic.
func fixtureSampler(t *testing.T) *Sampler {
	return NewSampler(SamplerOptions{ProcFS: fixtureFS(t, mustRead(t, "proc-debian12/stat")), PageSize: 4096})
}

func TestNewReporterValidation(t *testing.T) {
	rec := NewRecorder(Options{})
	pub := &fakePublisher{}
	tests := []struct {
		name    string
		cfg     ReporterConfig
		wantErr string
	}{
		{"ok", ReporterConfig{Recorder: rec, Publisher: pub, Topic: "t"}, ""},
		{"no recorder", ReporterConfig{Publisher: pub, Topic: "t"}, "Recorder is required"},
		{"no publisher", ReporterConfig{Recorder: rec, Topic: "t"}, "Publisher is required"},
		{"no topic", ReporterConfig{Recorder: rec, Publisher: pub}, "Topic is required"},
		{"negative interval", ReporterConfig{Recorder: rec, Publisher: pub, Topic: "t", Interval: -time.Second}, "negative Interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewReporter(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || r.cfg.Interval != DefaultInterval {
					t.Fatalf("NewReporter = %v, interval %v", err, r.cfg.Interval)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want it to say %q", err, tt.wantErr)
			}
		})
	}
}

func TestReporterCarriesOverFailedPublish(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rec := NewRecorder(Options{Classify: testClassifier(), Now: clock})
	pub := &fakePublisher{fail: 1}
	rep, err := NewReporter(ReporterConfig{
		Device: "dev-1", Topic: "p/devices/dev-1/telemetry", Interval: time.Minute,
		Recorder: rec, Sampler: fixtureSampler(t), Publisher: pub, Logger: testLogger(t), Now: clock,
	})
	if err != nil {
		t.Fatal(err)
	}

	rec.Observe("m", "1", ProviderCPU, time.Millisecond, time.Millisecond, nil)
	rec.Shadow("m", "2", true, 0.1, time.Millisecond)
	now = now.Add(time.Minute)
	if _, err := rep.Report(t.Context()); err == nil {
		t.Fatal("Report succeeded with a failing publisher")
	}

	rec.Observe("m", "1", ProviderCUDA, 3*time.Millisecond, 2*time.Millisecond, errRun)
	rec.Observe("n", "5", ProviderCPU, time.Millisecond, time.Millisecond, nil)
	rec.Shadow("m", "2", false, 0.3, time.Millisecond)
	now = now.Add(time.Minute)
	got, err := rep.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(pub.msgs) != 1 {
		t.Fatalf("%d messages published, want 1", len(pub.msgs))
	}
	msg := pub.msgs[0]
	if msg.topic != "p/devices/dev-1/telemetry" || msg.qos != 0 || msg.retained {
		t.Errorf("published to %q qos %d retained %v, want the telemetry topic, QoS 0, not retained", msg.topic, msg.qos, msg.retained)
	}
	var wire report.Telemetry
	if err := json.Unmarshal(msg.payload, &wire); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(wire, got) {
		t.Errorf("payload differs from the returned report:\n%+v\n%+v", wire, got)
	}
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	if wire.Sequence != 1 || !wire.Start.Equal(start) || !wire.Time.Equal(start.Add(2*time.Minute)) || wire.IntervalSeconds != 120 {
		t.Errorf("window: seq %d %v–%v (%v s), want seq 1 over both minutes", wire.Sequence, wire.Start, wire.Time, wire.IntervalSeconds)
	}
	m := wire.Models["m"]
	if m.Requests != 2 || m.Errors[report.ErrorRun] != 1 || m.Latency.Count != 1 || m.ComputeMillis != (report.ComputeMillis{CPU: 1, GPU: 2}) {
		t.Errorf("m = %+v, want both windows", m)
	}
	if m.Shadow == nil || m.Shadow.Compared != 2 || m.Shadow.Agreed != 1 || m.Shadow.MaxAbsDiff != 0.3 {
		t.Errorf("m.Shadow = %+v, want both windows", m.Shadow)
	}
	if wire.Models["n"].Requests != 1 {
		t.Errorf("n = %+v", wire.Models["n"])
	}
	if wire.Schema != report.Schema || wire.Device != "dev-1" || wire.System.MemoryTotalBytes != 24684096<<10 {
		t.Errorf("header or system stats wrong: %+v", wire)
	}

	now = now.Add(time.Minute)
	third, err := rep.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if third.Sequence != 2 || !third.Start.Equal(wire.Time) || third.Models["m"].Requests != 0 {
		t.Errorf("next report: seq %d from %v with %d requests, want seq 2 from %v with none",
			third.Sequence, third.Start, third.Models["m"].Requests, wire.Time)
	}
}

// TestReporterMosquitto publishes reports through a real broker and checks,
// as the hub would, that consecutive windows are contiguous and add up to
// the Recorder's totals.
func TestReporterMosquitto(t *testing.T) {
	broker := testenv.Mosquitto(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	log := testLogger(t)
	topic := bus.NewTopics("").Telemetry("dev-1")

	hub, err := bus.Connect(ctx, bus.Config{Brokers: []string{broker.URL}, ClientID: "test-hub-" + t.Name()}, bus.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close(nil)
	reports := make(chan report.Telemetry, 1000)
	if err := hub.Subscribe(ctx, topic, 0, func(m bus.Message) {
		var tm report.Telemetry
		if err := json.Unmarshal(m.Payload, &tm); err != nil {
			t.Errorf("decode telemetry: %v", err)
			return
		}
		if m.Retained {
			t.Error("telemetry arrived retained")
		}
		reports <- tm
	}); err != nil {
		t.Fatal(err)
	}

	agentBus, err := bus.Connect(ctx, bus.Config{Brokers: []string{broker.URL}, ClientID: "test-agent-" + t.Name()}, bus.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer agentBus.Close(nil)

	rec := NewRecorder(Options{Classify: testClassifier()})
	rep, err := NewReporter(ReporterConfig{
		Device: "dev-1", Topic: topic, Interval: 100 * time.Millisecond,
		Recorder: rec, Publisher: agentBus, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- rep.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	var (
		sum      report.ModelTelemetry
		prev     *report.Telemetry
		nonEmpty int
	)
	// waitFor consumes reports until the summed windows hold want requests.
	waitFor := func(want uint64) {
		t.Helper()
		for sum.Requests < want {
			select {
			case tm := <-reports:
				if tm.Schema != report.Schema || tm.Device != "dev-1" || tm.System.MemoryTotalBytes == 0 || tm.System.Goroutines == 0 {
					t.Errorf("report %d lacks header or system stats: %+v", tm.Sequence, tm)
				}
				if prev == nil {
					if tm.Sequence != 1 || !tm.Start.Equal(rec.started) {
						t.Errorf("first report: seq %d starting %v, want 1 starting at the recorder's start %v", tm.Sequence, tm.Start, rec.started)
					}
				} else if tm.Sequence != prev.Sequence+1 || !tm.Start.Equal(prev.Time) {
					t.Errorf("report %d [%v, %v] does not follow report %d [%v, %v]",
						tm.Sequence, tm.Start, tm.Time, prev.Sequence, prev.Start, prev.Time)
				}
				if math.Abs(tm.IntervalSeconds-tm.Time.Sub(tm.Start).Seconds()) > 1e-6 {
					t.Errorf("report %d: IntervalSeconds %v for [%v, %v]", tm.Sequence, tm.IntervalSeconds, tm.Start, tm.Time)
				}
				if m, ok := tm.Models["m"]; ok {
					if m.Requests > 0 {
						nonEmpty++
					}
					if err := sum.Merge(m); err != nil {
						t.Fatal(err)
					}
				}
				prev = &tm
			case <-ctx.Done():
				t.Fatalf("waiting for %d requests in the reports, have %d: %v", want, sum.Requests, ctx.Err())
			}
		}
	}

	for i := range 10 {
		var err error
		if i%4 == 0 {
			err = errInvalidInput
		}
		rec.Observe("m", "1.0.0", ProviderCPU, time.Duration(i+1)*time.Millisecond, time.Millisecond, err)
	}
	waitFor(10)
	first := sum

	for i := range 5 {
		rec.Observe("m", "1.0.0", ProviderCUDA, time.Duration(i+1)*300*time.Microsecond, 200*time.Microsecond, nil)
	}
	rec.Observe("m", "", ProviderCPU, 0, 0, errBusy)
	rec.Shadow("m", "1.1.0", true, 0.01, 2*time.Millisecond)
	waitFor(16)

	if nonEmpty < 2 {
		t.Errorf("%d reports carried requests, want at least 2", nonEmpty)
	}
	if first.Requests != 10 || first.Errors[report.ErrorInvalidInput] != 3 {
		t.Errorf("first phase in the reports: %+v", first)
	}
	tot := rec.Totals()["m"]
	if sum.Requests != tot.Requests || !reflect.DeepEqual(sum.Errors, tot.Errors) || !sameHistogram(sum.Latency, tot.Latency) ||
		sum.QueueRejections != tot.QueueRejections || sum.Shadow == nil || sum.Shadow.Compared != tot.Shadow.Compared {
		t.Errorf("windows add up to\n%+v\ntotals are\n%+v", sum, tot)
	}
	if math.Abs(sum.ComputeMillis.CPU-tot.ComputeMillis.CPU) > 1e-9 || math.Abs(sum.ComputeMillis.GPU-tot.ComputeMillis.GPU) > 1e-9 {
		t.Errorf("compute: windows %+v, totals %+v", sum.ComputeMillis, tot.ComputeMillis)
	}
	if tot.Requests != 16 || tot.QueueRejections != 1 || tot.ComputeMillis.GPU != 1 {
		t.Errorf("totals = %+v, want 16 requests, 1 rejection, 1 ms GPU", tot)
	}
}

// Compile-time check that the bus client is a Publisher.
var _ Publisher = (*bus.Client)(nil)
