package api_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/release"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/manifest"
)

const waitFor = 90 * time.Second

// startAgent runs a real in-process agent against the env's broker and
// object store until the test ends.
func (e *env) startAgent(t *testing.T, id string, labels map[string]string) {
	t.Helper()
	dir := t.TempDir()
	cfg := agent.DefaultConfig()
	cfg.DeviceID = id
	cfg.Labels = labels
	cfg.MQTT.Brokers = []string{e.broker.URL}
	cfg.S3 = agent.S3Config{Endpoint: e.s3.Endpoint, Region: e.s3.Region, AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey, Insecure: true}
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TrustRoot = e.trust.WriteRoot(t, dir)
	cfg.Serving.HTTPAddr = "127.0.0.1:0"
	cfg.TelemetryIntervalSeconds = 1
	a := agent.New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent %s Run: %v", id, err)
		}
	})
}

// eventually polls cond until it holds, failing with its last note.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		ok, note := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, note)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) waitStatus(t *testing.T, id int64, want store.RolloutStatus) *hub.RolloutInfo {
	t.Helper()
	var info *hub.RolloutInfo
	eventually(t, fmt.Sprintf("rollout %d to be %s", id, want), func() (bool, string) {
		var err error
		info, err = e.client.Rollout(context.Background(), id)
		if err != nil {
			return false, err.Error()
		}
		return info.Rollout.Status == want, fmt.Sprintf("status %s (%s)", info.Rollout.Status, info.State.Reason)
	})
	return info
}

func (e *env) waitServing(t *testing.T, device, version string) {
	t.Helper()
	eventually(t, device+" to serve "+version, func() (bool, string) {
		d, err := e.client.Device(context.Background(), device)
		if err != nil {
			return false, err.Error()
		}
		m := d.Device.Models["vibration-anomaly"]
		return m.Version == version && m.Phase == "active", fmt.Sprintf("%+v", m)
	})
}

// scrape reads /metrics and parses the text exposition format into series
// ("name{label="v",…}" exactly as written) → value, checking that every
// sample belongs to a family announced by # TYPE.
func (e *env) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	types := map[string]string{}
	series := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			parts := strings.Fields(f)
			if len(parts) != 2 {
				t.Fatalf("bad TYPE line %q", line)
			}
			types[parts[0]] = parts[1]
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad sample line %q", line)
		}
		name, val := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		family, _, _ := strings.Cut(name, "{")
		base := family
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(family, suffix); ok && types[b] == "histogram" {
				base = b
			}
		}
		if types[base] == "" {
			t.Errorf("sample %q has no # TYPE", line)
		}
		if _, dup := series[name]; dup {
			t.Errorf("series %s written twice", name)
		}
		series[name] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return series
}

