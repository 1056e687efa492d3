package hub_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/rollout"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/manifest"
)

func TestConfigValidate(t *testing.T) {
	valid := func() hub.Config {
		c := hub.DefaultConfig()
		c.MQTT.Brokers = []string{"tcp://127.0.0.1:1883"}
		c.KeyDir = "/etc/modelfleet/keys"
		c.StorePath = "/var/lib/modelfleet/hub.db"
		return c
	}
	tests := []struct {
		name    string
		change  func(*hub.Config)
		wantErr []string
	}{
		{"valid", func(*hub.Config) {}, nil},
		{"no broker", func(c *hub.Config) { c.MQTT.Brokers = nil }, []string{"brokers"}},
		{"no client id", func(c *hub.Config) { c.MQTT.ClientID = "" }, []string{"client_id"}},
		{"no key dir", func(c *hub.Config) { c.KeyDir = "" }, []string{"key_dir"}},
		{"zero ttl", func(c *hub.Config) { c.AssignmentTTLSeconds = 0 }, []string{"assignment_ttl_seconds"}},
		{"margin above ttl", func(c *hub.Config) { c.RefreshMarginSeconds = c.AssignmentTTLSeconds }, []string{"refresh_margin_seconds"}},
		{"negative margin", func(c *hub.Config) { c.RefreshMarginSeconds = -1 }, []string{"refresh_margin_seconds"}},
		{"zero tick", func(c *hub.Config) { c.TickMillis = 0 }, []string{"tick_millis"}},
		{"negative window", func(c *hub.Config) { c.GateWindowSeconds = -5 }, []string{"gate_window_seconds"}},
		{"zero payload cap", func(c *hub.Config) { c.MaxPayloadBytes = 0 }, []string{"max_payload_bytes"}},
		{"every problem at once", func(c *hub.Config) {
			c.MQTT.Brokers, c.KeyDir, c.TickMillis = nil, "", -1
		}, []string{"brokers", "key_dir", "tick_millis"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			if (err != nil) != (len(tt.wantErr) > 0) {
				t.Fatalf("Validate() = %v, want error naming %v", err, tt.wantErr)
			}
			for _, field := range tt.wantErr {
				if !strings.Contains(err.Error(), field) {
					t.Errorf("Validate() = %q, does not name %s", err, field)
				}
			}
		})
	}
}

// TestCloseAfterPartialStart closes hubs that never ran, failed to start,
// and were closed twice.
func TestCloseAfterPartialStart(t *testing.T) {
	h := hub.New(hub.DefaultConfig(), hub.Deps{})
	if err := h.Close(); err != nil {
		t.Errorf("Close of a hub that never ran: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	cfg := hub.DefaultConfig()
	cfg.MQTT.Brokers = []string{"tcp://127.0.0.1:1"}
	cfg.KeyDir = filepath.Join(t.TempDir(), "missing")
	cfg.StorePath = filepath.Join(t.TempDir(), "hub.db")
	h = hub.New(cfg, hub.Deps{})
	err := h.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "root") {
		t.Errorf("Run without a key directory = %v, want an error about the trust root", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("Close after a failed Run: %v", err)
	}
	if _, err := h.RolloutStatus(context.Background(), 1); !errors.Is(err, hub.ErrNotRunning) {
		t.Errorf("RolloutStatus without a store = %v, want ErrNotRunning", err)
	}
}

// TestStartRolloutRefusals checks what StartRollout refuses, with a real
// SQLite store and no broker: nothing is registered for a refused rollout.
func TestStartRolloutRefusals(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	trust := fleettest.NewTrust(t)
	art := manifest.Artifact{Variant: "cpu", Key: "models/m.onnx", SHA256: strings.Repeat("ab", 32), Size: 10, Format: manifest.FormatONNX}
	signed := fleettest.Sign(t, fleettest.VibrationManifest(model, "1.0.0", art), trust.Release)
	for _, r := range []store.Release{
		{Name: model, Version: "1.0.0", Manifest: signed, Signed: true, Created: time.Now()},
		{Name: model, Version: "1.1.0", Manifest: []byte(`{"signed":{},"signatures":[]}`), Signed: false, Created: time.Now()},
	} {
		if err := st.PutRelease(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	h := hub.New(hub.DefaultConfig(), hub.Deps{Store: st})
	t.Cleanup(func() { h.Close() })

	spec := func(version string, change func(*rollout.Spec)) rollout.Spec {
		s := rollout.Spec{Model: model, Version: version, Selector: map[string]string{"site": "plant-a"}}
		if change != nil {
			change(&s)
		}
		return s
	}
	tests := []struct {
		name string
		spec rollout.Spec
		want error
	}{
		{"unknown release", spec("9.9.9", nil), store.ErrNotFound},
		{"unsigned release", spec("1.1.0", nil), hub.ErrUnsignedRelease},
		{"invalid waves", spec("1.0.0", func(s *rollout.Spec) { s.Waves = []int{50, 10} }), rollout.ErrInvalidSpec},
		{"bad selector", spec("1.0.0", func(s *rollout.Spec) { s.Selector = map[string]string{"site": " padded"} }), store.ErrInvalid},
		{"shadow gate on active rollout", spec("1.0.0", func(s *rollout.Spec) {
			g, _ := rollout.ParseGate("shadow_agreement>=0.99")
			s.Gates = []rollout.Gate{g}
		}), rollout.ErrInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := h.StartRollout(ctx, tt.spec); !errors.Is(err, tt.want) {
				t.Errorf("StartRollout = %v, want %v", err, tt.want)
			}
		})
	}
	if rs, err := st.ListRollouts(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("refused rollouts were registered: %v %v", rs, err)
	}

	id, err := h.StartRollout(ctx, spec("1.0.0", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.StartRollout(ctx, spec("1.0.0", nil)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second unfinished rollout of the model = %v, want ErrConflict", err)
	}
	info, err := h.RolloutStatus(ctx, id)
	if err != nil || info.Rollout.Status != store.StatusPending || info.Rollout.Version != "1.0.0" {
		t.Errorf("RolloutStatus = %+v, %v; want the pending rollout", info.Rollout, err)
	}
	if err := h.Resume(ctx, id); !errors.Is(err, rollout.ErrNotAllowed) {
		t.Errorf("Resume of a pending rollout = %v, want ErrNotAllowed", err)
	}
	if err := h.Pause(ctx, id+100); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Pause of an unknown rollout = %v, want ErrNotFound", err)
	}
}
