package hub_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/rollout"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/manifest"
)

// gateSoak is the soak of the gate tests: several telemetry intervals (the
// agents report every second), so every soak sees reports.
const gateSoak = 3 * time.Second

// client is a factory line sending vibration windows to one agent's
// inference front end (agent.Infer, which the HTTP and gRPC front ends
// call) in a loop until the test ends.
type client struct {
	// input is the name of the tensor the client sends: mlp.InputName, or
	// models.SamplesInputName once the client speaks the new contract.
	input atomic.Pointer[string]
	sent  atomic.Int64
}

// startClient starts sending requests to agent id with tensor input.
func (f *fleet) startClient(id, input string) *client {
	f.t.Helper()
	a := f.agents[id]
	c := &client{}
	c.setInput(input)
	h := fnv.New64a()
	h.Write([]byte(id))
	r := rand.New(rand.NewPCG(h.Sum64(), 1))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			window := make([]float32, mlp.InputSize)
			for i := range window {
				window[i] = float32(r.NormFloat64())
			}
			// Errors are the point of some tests: the agent counts them in
			// its telemetry, which is what the gates read.
			_, _, _ = a.Infer(ctx, model, map[string]runtime.Tensor{*c.input.Load(): runtime.NewTensor([]int64{1, mlp.InputSize}, window)})
			c.sent.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	f.t.Cleanup(func() { cancel(); <-done })
	return c
}

func (c *client) setInput(name string) { c.input.Store(&name) }

// releaseInput registers file as version with the manifest's input named
// input (the file's own input name).
func (f *fleet) releaseInput(version, file, input string) {
	f.t.Helper()
	art := fleettest.Upload(f.t, f.s3.Client, f.s3.Bucket, fmt.Sprintf("models/%s/%s/%s", model, version, file), fleettest.ModelBytes(f.t, file))
	m := fleettest.VibrationManifest(model, version, art)
	m.Inputs[0].Name = input
	env := fleettest.Sign(f.t, m, f.trust.Release)
	err := f.hub.Store().(store.Store).PutRelease(context.Background(), store.Release{
		Name: model, Version: version, Manifest: env, Signed: true, Created: time.Now(), Artifacts: []manifest.Artifact{art},
	})
	if err != nil {
		f.t.Fatalf("register release %s: %v", version, err)
	}
}

// startTwo starts edge-1 and edge-2 and rolls v1 out to both.
func (f *fleet) startTwoOnV1() {
	f.t.Helper()
	f.startAgent("edge-1", map[string]string{"site": "plant-a"})
	f.startAgent("edge-2", map[string]string{"site": "plant-a"})
	f.waitDevices(2)
	f.release("1.0.0", models.FileV1)
	id, err := f.hub.StartRollout(context.Background(), mustSpec(f.t, "1.0.0", "", "100", 0, rollout.OnFailurePause, "install_failures<=0"))
	if err != nil {
		f.t.Fatal(err)
	}
	f.waitRollout(id, store.StatusSucceeded)
	f.waitServing("1.0.0", "edge-1", "edge-2")
}

