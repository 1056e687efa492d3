package api_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/release"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/internal/testenv"
	"github.com/modelfleet/modelfleet/manifest"
)

const token = "t0ken-for-tests"

// env is a running hub (real SQLite store, Mosquitto, MinIO) behind an
// httptest server of the API.
type env struct {
	st     *sqlite.Store
	hub    *hub.Hub
	srv    *httptest.Server
	client *api.Client
	dir    string
	broker *testenv.Broker
	s3     *testenv.ObjectStore
	trust  *fleettest.Trust
}

// mustEnv starts the hub and the API server for the test.
func mustEnv(t *testing.T) *env {
	t.Helper()
	broker := testenv.Mosquitto(t)
	s3 := testenv.MinIO(t)
	dir := t.TempDir()
	trust := fleettest.TrustFromKeyDir(t, filepath.Join(dir, "keys"))
	ctx, cancel := context.WithCancel(context.Background())
	st, err := sqlite.Open(ctx, filepath.Join(dir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := hub.DefaultConfig()
	cfg.MQTT.Brokers = []string{broker.URL}
	cfg.KeyDir = filepath.Join(dir, "keys")
	cfg.TickMillis = 100
	h := hub.New(cfg, hub.Deps{Store: st})
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub Run: %v", err)
		}
		h.Close()
		st.Close()
	})
	select {
	case <-h.Ready():
	case err := <-done:
		done <- err
		t.Fatalf("hub Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("hub not ready")
	}
	push := func(ctx context.Context, req release.PushRequest) (*release.Result, error) {
		req.Bucket = s3.Bucket
		if !req.SignLater {
			req.Signers = []manifest.Signer{trust.Release}
		}
		return release.Push(ctx, s3.Client, st, req)
	}
	srv := httptest.NewServer(api.NewServer(h, st, api.Options{Token: token, Push: push, TempDir: dir}))
	t.Cleanup(srv.Close)
	return &env{st: st, hub: h, srv: srv, client: &api.Client{BaseURL: srv.URL, Token: token}, dir: dir,
		broker: broker, s3: s3, trust: trust}
}

// modelFile writes an example model to the test's directory.
func (e *env) modelFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, fleettest.ModelBytes(t, name), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantStatus(t *testing.T, err error, code int) {
	t.Helper()
	if !api.IsStatus(err, code) {
		t.Fatalf("err = %v; want HTTP %d", err, code)
	}
}

