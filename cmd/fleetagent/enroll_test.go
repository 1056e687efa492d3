package main

// These tests run a hub API (hub/api over a real SQLite store and device
// CA) in the test process. Test code may link hub packages; the fleetagent
// binary does not (scripts/check-imports.sh checks the binary's imports).

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/enrollment"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/enroll"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/pki"
)

const testS3Secret = "s3-secret-that-must-not-be-printed"

// enrollHub is an enrollment-enabled hub API behind a TLS test server.
type enrollHub struct {
	st     *sqlite.Store
	srv    *httptest.Server
	caFile string // verifies srv's certificate
	client *api.Client
}

func startEnrollHub(t *testing.T) *enrollHub {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kr, err := keys.Init(t.Context(), filepath.Join(dir, "keys"), keys.DefaultInitOptions())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.InitCA(filepath.Join(dir, "keys", "ca"), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &enrollHub{st: st}
	h.srv = httptest.NewTLSServer(api.NewServer(nil, st, api.Options{
		Token: "operator",
		Enroll: &api.Enrollment{
			Store: st, CA: ca, Brokers: []string{"ssl://127.0.0.1:8883"}, BrokerCA: ca.CertPEM,
			TopicPrefix: "modelfleet/v1", RootFile: kr.RootPath,
			S3: &enroll.S3{Endpoint: "https://s3.example:9000", Region: "us-east-1", Bucket: "models", AccessKey: "agent-ro", SecretKey: testS3Secret},
		},
	}))
	t.Cleanup(h.srv.Close)
	h.caFile = filepath.Join(dir, "hub-ca.pem")
	writeFile(t, h.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw})))
	h.client = &api.Client{BaseURL: h.srv.URL, Token: "operator", HTTP: h.srv.Client()}
	return h
}