// waveDevice returns the one device the rollout assigned in wave w.
func waveDevice(t *testing.T, info hub.RolloutInfo, w int) string {
	t.Helper()
	var ids []string
	for id, d := range info.State.Devices {
		if d.Wave == w {
			ids = append(ids, id)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("wave %d has devices %v, want one: %+v", w+1, ids, info.State.Devices)
	}
	return ids[0]
}

// gate returns the last evaluation of the gate on metric m.
func gate(t *testing.T, info hub.RolloutInfo, m rollout.Metric) rollout.GateResult {
	t.Helper()
	for _, g := range info.State.Gates {
		if g.Gate.Metric == m {
			return g
		}
	}
	t.Fatalf("no %s gate evaluated: %+v", m, info.State.Gates)
	return rollout.GateResult{}
}

// other returns the device of edge-1 and edge-2 that is not id.
func other(id string) string {
	if id == "edge-1" {
		return "edge-2"
	}
	return "edge-1"
}

// TestGateLatencyTripsOnLiveTraffic: with requests flowing on both
// devices, a p95 latency gate no inference can meet trips at the end of
// the first wave's soak, measured from the wave's device, and the rollout
// rolls that device back to v1.
func TestGateLatencyTripsOnLiveTraffic(t *testing.T) {
	f := newFleet(t)
	f.startHub()
	f.startTwoOnV1()
	f.startClient("edge-1", mlp.InputName)
	f.startClient("edge-2", mlp.InputName)
	ctx := context.Background()

	f.release("2.0.0", models.FileV2)
	id, err := f.hub.StartRollout(ctx, mustSpec(t, "2.0.0", "", "50,100", gateSoak, rollout.OnFailureRollback, "install_failures<=0", "p95_latency_ms<0.0001"))
	if err != nil {
		t.Fatal(err)
	}
	info := f.waitRollout(id, store.StatusRolledBack)
	if !strings.Contains(info.State.Reason, "wave 1/2 (50%) failed its gates: p95_latency_ms<0.0001: ") {
		t.Errorf("rolled back for %q, want the latency gate of wave 1 named", info.State.Reason)
	}
	if g := gate(t, info, rollout.MetricP95LatencyMS); g.Missing || g.Passed || g.Value <= 0 {
		t.Errorf("latency gate %+v, want a measured p95 that failed", g)
	}
	if n := len(info.State.Devices); n != 1 {
		t.Errorf("v2 reached %d devices before the gate tripped, want the first wave's 1", n)
	}
	f.waitServing("1.0.0", "edge-1", "edge-2")
	f.assertServes("edge-1", "1.0.0", models.SeedV1)
	f.assertServes("edge-2", "1.0.0", models.SeedV1)
}

// TestGateErrorRateTripsOnLiveTraffic: v2-samples renamed its input, so
// the factory's requests fail on it: the error_rate gate pauses the
// rollout after the first wave. The first device's client is then updated
// to the new input and the operator resumes: the fresh soak counts only
// requests served since it started (the errors of the same minute before
// it do not count), and the wave passes. The second wave's device still
// gets old requests: its own errors trip the gate again, and the operator
// rolls both devices back to v1.
func TestGateErrorRateTripsOnLiveTraffic(t *testing.T) {
	f := newFleet(t)
	f.startHub()
	f.startTwoOnV1()
	clients := map[string]*client{
		"edge-1": f.startClient("edge-1", mlp.InputName),
		"edge-2": f.startClient("edge-2", mlp.InputName),
	}
	ctx := context.Background()

	f.releaseInput("2.0.0", models.FileV2Samples, models.SamplesInputName)
	id, err := f.hub.StartRollout(ctx, mustSpec(t, "2.0.0", "", "50,100", gateSoak, rollout.OnFailurePause, "install_failures<=0", "error_rate<0.01"))
	if err != nil {
		t.Fatal(err)
	}
	info := f.waitRollout(id, store.StatusPaused)
	if !strings.Contains(info.State.Reason, "wave 1/2 (50%) failed its gates: error_rate<0.01: ") {
		t.Errorf("paused for %q, want the error gate of wave 1", info.State.Reason)
	}
	// Nearly every request fails; the telemetry window in which v2
	// replaced v1 counts v1's last successes as v2's.
	if g := gate(t, info, rollout.MetricErrorRate); g.Missing || g.Value < 0.5 {
		t.Errorf("wave 1 error gate %+v, want mostly failed requests", g)
	}
	first := waveDevice(t, info, 0)
	second := other(first)
	if _, ok := info.State.Devices[second]; ok {
		t.Errorf("%s got v2 before the first wave passed", second)
	}
	f.waitServing("2.0.0", first) // paused: nothing undone
	f.waitServing("1.0.0", second)

	// The first device's client learns the new input name. Once the hub
	// has a report with more successful v2 requests from it than before,
	// every later report covers updated requests only.
	successes := func() (uint64, string) {
		s, err := f.hub.Store().(store.Store).QueryTelemetry(ctx, store.TelemetryQuery{Model: model, Version: "2.0.0", Devices: []string{first}})
		if err != nil {
			t.Fatal(err)
		}
		return s.Latency.Count, fmt.Sprintf("%d requests, %d successes, %d errors", s.Requests, s.Latency.Count, s.ErrorCount())
	}
	before, _ := successes()
	clients[first].setInput(models.SamplesInputName)
	f.eventually(first+" reporting successful v2 requests", func() (bool, string) {
		n, detail := successes()
		return n > before, detail
	})
	if err := f.hub.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	f.eventually("wave 1 passed", func() (bool, string) {
		info, err := f.hub.RolloutStatus(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		if info.Rollout.Status != store.StatusRunning && info.State.Wave == 0 {
			t.Fatalf("rollout %s in wave 1 after resume: %s\n%s", info.Rollout.Status, info.State.Reason, historyText(info))
		}
		return hasHistory(info, "wave 1/2 (50%) passed its gates: install_failures<=0: 0 (passed); error_rate<0.01: 0 (passed)"),
			fmt.Sprintf("%s wave %d", info.Rollout.Status, info.State.Wave+1)
	})
	info = f.waitRollout(id, store.StatusPaused)
	if !strings.Contains(info.State.Reason, "wave 2/2 (100%) failed its gates: error_rate<0.01: ") {
		t.Errorf("paused for %q, want the error gate of wave 2", info.State.Reason)
	}
	if g := gate(t, info, rollout.MetricErrorRate); g.Missing || g.Value < 0.5 {
		t.Errorf("wave 2 error gate %+v, want mostly failed requests: only %s counts, not %s's good ones", g, second, first)
	}
	if err := f.hub.Rollback(ctx, id); err != nil {
		t.Fatal(err)
	}
	f.waitRollout(id, store.StatusRolledBack)
	f.waitServing("1.0.0", "edge-1", "edge-2")
	f.assertServes(first, "1.0.0", models.SeedV1)
}

// TestGatesPassOnLiveTraffic: a rollout with error and latency gates
// passes every wave on good traffic. Before that, a wave without traffic
// pauses at the end of its soak even with on-failure rollback (no data is
// no evidence against the version), and resuming with traffic flowing
// passes it. While the second wave soaks, the first wave's device gets
// failing requests: the second wave's gates measure its own device only.
func TestGatesPassOnLiveTraffic(t *testing.T) {
	f := newFleet(t)
	f.startHub()
	f.startTwoOnV1()
	ctx := context.Background()

	f.release("2.0.0", models.FileV2)
	id, err := f.hub.StartRollout(ctx, mustSpec(t, "2.0.0", "", "50,100", gateSoak, rollout.OnFailureRollback,
		"install_failures<=0", "error_rate<0.01", "p95_latency_ms<60000"))
	if err != nil {
		t.Fatal(err)
	}
	info := f.waitRollout(id, store.StatusPaused)
	for _, want := range []string{"error_rate<0.01: no data at the end of the soak", "p95_latency_ms<60000: no data at the end of the soak"} {
		if !strings.Contains(info.State.Reason, want) {
			t.Errorf("paused for %q, want %q", info.State.Reason, want)
		}
	}
	first := waveDevice(t, info, 0)
	second := other(first)
	f.waitServing("2.0.0", first) // paused, not rolled back

	clients := map[string]*client{
		first:  f.startClient(first, mlp.InputName),
		second: f.startClient(second, mlp.InputName),
	}
	if err := f.hub.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	f.eventually("wave 2 assigned", func() (bool, string) {
		info, err := f.hub.RolloutStatus(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		if info.Rollout.Status.Finished() {
			t.Fatalf("rollout ended %s (%s) in wave 1", info.Rollout.Status, info.State.Reason)
		}
		return info.State.Wave == 1, fmt.Sprintf("%s wave %d %s", info.Rollout.Status, info.State.Wave+1, info.State.Reason)
	})
	// From now on every request to the first device fails on v2.
	clients[first].setInput("vibration")
	info = f.waitRollout(id, store.StatusSucceeded)
	if g := gate(t, info, rollout.MetricErrorRate); !g.Passed || g.Value != 0 {
		t.Errorf("wave 2 error gate %+v, want 0: only %s counts", g, second)
	}
	if g := gate(t, info, rollout.MetricP95LatencyMS); !g.Passed || g.Value <= 0 {
		t.Errorf("wave 2 latency gate %+v, want a measured p95 that passed", g)
	}
	// The first device's failures did reach the hub during the second wave.
	f.eventually(first+" reporting failed v2 requests", func() (bool, string) {
		s, err := f.hub.Store().(store.Store).QueryTelemetry(ctx, store.TelemetryQuery{Model: model, Version: "2.0.0", Devices: []string{first}})
		if err != nil {
			return false, err.Error()
		}
		return s.Errors["invalid_input"] > 0, fmt.Sprintf("%d requests, %v errors", s.Requests, s.Errors)
	})
	f.waitServing("2.0.0", "edge-1", "edge-2")
	f.assertServes(second, "2.0.0", models.SeedV2)
}

// waitShadow waits until every listed device reports version (empty: no
// shadow) as its shadow candidate of the model.
func (f *fleet) waitShadow(version string, devices ...string) {
	f.t.Helper()
	for _, id := range devices {
		f.eventually(fmt.Sprintf("%s shadowing %q", id, version), func() (bool, string) {
			d, err := f.hub.Store().GetDevice(context.Background(), id)
			if err != nil {
				return false, err.Error()
			}
			m, ok := d.Models[model+"@shadow"]
			if version == "" {
				return !ok || m.Version == "" && m.Pending == "", fmt.Sprintf("%+v", m)
			}
			return ok && m.Version == version && m.Pending == "", fmt.Sprintf("%+v", m)
		})
	}
}

func shadowSpec(t *testing.T, version string, gates ...string) rollout.Spec {
	spec := mustSpec(t, version, "", "50,100", gateSoak, rollout.OnFailureRollback, gates...)
	spec.Mode = rollout.ModeShadow
	return spec
}

// TestShadowRollouts: v1 serves both devices under live traffic. A shadow
// rollout of the same network (v1's file released as 1.0.1) agrees on
// every request, passes both waves and ends succeeded with the shadows
// removed. A shadow rollout of v2 (other weights) disagrees, trips the
// agreement gate of its first wave and is rolled back: the shadow goes,
// v1 serves throughout.
func TestShadowRollouts(t *testing.T) {
	f := newFleet(t)
	f.startHub()
	f.startTwoOnV1()
	f.startClient("edge-1", mlp.InputName)
	f.startClient("edge-2", mlp.InputName)
	ctx := context.Background()

	f.release("1.0.1", models.FileV1)
	id, err := f.hub.StartRollout(ctx, shadowSpec(t, "1.0.1", "install_failures<=0", "shadow_agreement>=0.99", "requests>=1"))
	if err != nil {
		t.Fatal(err)
	}
	f.eventually("a device shadowing 1.0.1", func() (bool, string) {
		ds, err := f.hub.Store().ListDevices(ctx, nil)
		if err != nil {
			return false, err.Error()
		}
		for _, d := range ds {
			if m := d.Models[model+"@shadow"]; m.Version == "1.0.1" {
				return d.Models[model].Version == "1.0.0", fmt.Sprintf("%s serves %+v beside the shadow", d.ID, d.Models[model])
			}
		}
		return false, "no shadow loaded"
	})
	info := f.waitRollout(id, store.StatusSucceeded)
	if g := gate(t, info, rollout.MetricShadowAgreement); !g.Passed || g.Value != 1 {
		t.Errorf("agreement gate %+v, want 1", g)
	}
	if n := info.Results[rollout.ResultInstalled]; n != 2 {
		t.Errorf("shadow installed on %d devices, want 2: %+v", n, info.State.Devices)
	}
	if !hasHistory(info, "shadows removed") {
		t.Errorf("history does not say the shadows were removed:\n%s", historyText(info))
	}
	f.waitShadow("", "edge-1", "edge-2")
	f.waitServing("1.0.0", "edge-1", "edge-2")

	f.release("2.0.0", models.FileV2)
	id, err = f.hub.StartRollout(ctx, shadowSpec(t, "2.0.0", "install_failures<=0", "shadow_agreement>=0.99"))
	if err != nil {
		t.Fatal(err)
	}
	info = f.waitRollout(id, store.StatusRolledBack)
	if !strings.Contains(info.State.Reason, "wave 1/2 (50%) failed its gates: shadow_agreement>=0.99: ") {
		t.Errorf("rolled back for %q, want the agreement gate of wave 1", info.State.Reason)
	}
	if g := gate(t, info, rollout.MetricShadowAgreement); g.Missing || g.Value >= 0.99 {
		t.Errorf("agreement gate %+v, want a measured disagreement", g)
	}
	if n := len(info.State.Devices); n != 1 {
		t.Errorf("the v2 shadow reached %d devices, want the first wave's 1", n)
	}
	f.waitShadow("", "edge-1", "edge-2")
	f.waitServing("1.0.0", "edge-1", "edge-2")
	f.assertServes("edge-1", "1.0.0", models.SeedV1)
	f.assertServes("edge-2", "1.0.0", models.SeedV1)
}

func hasHistory(info hub.RolloutInfo, substr string) bool {
	for _, e := range info.State.History {
		if strings.Contains(e.Text, substr) {
			return true
		}
	}
	return false
}

func historyText(info hub.RolloutInfo) string {
	var b strings.Builder
	for _, e := range info.State.History {
		fmt.Fprintf(&b, "  %s %s\n", e.Time.Format(time.TimeOnly), e.Text)
	}
	return b.String()
}
