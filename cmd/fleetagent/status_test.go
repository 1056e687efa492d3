package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/agent/state"
)

func execStatus(t *testing.T, args ...string) string {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"status"}, args...))
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("status %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// TestStatusShowsBrokerState checks that `fleetagent status` reports the
// broker connection the agent recorded, in text and JSON, and says so when
// there is no record.
func TestStatusShowsBrokerState(t *testing.T) {
	dir := t.TempDir()
	f, err := state.NewFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Save(state.New()); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte("device_id: edge-7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", cfgPath, "--data-dir", dir}

	if out := execStatus(t, args...); !strings.Contains(out, "broker:") || !strings.Contains(out, "unknown") || !strings.Contains(out, "edge-7") {
		t.Errorf("without a broker record:\n%s", out)
	}

	at := time.Date(2026, 11, 23, 22, 4, 9, 0, time.UTC)
	// The agent records the device ID it ran as; status shows that one,
	// not what this command's configuration would derive.
	rec := agent.BrokerStatus{
		Device: "press-09", State: agent.BrokerRefused, Brokers: []string{"ssl://broker:8883"}, Since: at,
		LastError: "not Authorized", LastErrorAt: &at, FailedAttempts: 4, Hint: "fix the credentials", Updated: at,
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, agent.BrokerStatusFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := execStatus(t, args...)
	for _, want := range []string{"press-09", "refused since", "ssl://broker:8883", "not Authorized", "4 failed attempts", "fix the credentials"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var js struct {
		Models map[string]any      `json:"models"`
		Broker *agent.BrokerStatus `json:"broker"`
	}
	if err := json.Unmarshal([]byte(execStatus(t, append(args, "-o", "json")...)), &js); err != nil {
		t.Fatal(err)
	}
	if js.Broker == nil || js.Broker.State != agent.BrokerRefused || js.Broker.LastError != "not Authorized" || js.Models == nil {
		t.Errorf("status -o json: %+v", js)
	}
}
