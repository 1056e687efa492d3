package brokerconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/internal/config"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"password auth", func(c *Config) { c.Auth = AuthPassword; c.Devices = []Device{{ID: "d1"}} }, ""},
		{"password auth without devices", func(c *Config) { c.Auth = AuthPassword }, "each gets a password"},
		{"unknown auth", func(c *Config) { c.Auth = "psk" }, `auth: "psk"`},
		{"wildcard prefix", func(c *Config) { c.Prefix = "a/#" }, "prefix"},
		{"device named like the hub", func(c *Config) { c.Devices = []Device{{ID: "fleethub"}} }, "hub identity"},
		{"device with a slash", func(c *Config) { c.Devices = []Device{{ID: "a/b"}} }, "devices[0].id"},
		{"duplicate device", func(c *Config) { c.Devices = []Device{{ID: "a"}, {ID: "a"}} }, "used twice"},
		{"binding without devices", func(c *Config) { c.Bindings = []Binding{{Subscribe: []string{"f/x"}}} }, "choose devices"},
		{"binding into the prefix", func(c *Config) {
			c.Bindings = []Binding{{AllDevices: true, Publish: []string{"modelfleet/v1/devices/x/state"}}}
		}, "under the modelfleet prefix"},
		{"binding filter reaching the prefix", func(c *Config) {
			c.Bindings = []Binding{{AllDevices: true, Subscribe: []string{"+/v1/#"}}}
		}, "under the modelfleet prefix"},
		{"binding to everything", func(c *Config) { c.Bindings = []Binding{{AllDevices: true, Subscribe: []string{"#"}}} }, "under the modelfleet prefix"},
		{"bad wildcard", func(c *Config) { c.Bindings = []Binding{{AllDevices: true, Subscribe: []string{"f/a#"}}} }, "whole level"},
		{"factory binding", func(c *Config) {
			c.Bindings = []Binding{{Labels: map[string]string{"line": "1"}, Subscribe: []string{"factory/{device}/in"}, Publish: []string{"factory/{device}/out"}}}
		}, ""},
		{"no CA with certificates", func(c *Config) { c.Listener.CAFile = "" }, "listener.ca_file"},
		{"bad port", func(c *Config) { c.Listener.Port = 0 }, "listener.port"},
		{"newline in a path", func(c *Config) { c.ACLFile = "/x\nlistener 1883" }, "one line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want ErrInvalid mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestACLRules(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.Prefix = "plant7/v1"
	c.Devices = []Device{{ID: "p1", Labels: map[string]string{"line": "1"}}, {ID: "p2", Labels: map[string]string{"line": "2"}}}
	c.Bindings = []Binding{
		{Name: "line 1", Labels: map[string]string{"line": "1"}, Subscribe: []string{"factory/line1/+"}, Publish: []string{"factory/line1/out/{device}"}},
		{Name: "heartbeat", AllDevices: true, Publish: []string{"factory/heartbeat/{device}"}},
	}
	acl := string(ACL(c))
	for _, want := range []string{
		"pattern read plant7/v1/root\n",
		"pattern read plant7/v1/devices/%u/assignment\n",
		"pattern read plant7/v1/devices/%u/infer/#\n",
		"pattern write plant7/v1/devices/%u/state\n",
		"pattern write plant7/v1/devices/%u/online\n",
		"pattern write plant7/v1/devices/%u/telemetry\n",
		"pattern write plant7/v1/devices/%u/events\n",
		"pattern write factory/heartbeat/%u\n",
		"user fleethub\ntopic readwrite plant7/v1/#\n",
		"user p1\n# binding line 1:\ntopic read factory/line1/+\ntopic write factory/line1/out/p1\n",
	} {
		if !strings.Contains(acl, want) {
			t.Errorf("ACL lacks %q:\n%s", want, acl)
		}
	}
	for _, bad := range []string{"user p2", "pattern write plant7/v1/devices/%u/assignment", "pattern readwrite"} {
		if strings.Contains(acl, bad) {
			t.Errorf("ACL contains %q:\n%s", bad, acl)
		}
	}
	// "topic" lines before the first "user" line would apply to anonymous
	// clients only.
	before, _, _ := strings.Cut(acl, "\nuser ")
	if strings.Contains(before, "\ntopic ") {
		t.Errorf("topic rule before the first user line:\n%s", before)
	}
}

