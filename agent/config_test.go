package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/internal/config"
)

// TestExampleConfigsDecode keeps the example configurations in examples/
// in step with the Config struct (decoding is strict).
func TestExampleConfigsDecode(t *testing.T) {
	paths, _ := filepath.Glob("../examples/agent-*.yaml")
	if len(paths) == 0 {
		t.Fatal("no example agent configs found")
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		if err := config.DecodeYAML(f, &cfg); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		f.Close()
		if cfg.DeviceID == "" || len(cfg.MQTT.Brokers) == 0 {
			t.Errorf("%s: decoded to %+v", p, cfg)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root.json")
	if err := os.WriteFile(root, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	valid := func() Config {
		c := DefaultConfig()
		c.DeviceID = "edge-1"
		c.MQTT.Brokers = []string{"tcp://127.0.0.1:1883"}
		c.S3.Endpoint = "127.0.0.1:9000"
		c.DataDir = t.TempDir()
		c.TrustRoot = root
		return c
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr []string
	}{
		{"valid", func(*Config) {}, nil},
		{"everything wrong at once", func(c *Config) {
			c.DeviceID = "a/b"
			c.MQTT.Brokers = []string{"localhost"}
			c.S3.Endpoint = ""
			c.DataDir = "relative"
			c.TrustRoot = "/nonexistent/root.json"
			c.LogLevel = "loud"
			c.MQTT.CertFile = "/x.pem"
		}, []string{"device_id", "mqtt.brokers", "s3.endpoint", "data_dir", "trust_root", "log_level", "mqtt.cert_file"}},
		{"half credentials", func(c *Config) { c.S3.AccessKey = "k" }, []string{"s3.access_key"}},
		{"wildcard prefix", func(c *Config) { c.MQTT.TopicPrefix = "a/#" }, []string{"mqtt.topic_prefix"}},
		{"bad scheme", func(c *Config) { c.MQTT.Brokers = []string{"http://x:1"} }, []string{"unsupported scheme"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want errors")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDefaultDeviceID(t *testing.T) {
	id, err := DefaultDeviceID()
	if err != nil {
		t.Skipf("hostname unusable here: %v", err)
	}
	if id == "" || strings.ContainsAny(id, "/+# ") {
		t.Fatalf("DefaultDeviceID() = %q", id)
	}
}
