package rollout

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"
)

// TestGateFailurePolicy: a gate the version failed follows on_failure; a
// gate that only lacks evidence (a metric without data, too few requests)
// pauses even with on_failure=rollback.
func TestGateFailurePolicy(t *testing.T) {
	tests := []struct {
		name       string
		gates      []string
		onFailure  string
		metrics    Metrics
		want       Status
		wantReason string
	}{
		{name: "bad value, rollback", gates: []string{"error_rate<0.01"}, onFailure: OnFailureRollback,
			metrics: Metrics{MetricErrorRate: 0.5, MetricRequests: 100}, want: StatusRolledBack,
			wantReason: "error_rate<0.01: 0.5 (failed)"},
		{name: "bad value, pause", gates: []string{"p95_latency_ms<10"}, onFailure: OnFailurePause,
			metrics: Metrics{MetricP95LatencyMS: 12, MetricRequests: 100}, want: StatusPaused,
			wantReason: "p95_latency_ms<10: 12 (failed)"},
		{name: "no data, rollback", gates: []string{"error_rate<0.01", "p95_latency_ms<10"}, onFailure: OnFailureRollback,
			metrics: Metrics{MetricRequests: 0}, want: StatusPaused,
			wantReason: "error_rate<0.01: no data at the end of the soak; p95_latency_ms<10: no data at the end of the soak"},
		{name: "too few requests, rollback", gates: []string{"requests>=100", "error_rate<0.01"}, onFailure: OnFailureRollback,
			metrics: Metrics{MetricRequests: 20, MetricErrorRate: 0}, want: StatusPaused,
			wantReason: "requests>=100: 20 (failed)"},
		{name: "no data and a bad value, rollback", gates: []string{"error_rate<0.01", "p95_latency_ms<10"}, onFailure: OnFailureRollback,
			metrics: Metrics{MetricP95LatencyMS: 50, MetricRequests: 3}, want: StatusRolledBack,
			wantReason: "error_rate<0.01: no data at the end of the soak; p95_latency_ms<10: 50 (failed)"},
		{name: "shadow disagreement, rollback", gates: []string{"shadow_agreement>=0.99"}, onFailure: OnFailureRollback,
			metrics: Metrics{MetricShadowAgreement: 0.2, MetricRequests: 50}, want: StatusRolledBack,
			wantReason: "shadow_agreement>=0.99: 0.2 (failed)"},
		{name: "no shadow traffic, rollback", gates: []string{"shadow_agreement>=0.99"}, onFailure: OnFailureRollback,
			metrics: Metrics{MetricRequests: 0}, want: StatusPaused,
			wantReason: "shadow_agreement>=0.99: no data at the end of the soak"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec([]int{50, 100}, MustGates(t, tt.gates...)...)
			spec.OnFailure = tt.onFailure
			if strings.HasPrefix(tt.gates[0], "shadow") {
				spec.Mode = ModeShadow
			}
			s := newSim(t, spec, 4)
			s.metrics = tt.metrics
			s.run(time.Minute, func() bool { return s.st.Status.Terminal() || s.st.Status == StatusPaused })
			s.wantStatus(tt.want)
			if !strings.Contains(s.st.Reason, "wave 1/2 (50%) failed its gates: "+tt.wantReason) {
				t.Errorf("reason = %q, want it to contain %q", s.st.Reason, tt.wantReason)
			}
			rolledBack := len(rollbacks(s.log)) > 0
			if rolledBack != (tt.want == StatusRolledBack) {
				t.Errorf("rollback actions %v, want %v:\n%s", rolledBack, tt.want == StatusRolledBack, describe(s.log))
			}
			if tt.want == StatusPaused && tt.onFailure == OnFailureRollback && !hasEntry(s.st, "paused rather than rolled back") {
				t.Errorf("history does not explain the pause:\n%s", s.history())
			}
		})
	}
}