func TestAPI(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()

	t.Run("auth", func(t *testing.T) {
		for _, tc := range []struct {
			name, path, auth string
			want             int
		}{
			{"no token", "/api/v1/devices", "", http.StatusUnauthorized},
			{"wrong token", "/api/v1/devices", "Bearer nope", http.StatusUnauthorized},
			{"not bearer", "/api/v1/devices", token, http.StatusUnauthorized},
			{"token", "/api/v1/devices", "Bearer " + token, http.StatusOK},
			{"unknown endpoint without token", "/api/v1/nothing", "", http.StatusUnauthorized},
			{"unknown endpoint", "/api/v1/nothing", "Bearer " + token, http.StatusNotFound},
			{"healthz is open", "/healthz", "", http.StatusOK},
			{"metrics is open", "/metrics", "", http.StatusOK},
			{"readyz is open", "/readyz", "", http.StatusOK},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodGet, e.srv.URL+tc.path, nil)
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.want, body)
				}
				if strings.HasPrefix(tc.path, "/api/") && tc.want != http.StatusOK && !strings.Contains(string(body), `"error"`) {
					t.Errorf("error body %s is not {\"error\": …}", body)
				}
			})
		}
		_, err := (&api.Client{BaseURL: e.srv.URL}).Devices(ctx, "")
		wantStatus(t, err, http.StatusUnauthorized)
	})

	t.Run("models", func(t *testing.T) {
		v1 := e.modelFile(t, models.FileV1)
		m, err := e.client.PushModel(ctx, api.PushModelRequest{Name: "vibration-anomaly", Version: "1.0.0", Files: []api.PushFile{{Variant: "cpu", Path: v1}}})
		if err != nil {
			t.Fatal(err)
		}
		if !m.Signed || len(m.Artifacts) != 1 || m.Artifacts[0].Variant != "cpu" {
			t.Fatalf("pushed %+v", m)
		}
		if _, err := manifest.ParseEnvelope(m.Manifest); err != nil {
			t.Errorf("manifest of the answer does not parse: %v", err)
		}
		_, err = e.client.PushModel(ctx, api.PushModelRequest{Name: "vibration-anomaly", Version: "1.0.0", Files: []api.PushFile{{Variant: "cpu", Path: v1}}})
		wantStatus(t, err, http.StatusConflict)

		notONNX := filepath.Join(e.dir, "notes.txt")
		os.WriteFile(notONNX, []byte("hello, not a model"), 0o600)
		_, err = e.client.PushModel(ctx, api.PushModelRequest{Name: "vibration-anomaly", Version: "1.0.1", Files: []api.PushFile{{Variant: "cpu", Path: notONNX}}})
		wantStatus(t, err, http.StatusBadRequest)
		_, err = e.client.PushModel(ctx, api.PushModelRequest{Name: "vibration-anomaly", Version: "1.0.1", Files: []api.PushFile{{Variant: "../x", Path: v1}}})
		wantStatus(t, err, http.StatusBadRequest)

		unsigned, err := e.client.PushModel(ctx, api.PushModelRequest{Name: "vibration-anomaly", Version: "2.0.0", SignLater: true, Files: []api.PushFile{{Variant: "cpu", Path: e.modelFile(t, models.FileV2)}}})
		if err != nil {
			t.Fatal(err)
		}
		if unsigned.Signed {
			t.Error("sign-later release is signed")
		}

		list, err := e.client.Models(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Version != "1.0.0" || !list[0].Signed || list[1].Signed {
			t.Fatalf("models = %+v", list)
		}
		got, err := e.client.Model(ctx, "vibration-anomaly", "1.0.0")
		if err != nil || got.Artifacts[0].SHA256 != m.Artifacts[0].SHA256 {
			t.Fatalf("model show = %+v, %v", got, err)
		}
		_, err = e.client.Model(ctx, "vibration-anomaly", "9.9.9")
		wantStatus(t, err, http.StatusNotFound)
	})

	t.Run("rollouts", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			req     api.RolloutRequest
			want    int
			wantMsg string
		}{
			{"bad gate", api.RolloutRequest{Model: "vibration-anomaly", Version: "1.0.0", Gates: []string{"error_rat<0.01"}}, 400, "unknown metric"},
			{"bad waves", api.RolloutRequest{Model: "vibration-anomaly", Version: "1.0.0", Waves: "10,5"}, 400, "waves"},
			{"bad soak", api.RolloutRequest{Model: "vibration-anomaly", Version: "1.0.0", Soak: "five"}, 400, "soak"},
			{"bad selector", api.RolloutRequest{Model: "vibration-anomaly", Version: "1.0.0", Selector: "site"}, 400, "selector"},
			{"unknown version", api.RolloutRequest{Model: "vibration-anomaly", Version: "3.0.0"}, 404, "not found"},
			{"unknown model", api.RolloutRequest{Model: "no-such-model", Version: "1.0.0"}, 404, "no-such-model@1.0.0"},
			{"selector parse error", api.RolloutRequest{Model: "vibration-anomaly", Version: "1.0.0", Selector: "site=a,,line"}, 400, "selector:"},
			{"gate parse error", api.RolloutRequest{Model: "vibration-anomaly", Version: "1.0.0", Gates: []string{"error_rate<<0.01"}}, 400, "gate:"},
			{"unsigned", api.RolloutRequest{Model: "vibration-anomaly", Version: "2.0.0"}, 409, "not signed"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := e.client.StartRollout(ctx, tc.req)
				wantStatus(t, err, tc.want)
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("error %q does not mention %q", err, tc.wantMsg)
				}
			})
		}

		// A device in the registry so the rollout has somewhere to go.
		if err := e.st.SetDeviceState(ctx, "edge-1", report.State{Time: time.Now(), Labels: map[string]string{"site": "plant-a"}}, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := e.st.SetOnline(ctx, "edge-1", true, time.Now()); err != nil {
			t.Fatal(err)
		}
		info, err := e.client.StartRollout(ctx, api.RolloutRequest{Model: "vibration-anomaly", Version: "1.0.0", Selector: "site=plant-a",
			Waves: "50,100", Soak: "1h", Gates: []string{"error_rate<0.01"}})
		if err != nil {
			t.Fatal(err)
		}
		id := info.Rollout.ID
		if info.Rollout.SoakSeconds != 3600 || len(info.Rollout.Waves) != 2 {
			t.Errorf("rollout = %+v", info.Rollout)
		}
		_, err = e.client.StartRollout(ctx, api.RolloutRequest{Model: "vibration-anomaly", Version: "1.0.0"})
		wantStatus(t, err, http.StatusConflict)

		got, err := e.client.Rollout(ctx, id)
		if err != nil || got.Rollout.ID != id {
			t.Fatalf("status: %+v, %v", got, err)
		}
		list, err := e.client.Rollouts(ctx, store.StatusPending, store.StatusRunning)
		if err != nil || len(list) != 1 {
			t.Fatalf("list: %+v, %v", list, err)
		}
		_, err = e.client.Rollout(ctx, 999)
		wantStatus(t, err, http.StatusNotFound)
		_, err = e.client.RolloutCommand(ctx, id, "explode")
		wantStatus(t, err, http.StatusNotFound)

		// Wait for the controller to start it, then pause and abort.
		deadline := time.Now().Add(30 * time.Second)
		for got.Rollout.Status == store.StatusPending && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			got, _ = e.client.Rollout(ctx, id)
		}
		if got.Rollout.Status != store.StatusRunning {
			t.Fatalf("rollout status %s (%s), want running", got.Rollout.Status, got.State.Reason)
		}
		if got, err = e.client.RolloutCommand(ctx, id, api.CommandPause); err != nil || got.Rollout.Status != store.StatusPaused {
			t.Fatalf("pause: %+v, %v", got, err)
		}
		if got, err = e.client.RolloutCommand(ctx, id, api.CommandAbort); err != nil || got.Rollout.Status != store.StatusAborted {
			t.Fatalf("abort: %+v, %v", got, err)
		}
		_, err = e.client.RolloutCommand(ctx, id, api.CommandResume)
		wantStatus(t, err, http.StatusConflict)
	})

	t.Run("devices", func(t *testing.T) {
		ds, err := e.client.Devices(ctx, "site=plant-a")
		if err != nil || len(ds) != 1 || ds[0].ID != "edge-1" {
			t.Fatalf("devices = %+v, %v", ds, err)
		}
		_, err = e.client.Devices(ctx, "site")
		wantStatus(t, err, http.StatusBadRequest)
		d, err := e.client.SetLabels(ctx, "edge-1", api.LabelsRequest{Set: map[string]string{"line": "3"}})
		if err != nil || d.Labels["line"] != "3" || d.Labels["site"] != "plant-a" {
			t.Fatalf("labels: %+v, %v", d, err)
		}
		_, err = e.client.SetLabels(ctx, "edge-1", api.LabelsRequest{Set: map[string]string{"bad,key": "x"}})
		wantStatus(t, err, http.StatusBadRequest)
		_, err = e.client.SetLabels(ctx, "ghost", api.LabelsRequest{Set: map[string]string{"a": "b"}})
		wantStatus(t, err, http.StatusNotFound)
		dd, err := e.client.Device(ctx, "edge-1")
		if err != nil || dd.Device.ID != "edge-1" || dd.Events == nil || dd.Telemetry == nil {
			t.Fatalf("device show: %+v, %v", dd, err)
		}
		_, err = e.client.Device(ctx, "ghost")
		wantStatus(t, err, http.StatusNotFound)
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get(e.srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"modelfleet_devices 1\n", "modelfleet_devices_online 1\n", `modelfleet_rollouts{status="aborted"} 1` + "\n", "# TYPE modelfleet_rollouts gauge\n"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("metrics lack %q:\n%s", want, b)
			}
		}
	})
}

// TestPushDisabled: a hub without an object store refuses pushes clearly.
func TestPushDisabled(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := hub.New(hub.DefaultConfig(), hub.Deps{Store: st})
	srv := httptest.NewServer(api.NewServer(h, st, api.Options{}))
	defer srv.Close()
	c := &api.Client{BaseURL: srv.URL}
	p := filepath.Join(dir, "m.onnx")
	os.WriteFile(p, fleettest.ModelBytes(t, models.FileV1), 0o600)
	_, err = c.PushModel(context.Background(), api.PushModelRequest{Name: "m", Version: "1.0.0", Files: []api.PushFile{{Variant: "cpu", Path: p}}})
	wantStatus(t, err, http.StatusNotImplemented)
	// Without a token configured, the API is open.
	if _, err := c.Devices(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
}