func (h *enrollHub) token(t *testing.T, req api.EnrollTokenRequest) string {
	t.Helper()
	tok, err := h.client.CreateEnrollToken(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// unused reports whether the hub still holds the token unused.
func (h *enrollHub) unused(t *testing.T, token string) bool {
	t.Helper()
	tok, err := h.st.GetEnrollToken(t.Context(), enroll.HashToken(token))
	return err == nil && tok.UsedAt.IsZero()
}

// execAgent runs `fleetagent args…` through the root command and returns
// standard output and standard error (which carries the log).
func execAgent(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestEnrollCommand(t *testing.T) {
	h := startEnrollHub(t)
	etc := filepath.Join(t.TempDir(), "etc")
	cfgPath := filepath.Join(etc, "agent.yaml")
	dataDir := t.TempDir()
	var printed []string // everything the command printed
	run := func(args ...string) (string, error) {
		t.Helper()
		out, logs, err := execAgent(t, append([]string{"enroll", "--hub", h.srv.URL, "--config", cfgPath, "--data-dir", dataDir}, args...)...)
		printed = append(printed, out, logs)
		if err != nil {
			printed = append(printed, err.Error())
		}
		return out, err
	}
	tok := h.token(t, api.EnrollTokenRequest{Labels: map[string]string{"site": "plant-a"}})

	t.Run("WrongHubCA", func(t *testing.T) {
		other, err := pki.InitCA(t.TempDir(), pki.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = run("--token", tok, "--hub-ca", filepath.Join(other.Dir, pki.CACertFile))
		if !errors.Is(err, enroll.ErrHubCertificate) || !strings.Contains(err.Error(), "--hub-ca") {
			t.Fatalf("enroll against an untrusted hub: %v; want ErrHubCertificate naming --hub-ca", err)
		}
		if _, err := os.Stat(etc); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed enrollment wrote files: %v", err)
		}
		if !h.unused(t, tok) {
			t.Error("the token was spent on an untrusted hub")
		}
	})

	var res enrollment.Result
	t.Run("Enroll", func(t *testing.T) {
		out, err := run("--token", tok, "--hub-ca", h.caFile, "--device-id", "press-01", "-o", "json")
		if err != nil {
			t.Fatalf("enroll: %v", err)
		}
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&res); err != nil {
			t.Fatalf("enroll -o json: %v\n%s", err, out)
		}
		if res.DeviceID != "press-01" || res.Labels["site"] != "plant-a" || res.ConfigPath != cfgPath || len(res.Warnings) != 0 {
			t.Errorf("result %+v", res)
		}
		for path, want := range map[string]os.FileMode{cfgPath: 0o600, res.KeyFile: 0o600, res.CertFile: 0o644, res.RootFile: 0o644, res.BrokerCAFile: 0o644} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
			}
		}
		key, err := pki.ReadKeyFile(res.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, _ := os.ReadFile(res.CertFile)
		cert, err := pki.ParseCertificatePEM(certPEM)
		if err != nil || !pki.PublicKeysEqual(cert.PublicKey, key.Public()) || cert.Subject.CommonName != "press-01" {
			t.Errorf("certificate does not match the key or the device ID: %v", err)
		}
		if d, err := h.st.GetDevice(t.Context(), "press-01"); err != nil || d.Labels["site"] != "plant-a" {
			t.Errorf("hub registry: %+v, %v", d, err)
		}
		out, _, err = execAgent(t, "config", "validate", "--config", cfgPath)
		if err != nil || !strings.Contains(out, "configuration OK") {
			t.Errorf("config validate on the enrolled configuration: %v\n%s", err, out)
		}
		yml, _ := os.ReadFile(cfgPath)
		for _, want := range []string{"device_id: press-01", "cert_file: " + res.CertFile, "secret_key: " + testS3Secret, "data_dir: " + dataDir} {
			if !strings.Contains(string(yml), want) {
				t.Errorf("configuration lacks %q:\n%s", want, yml)
			}
		}
	})

	t.Run("RefusesToOverwrite", func(t *testing.T) {
		before, _ := os.ReadFile(cfgPath)
		fresh := h.token(t, api.EnrollTokenRequest{})
		_, err := run("--token", fresh, "--hub-ca", h.caFile)
		if !errors.Is(err, enrollment.ErrAlreadyEnrolled) || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("second enrollment without --force: %v", err)
		}
		if !h.unused(t, fresh) {
			t.Error("refusing to overwrite spent the token")
		}
		if after, _ := os.ReadFile(cfgPath); !bytes.Equal(before, after) {
			t.Error("the configuration changed")
		}
	})

	t.Run("ReusedToken", func(t *testing.T) {
		_, err := run("--token", tok, "--hub-ca", h.caFile, "--force")
		if !errors.Is(err, enroll.ErrTokenUsed) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("reused token: %v", err)
		}
	})

	t.Run("ExpiredOrUnknownToken", func(t *testing.T) {
		unknown, _ := enroll.NewToken()
		_, err := run("--token", unknown, "--hub-ca", h.caFile, "--force")
		if !errors.Is(err, enroll.ErrTokenUnknown) {
			t.Fatalf("unknown token: %v", err)
		}
		// Expiry through the store's clock: a token made already expired
		// is refused like one that ran out.
		expired, _ := enroll.NewToken()
		created := time.Now().Add(-2 * time.Hour)
		old := store.EnrollToken{Hash: enroll.HashToken(expired), Created: created, Expires: created.Add(time.Hour)}
		if err := h.st.CreateEnrollToken(t.Context(), old); err != nil {
			t.Fatal(err)
		}
		_, err = run("--token", expired, "--hub-ca", h.caFile, "--force")
		if !errors.Is(err, enroll.ErrTokenExpired) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired token: %v", err)
		}
	})

	t.Run("Force", func(t *testing.T) {
		again := h.token(t, api.EnrollTokenRequest{DeviceID: "press-01"})
		if _, err := run("--token", again, "--hub-ca", h.caFile, "--force"); err != nil {
			t.Fatalf("re-enrollment with --force: %v", err)
		}
	})

	t.Run("NoSecretsPrinted", func(t *testing.T) {
		keyPEM, err := os.ReadFile(res.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(keyPEM)
		keyBody := strings.Split(string(pem.EncodeToMemory(block)), "\n")[1]
		all := strings.Join(printed, "\n")
		for _, secret := range []string{tok, testS3Secret, keyBody, "PRIVATE KEY"} {
			if strings.Contains(all, secret) {
				t.Errorf("fleetagent enroll printed a secret (%.12s…):\n%s", secret, all)
			}
		}
	})
}

func TestEnrollCommandNeedsToken(t *testing.T) {
	t.Setenv("MODELFLEET_ENROLL_TOKEN", "")
	_, _, err := execAgent(t, "enroll", "--hub", "https://hub.example", "--config", filepath.Join(t.TempDir(), "a.yaml"))
	if err == nil || !strings.Contains(err.Error(), "--token") {
		t.Errorf("enroll without a token: %v", err)
	}
	_, _, err = execAgent(t, "enroll", "--hub", "http://hub.example:8400", "--token", mustToken(t), "--config", filepath.Join(t.TempDir(), "a.yaml"))
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("enroll over plain http to a remote hub: %v; want a refusal", err)
	}
}

func mustToken(t *testing.T) string {
	t.Helper()
	tok, err := enroll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
