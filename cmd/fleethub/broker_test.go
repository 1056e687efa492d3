package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBrokerConfigCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "broker")
	cfg := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(cfg, []byte("devices:\n  - id: press-01\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "broker", "config", "--kind", "mosquitto", "--out", dir, "--listener-port", "18883", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var res brokerFileResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Files) != 2 || res.PasswordsFile != "" {
		t.Fatalf("result %+v (%v):\n%s", res, err, out)
	}
	conf, err := os.ReadFile(filepath.Join(dir, "mosquitto.conf"))
	if err != nil || !strings.Contains(string(conf), "listener 18883\n") {
		t.Fatalf("mosquitto.conf (%v):\n%s", err, conf)
	}

	// Existing files are kept unless --force.
	if out, err := run(t, "broker", "config", "--out", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second run without --force: %v\n%s", err, out)
	}
	out, err = run(t, "broker", "config", "--out", dir, "--force", "--auth", "password", "--config", cfg, "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.PasswordsFile == "" {
		t.Fatalf("password mode result %+v (%v)", res, err)
	}
	for _, name := range []string{"modelfleet.passwd", "passwords.json"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", name, err, info.Mode().Perm())
		}
	}
	var pw map[string]string
	b, _ := os.ReadFile(res.PasswordsFile)
	if err := json.Unmarshal(b, &pw); err != nil || pw["fleethub"] == "" || pw["press-01"] == "" {
		t.Errorf("passwords.json: %v %v", pw, err)
	}

	if out, err := run(t, "broker", "config", "--kind", "emqx", "--out", dir); err == nil {
		t.Errorf("--kind emqx accepted:\n%s", out)
	}
	if out, err := run(t, "broker", "config", "--out", t.TempDir(), "--auth", "psk"); err == nil || !strings.Contains(err.Error(), "auth") {
		t.Errorf("--auth psk: %v\n%s", err, out)
	}
}

func TestS3PolicyCommand(t *testing.T) {
	out, err := run(t, "s3", "policy", "--bucket", "models", "--prefix", "fleet")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var p struct {
		Statement []struct {
			Action   []string
			Resource []string
		}
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || len(p.Statement) != 1 ||
		strings.Join(p.Statement[0].Action, ",") != "s3:GetObject" || p.Statement[0].Resource[0] != "arn:aws:s3:::models/fleet/*" {
		t.Fatalf("policy (%v):\n%s", err, out)
	}
	if _, err := run(t, "s3", "policy", "--bucket", "Models"); err == nil {
		t.Error("invalid bucket name accepted")
	}
}
