package sim_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/release"
	"github.com/modelfleet/modelfleet/hub/sim"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

// TestRunAgainstRemoteHub: with Config.Hub the release is pushed and the
// rollout started through an existing hub's API (token included), and the
// agents trust that hub's root.json.
func TestRunAgainstRemoteHub(t *testing.T) {
	const agents, token = 10, "sim-test-token"
	cfg := config(t, agents, 128<<10, sim.DownloadShared)
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()

	dir := t.TempDir()
	keyDir := filepath.Join(dir, "keys")
	created, err := keys.Init(ctx, keyDir, keys.DefaultInitOptions())
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := keys.LoadDir(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	var signers []manifest.Signer
	for _, k := range loaded {
		if k.Role == manifest.RoleRelease {
			signers = append(signers, k.Signer)
		}
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s3, err := fetch.NewClient(cfg.S3)
	if err != nil {
		t.Fatal(err)
	}
	hcfg := hub.DefaultConfig()
	hcfg.MQTT.Brokers = cfg.MQTT.Brokers
	hcfg.KeyDir = keyDir
	hcfg.TickMillis = 500
	h := hub.New(hcfg, hub.Deps{Store: st, Logger: cfg.HubLogger})
	hubCtx, stopHub := context.WithCancel(ctx)
	hubDone := make(chan error, 1)
	go func() { hubDone <- h.Run(hubCtx) }()
	t.Cleanup(func() {
		stopHub()
		if err := <-hubDone; err != nil {
			t.Errorf("hub: %v", err)
		}
		h.Close()
	})
	select {
	case <-h.Ready():
	case err := <-hubDone:
		t.Fatalf("hub: %v", err)
	}
	srv := httptest.NewServer(api.NewServer(h, st, api.Options{
		Token: token, Logger: cfg.HubLogger, TempDir: t.TempDir(),
		Push: func(ctx context.Context, req release.PushRequest) (*release.Result, error) {
			req.Bucket, req.Signers = cfg.Bucket, signers
			return release.Push(ctx, s3, st, req)
		},
	}))
	t.Cleanup(srv.Close)

	cfg.Hub = &sim.RemoteHub{URL: srv.URL, Token: token, TrustRoot: created.RootPath}
	res, err := sim.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Converged != agents {
		t.Errorf("converged %d of %d agents", res.Converged, agents)
	}
	if res.TotalSeconds < res.MaxSeconds || res.MaxSeconds <= 0 {
		t.Errorf("times: max %v, total %v; want 0 < max <= total", res.MaxSeconds, res.TotalSeconds)
	}
}