// TestOfflineSigningRolloutCommandsAndMetrics drives one device's model
// through the API against real Mosquitto, MinIO and a real agent: a release
// signed offline and attached (after refused attempts), a rollout of it,
// pause, resume and rollback of the next one through the client, and the
// /metrics counters of what that took.
func TestOfflineSigningRolloutCommandsAndMetrics(t *testing.T) {
	runtimetest.Init(t)
	e := mustEnv(t)
	ctx := context.Background()
	const model = "vibration-anomaly"

	// 1.0.0 is pushed for offline signing.
	pushed, err := e.client.PushModel(ctx, api.PushModelRequest{Name: model, Version: "1.0.0", SignLater: true,
		Files: []api.PushFile{{Variant: "cpu", Path: e.modelFile(t, models.FileV1)}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := e.s3.Bucket + "/" + model + "/1.0.0/cpu.onnx"; pushed.Artifacts[0].Key != want {
		t.Errorf("artifact key %s, want %s", pushed.Artifacts[0].Key, want)
	}
	unsigned, err := e.client.Manifest(ctx, model, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if env, err := manifest.ParseEnvelope(unsigned); err != nil || len(env.Signatures) != 0 {
		t.Fatalf("GET manifest: %v, %s", err, unsigned)
	}
	_, err = e.client.StartRollout(ctx, api.RolloutRequest{Model: model, Version: "1.0.0"})
	wantStatus(t, err, http.StatusConflict)

	sign := func(s manifest.Signer) []byte {
		out, _, err := release.Sign(ctx, unsigned, s)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		version  string
		envelope []byte
		want     int
		wantMsg  string
	}{
		{"foreign key", "1.0.0", sign(fleettest.Key(t, "not in the root")), http.StatusBadRequest, "signature not accepted"},
		{"director key", "1.0.0", sign(e.trust.Director), http.StatusBadRequest, "signature not accepted"},
		{"unsigned", "1.0.0", unsigned, http.StatusBadRequest, "signature not accepted"},
		{"empty", "1.0.0", nil, http.StatusBadRequest, "empty body"},
		{"unknown version", "7.0.0", sign(e.trust.Release), http.StatusNotFound, "not found"},
	} {
		t.Run("attach "+tc.name, func(t *testing.T) {
			_, err := e.client.AttachSignature(ctx, model, tc.version, tc.envelope)
			wantStatus(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
			if m, err := e.client.Model(ctx, model, "1.0.0"); err != nil || m.Signed {
				t.Fatalf("after a refused attach: %+v, %v; want 1.0.0 still unsigned", m, err)
			}
		})
	}
	signed, err := e.client.AttachSignature(ctx, model, "1.0.0", sign(e.trust.Release))
	if err != nil {
		t.Fatal(err)
	}
	if !signed.Signed {
		t.Fatalf("attach answered %+v", signed)
	}
	_, err = e.client.AttachSignature(ctx, model, "1.0.0", sign(e.trust.Release))
	wantStatus(t, err, http.StatusConflict)

	if _, err := e.client.PushModel(ctx, api.PushModelRequest{Name: model, Version: "2.0.0",
		Files: []api.PushFile{{Variant: "cpu", Path: e.modelFile(t, models.FileV2)}}}); err != nil {
		t.Fatal(err)
	}

	e.startAgent(t, "edge-a", map[string]string{"site": "api-test"})
	eventually(t, "the agent to register", func() (bool, string) {
		ds, err := e.client.Devices(ctx, "site=api-test")
		return err == nil && len(ds) == 1 && ds[0].Online, fmt.Sprintf("%+v %v", ds, err)
	})

	// The offline-signed release rolls out.
	first, err := e.client.StartRollout(ctx, api.RolloutRequest{Model: model, Version: "1.0.0", Selector: "site=api-test", Waves: "100", Soak: "0s"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, first.Rollout.ID, store.StatusSucceeded)
	e.waitServing(t, "edge-a", "1.0.0")

	// 2.0.0 installs, then soaks for an hour: pause, resume, roll back.
	second, err := e.client.StartRollout(ctx, api.RolloutRequest{Model: model, Version: "2.0.0", Selector: "site=api-test", Waves: "100", Soak: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	id := second.Rollout.ID
	e.waitServing(t, "edge-a", "2.0.0")
	e.waitStatus(t, id, store.StatusRunning)
	for _, step := range []struct {
		command string
		want    store.RolloutStatus
	}{
		{api.CommandPause, store.StatusPaused},
		{api.CommandResume, store.StatusRunning},
		{api.CommandRollback, store.StatusRolledBack},
	} {
		info, err := e.client.RolloutCommand(ctx, id, step.command)
		if err != nil {
			t.Fatalf("%s: %v", step.command, err)
		}
		if info.Rollout.Status != step.want {
			t.Fatalf("%s: status %s, want %s", step.command, info.Rollout.Status, step.want)
		}
	}
	e.waitServing(t, "edge-a", "1.0.0")
	for _, c := range []string{api.CommandPause, api.CommandResume, api.CommandAbort, api.CommandRollback} {
		_, err := e.client.RolloutCommand(ctx, id, c)
		wantStatus(t, err, http.StatusConflict)
	}

	// A device message the hub cannot parse is counted, not stored.
	c, err := bus.Connect(ctx, bus.Config{Brokers: []string{e.broker.URL}, ClientID: "api-test-garbage"}, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	topics := bus.NewTopics(hub.DefaultConfig().TopicPrefix)
	if err := c.Publish(ctx, topics.State("garbage-1"), 1, false, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, topics.Online("garbage-1"), 1, false, []byte("maybe")); err != nil {
		t.Fatal(err)
	}
	c.Close(nil)

	var m map[string]float64
	eventually(t, "the ingest counters", func() (bool, string) {
		m = e.scrape(t)
		for _, s := range []string{
			`modelfleet_ingest_messages_total{kind="state"}`, `modelfleet_ingest_messages_total{kind="online"}`,
			`modelfleet_ingest_messages_total{kind="telemetry"}`, `modelfleet_ingest_messages_total{kind="events"}`,
			`modelfleet_ingest_rejected_total{kind="state",reason="malformed"}`,
			`modelfleet_ingest_rejected_total{kind="online",reason="malformed"}`,
		} {
			if m[s] <= 0 {
				return false, s + " is 0"
			}
		}
		return true, ""
	})
	for name, want := range map[string]float64{
		"modelfleet_hub_ready": 1, "modelfleet_broker_connected": 1, "modelfleet_devices_online": 1,
		`modelfleet_rollouts{status="succeeded"}`: 1, `modelfleet_rollouts{status="rolled-back"}`: 1,
		"modelfleet_assignment_publish_failures_total": 0,
	} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %v (present %t), want %v", name, got, ok, want)
		}
	}
	if m[`modelfleet_ingest_rejected_total{kind="telemetry",reason="malformed"}`] != 0 {
		t.Errorf("telemetry from a real agent was rejected as malformed")
	}
	// Assignments: the first rollout, the second, and the rollback at least.
	const h = "modelfleet_assignment_publish_seconds"
	count := m[h+"_count"]
	if count < 3 {
		t.Errorf("%s_count = %v, want at least 3 assignments", h, count)
	}
	if m[h+`_bucket{le="+Inf"}`] != count {
		t.Errorf("+Inf bucket %v != count %v", m[h+`_bucket{le="+Inf"}`], count)
	}
	if m[h+"_sum"] <= 0 {
		t.Errorf("%s_sum = %v", h, m[h+"_sum"])
	}
	prev := 0.0
	for _, le := range hub.PublishLatencyBuckets {
		name := fmt.Sprintf(`%s_bucket{le="%s"}`, h, strconv.FormatFloat(le, 'g', -1, 64))
		v, ok := m[name]
		if !ok {
			t.Fatalf("%s missing", name)
		}
		if v < prev || v > count {
			t.Errorf("%s = %v after %v (count %v): buckets must be cumulative", name, v, prev, count)
		}
		prev = v
	}
	if t.Failed() {
		resp, _ := http.Get(e.srv.URL + "/metrics")
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("metrics:\n%s", b)
	}
}

// TestReadyz: /readyz is 200 once the hub core runs and 503 with the
// reason before; an operation that needs the running hub answers 503 with
// a hint meanwhile.
func TestReadyz(t *testing.T) {
	e := mustEnv(t)
	resp, err := http.Get(e.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz of a running hub: %d", resp.StatusCode)
	}

	// A hub that was never run, over the same store.
	idle := api.NewServer(hub.New(hub.DefaultConfig(), hub.Deps{Store: e.st}), e.st, api.Options{})
	rec := httptest.NewRecorder()
	idle.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "MQTT broker") {
		t.Errorf("/readyz of a hub not running: %d %s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	idle.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/api/v1/models/m/1.0.0/manifest", strings.NewReader(`{"signed":{},"signatures":[]}`)))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "readyz") {
		t.Errorf("attach on a hub not running: %d %s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	idle.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "\nmodelfleet_hub_ready 0\n") {
		t.Errorf("metrics of a hub not running:\n%s", rec.Body.String())
	}
}