func TestMosquittoConf(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	conf := string(MosquittoConf(c))
	for _, want := range []string{
		"per_listener_settings false\n", "allow_anonymous false\n", "persistence true\n",
		"max_queued_messages 100000\n", "persistence_location /var/lib/mosquitto/\n",
		"acl_file /etc/mosquitto/conf.d/modelfleet.acl\n",
		"listener 8883\ncafile /etc/mosquitto/certs/ca.pem\n",
		"require_certificate true\nuse_identity_as_username true\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("mosquitto.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "password_file") || strings.Contains(conf, "1883") {
		t.Errorf("certificate mode with a password file or plain port:\n%s", conf)
	}
	// Listener options must follow the listener line.
	if strings.Index(conf, "listener 8883") > strings.Index(conf, "require_certificate") {
		t.Error("require_certificate comes before the listener line")
	}
}

func TestRenderPasswords(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.Auth = AuthPassword
	c.Devices = []Device{{ID: "d1"}, {ID: "d2"}}
	c.Clients = []Client{{Name: "mes", Publish: []string{"modelfleet/v1/devices/+/infer/#"}}}
	f, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Identities, ","); got != "fleethub,d1,d2,mes" {
		t.Errorf("identities = %s", got)
	}
	seen := map[string]bool{}
	for _, id := range f.Identities {
		pw := f.Passwords[id]
		if len(pw) < 32 || seen[pw] {
			t.Errorf("password of %s: %q is short or repeated", id, pw)
		}
		seen[pw] = true
		if strings.Contains(string(f.PasswordFile), pw) {
			t.Errorf("password file holds the plain password of %s", id)
		}
		if !strings.Contains(string(f.PasswordFile), id+":$7$101$") {
			t.Errorf("password file lacks %s", id)
		}
	}
	if !strings.Contains(string(f.MosquittoConf), "password_file ") || strings.Contains(string(f.MosquittoConf), "use_identity_as_username") {
		t.Errorf("password mode conf:\n%s", f.MosquittoConf)
	}
}

func TestAgentS3Policy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, bucket, prefix, wantResource, wantErr string
	}{
		{"whole bucket", "models", "", "arn:aws:s3:::models/*", ""},
		{"prefix", "models", "/fleet/", "arn:aws:s3:::models/fleet/*", ""},
		{"upper case", "Models", "", "", "only lower-case"},
		{"wildcard prefix", "models", "a*", "", "must not contain"},
		{"short bucket", "m", "", "", "3 to 63"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := AgentS3Policy(tt.bucket, tt.prefix)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var back S3Policy
			if err := json.Unmarshal(p.JSON(), &back); err != nil {
				t.Fatal(err)
			}
			st := back.Statement
			if len(st) != 1 || st[0].Effect != "Allow" || strings.Join(st[0].Action, ",") != "s3:GetObject" || strings.Join(st[0].Resource, ",") != tt.wantResource {
				t.Errorf("policy = %s", p.JSON())
			}
		})
	}
}

// TestExampleUpToDate checks that examples/mosquitto holds what the
// generator makes of examples/mosquitto/broker.yaml. After changing the
// generator, regenerate them with
//
//	fleethub broker config --kind mosquitto --config examples/mosquitto/broker.yaml --out examples/mosquitto --force
func TestExampleUpToDate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "examples", "mosquitto")
	c := DefaultConfig()
	if err := config.Load(&c, filepath.Join(dir, "broker.yaml"), false, nil, nil); err != nil {
		t.Fatal(err)
	}
	files, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"mosquitto.conf": files.MosquittoConf, "modelfleet.acl": files.ACL} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("examples/mosquitto/%s is stale; regenerate it (see the test's comment). Want:\n%s", name, want)
		}
	}
}
