package enrollment_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/modelfleet/modelfleet/agent/enrollment"
	"github.com/modelfleet/modelfleet/internal/enroll"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/pki"
)

// hub answers enrollments the way fleethub does (a real CA signs the CSR,
// a real root.json), then lets the test tamper with the answer: what a
// misconfigured or malicious hub would send.
func hub(t *testing.T, tamper func(*enroll.Response)) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	kr, err := keys.Init(t.Context(), filepath.Join(dir, "keys"), keys.DefaultInitOptions())
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(kr.RootPath)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.InitCA(filepath.Join(dir, "ca"), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req enroll.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.URL.Path != enroll.Path {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		issued, err := ca.SignCSR([]byte(req.CSR), "edge-1", 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp := &enroll.Response{
			DeviceID: "edge-1", Labels: map[string]string{"site": "a"}, Certificate: string(issued.PEM),
			CertificateExpires: issued.Cert.NotAfter, DeviceCA: string(ca.CertPEM), BrokerCA: string(ca.CertPEM),
			Brokers: []string{"ssl://127.0.0.1:8883"}, TopicPrefix: "modelfleet/v1", Root: root,
			S3: &enroll.S3{Endpoint: "http://127.0.0.1:9000", Insecure: true, AccessKey: "ro", SecretKey: "secret"},
		}
		if tamper != nil {
			tamper(resp)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func options(t *testing.T, hubURL string) enrollment.Options {
	t.Helper()
	tok, err := enroll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return enrollment.Options{HubURL: hubURL, Token: tok, ConfigPath: filepath.Join(dir, "etc", "agent.yaml"), DataDir: filepath.Join(dir, "data")}
}

func TestEnrollInstalls(t *testing.T) {
	srv := hub(t, nil)
	opts := options(t, srv.URL)
	res, err := enrollment.Enroll(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.DeviceID != "edge-1" || res.ConfigPath != opts.ConfigPath || filepath.Dir(res.KeyFile) != filepath.Dir(opts.ConfigPath) {
		t.Errorf("result %+v", res)
	}
	entries, _ := os.ReadDir(filepath.Dir(opts.ConfigPath))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := "agent.yaml broker-ca.pem device-key.pem device.pem root.json"; strings.Join(names, " ") != want {
		t.Errorf("files %v, want %s (no temporary files left)", names, want)
	}
}

func TestEnrollRefusesBadAnswers(t *testing.T) {
	otherCA, err := pki.InitCA(t.TempDir(), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := pki.GenerateKey()
	foreign, err := otherCA.SignClient(otherKey.Public(), "edge-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tamper  func(*enroll.Response)
		wantErr string
	}{
		{"certificate for another key", func(r *enroll.Response) { r.Certificate = string(foreign.PEM); r.DeviceCA = string(otherCA.CertPEM) }, "not for this device's key"},
		{"certificate for another device", func(r *enroll.Response) { r.DeviceID = "edge-2" }, "common name"},
		{"certificate not from the device CA", func(r *enroll.Response) { r.DeviceCA = string(otherCA.CertPEM) }, "not signed by the device CA"},
		{"no certificate", func(r *enroll.Response) { r.Certificate = "" }, "certificate"},
		{"bad root", func(r *enroll.Response) { r.Root = []byte(`{"signed":{}}`) }, "root.json"},
		{"tampered root", func(r *enroll.Response) {
			r.Root = []byte(strings.Replace(string(r.Root), `"version":1`, `"version":2`, 1))
		}, "root.json"},
		{"no broker", func(r *enroll.Response) { r.Brokers = nil }, "no broker"},
		{"invalid device ID", func(r *enroll.Response) { r.DeviceID = "a/b" }, "device ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := options(t, hub(t, tt.tamper).URL)
			_, err := enrollment.Enroll(t.Context(), opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Enroll: %v, want an error containing %q", err, tt.wantErr)
			}
			if _, err := os.Stat(filepath.Dir(opts.ConfigPath)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused answer left files behind: %v", err)
			}
		})
	}
}

func TestEnrollWithoutS3Warns(t *testing.T) {
	opts := options(t, hub(t, func(r *enroll.Response) { r.S3 = nil }).URL)
	res, err := enrollment.Enroll(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "s3.endpoint") {
		t.Errorf("warnings %v, want one naming s3.endpoint", res.Warnings)
	}
}

// TestEnrollOverPackageTemplate enrolls the way the packages set a device
// up: /etc/modelfleet is root:modelfleet 0750 and holds the package's
// template agent.yaml. Enrollment replaces the template without --force
// (keeping it as .pre-enroll) and leaves the key and the configuration
// readable by the group, so the agent's service user can start.
func TestEnrollOverPackageTemplate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the configuration directory another group")
	}
	const serviceGID = 1 // any group but root's
	srv := hub(t, nil)
	opts := options(t, srv.URL)
	etc := filepath.Dir(opts.ConfigPath)
	if err := os.MkdirAll(etc, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(etc, 0, serviceGID); err != nil {
		t.Fatal(err)
	}
	template := []byte("# the package's template\nserving:\n  idle_ttl_seconds: 600\n")
	if err := os.WriteFile(opts.ConfigPath, template, 0o640); err != nil {
		t.Fatal(err)
	}
	res, err := enrollment.Enroll(t.Context(), opts)
	if err != nil {
		t.Fatalf("enrolling over the package's template: %v", err)
	}
	if kept, err := os.ReadFile(res.PreviousConfig); err != nil || string(kept) != string(template) {
		t.Errorf("previous configuration %q: %q, %v", res.PreviousConfig, kept, err)
	}
	if len(res.Warnings) == 0 || !strings.Contains(strings.Join(res.Warnings, "\n"), ".pre-enroll") {
		t.Errorf("warnings %q do not mention the kept configuration", res.Warnings)
	}
	for _, p := range []string{opts.ConfigPath, res.KeyFile, res.PreviousConfig} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		gid := fi.Sys().(*syscall.Stat_t).Gid
		if fi.Mode().Perm() != 0o640 || gid != serviceGID {
			t.Errorf("%s: mode %v group %d, want 0640 group %d", p, fi.Mode().Perm(), gid, serviceGID)
		}
	}
	// The certificate now marks an enrollment: a second one needs --force.
	again := opts
	if again.Token, err = enroll.NewToken(); err != nil {
		t.Fatal(err)
	}
	if _, err := enrollment.Enroll(t.Context(), again); !errors.Is(err, enrollment.ErrAlreadyEnrolled) {
		t.Errorf("second enrollment without --force: %v", err)
	}
}