// TestShadowSuccessRemovesShadows: a shadow rollout that passes every wave
// ends succeeded and removes its shadows; its results stay as they were,
// late joiners get nothing, and Reconcile wants the shadows gone.
func TestShadowSuccessRemovesShadows(t *testing.T) {
	for _, roundTrip := range []bool{false, true} {
		t.Run(map[bool]string{false: "in memory", true: "json round trip"}[roundTrip], func(t *testing.T) {
			spec := baseSpec([]int{50, 100}, MustGates(t, "shadow_agreement>=0.99", "install_failures<=0")...)
			spec.Mode = ModeShadow
			s := newSim(t, spec, 4)
			s.roundTrip = roundTrip
			s.metrics = Metrics{MetricShadowAgreement: 1, MetricRequests: 100}
			s.run(time.Minute, s.status(StatusSucceeded))
			rb := rollbacks(s.log)
			if len(rb) != 1 || rb[0].Mode != ModeShadow || rb[0].Version != newVersion || len(rb[0].Previous) != 4 {
				t.Fatalf("want one shadow removal of the 4 devices, got:\n%s", describe(s.log))
			}
			if !hasEntry(s.st, "shadows removed, serving versions untouched; start an active rollout of 2.0.0") {
				t.Errorf("history:\n%s", s.history())
			}
			if got := s.st.DevicesWith(ResultInstalled); len(got) != 4 {
				t.Fatalf("installed = %v", got)
			}
			// The agents drop their shadows: the results do not change, and
			// a device joining later gets no shadow.
			for id := range s.fleet {
				s.fleet[id] = DeviceReport{Version: oldVersion}
			}
			s.fleet["late-1"] = DeviceReport{Version: oldVersion}
			s.now = s.now.Add(time.Hour)
			if acts := s.step(""); len(acts) != 0 {
				t.Fatalf("succeeded shadow rollout acted: %s", describe(acts))
			}
			if got := s.st.DevicesWith(ResultInstalled); len(got) != 4 {
				t.Errorf("installed after the shadows went = %v", got)
			}
			rec := s.m.Reconcile(s.st)
			if len(rec) != 1 {
				t.Fatalf("Reconcile = %s", describe(rec))
			}
			if r, ok := rec[0].(*RollBack); !ok || r.Mode != ModeShadow || !maps.Equal(r.Previous, rb[0].Previous) {
				t.Errorf("Reconcile = %s, want the shadow removal again", describe(rec))
			}
		})
	}
}

// TestMetricsBaselineKept: the Machine keeps the driver's baseline while
// the same soak runs and drops it whenever a soak starts or the rollout
// ends.
func TestMetricsBaselineKept(t *testing.T) {
	base := json.RawMessage(`{"driver":"data"}`)
	tests := []struct {
		name    string
		prepare func(s *sim) // brings the rollout to the state under test
		cmd     Command
		metrics Metrics
		keep    bool
	}{
		{name: "same soak goes on", prepare: func(s *sim) {}, keep: true},
		{name: "next wave", prepare: func(s *sim) { s.now = s.now.Add(s.m.Spec.Soak) }},
		{name: "paused by a gate", prepare: func(s *sim) { s.now = s.now.Add(s.m.Spec.Soak) },
			metrics: Metrics{MetricErrorRate: 1, MetricRequests: 10}, keep: true},
		{name: "paused by operator", cmd: CommandPause, prepare: func(s *sim) {}, keep: true},
		{name: "resumed after a gate paused it", cmd: CommandResume, prepare: func(s *sim) {
			s.now = s.now.Add(s.m.Spec.Soak)
			s.metrics = Metrics{MetricErrorRate: 1, MetricRequests: 10}
			s.step("")
			s.wantStatus(StatusPaused)
			s.st.MetricsBaseline = base
			s.metrics = Metrics{MetricErrorRate: 0, MetricRequests: 10}
			s.now = s.now.Add(time.Second)
		}},
		{name: "rolled back", cmd: CommandRollback, prepare: func(s *sim) {}},
		{name: "aborted", cmd: CommandAbort, prepare: func(s *sim) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec([]int{50, 100}, MustGates(t, "error_rate<0.01")...)
			s := newSim(t, spec, 4)
			s.metrics = Metrics{MetricErrorRate: 0, MetricRequests: 10}
			s.run(time.Second, func() bool { return s.st.Stage == StageSoaking })
			soak := s.st.SoakStarted
			s.st.MetricsBaseline = base // what the driver stores
			tt.prepare(s)
			if tt.metrics != nil {
				s.metrics = tt.metrics
			}
			s.step(tt.cmd)
			sameSoak := s.st.Stage == StageSoaking && s.st.SoakStarted.Equal(soak) && !s.st.Status.Terminal()
			got := string(s.st.MetricsBaseline)
			if sameSoak && got != string(base) {
				t.Errorf("%s, same soak: baseline %q, want kept", s.st.Status, got)
			}
			if !sameSoak && got != "" {
				t.Errorf("%s wave %d stage %s: baseline %q, want dropped", s.st.Status, s.st.Wave, s.st.Stage, got)
			}
			if tt.keep != sameSoak {
				t.Errorf("same soak = %v, want %v (status %s wave %d)", sameSoak, tt.keep, s.st.Status, s.st.Wave)
			}
		})
	}
}
