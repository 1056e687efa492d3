package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/agent/enrollment"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/internal/config"
	"github.com/modelfleet/modelfleet/internal/enroll"
	"github.com/modelfleet/modelfleet/internal/pki"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// TestEnrollEndToEnd: `fleethub keys init` makes the device CA and the
// hub's client certificate; a real Mosquitto requires client certificates
// from that CA (use_identity_as_username, per-device ACL); `fleethub serve`
// connects with its own certificate; an operator makes a token; the device
// enrolls (its key made locally), and a real agent started from the
// written configuration connects with its new certificate, shows up online
// with the token's labels, and installs a model a rollout assigns it.
func TestEnrollEndToEnd(t *testing.T) {
	ortLib := runtimetest.LibraryPath(t)
	dir := t.TempDir()
	keyDir := filepath.Join(dir, "keys")
	var initOut struct {
		DeviceCA deviceCAFiles `json:"device_ca"`
	}
	mustJSON(t, mustRun(t, "keys", "init", "--dir", keyDir, "-o", "json"), &initOut)
	ca := initOut.DeviceCA
	if ca.CACert != filepath.Join(keyDir, "ca", pki.CACertFile) || ca.HubClientCert == "" {
		t.Fatalf("keys init -o json: device_ca = %+v", ca)
	}

	// What `fleethub broker config` generates, reduced to its essentials:
	// the hub may use every topic, a device only its own.
	const acl = `user ` + pki.DefaultHubClientName + `
topic readwrite modelfleet/v1/#

pattern read modelfleet/v1/root
pattern readwrite modelfleet/v1/devices/%u/#
`
	broker := testenv.Mosquitto(t, testenv.WithClientCA(ca.CACert), testenv.WithACL(acl),
		testenv.WithConfig("use_identity_as_username true"))
	s3 := testenv.MinIO(t)

	cfgPath := filepath.Join(dir, "hub.yaml")
	writeTestFile(t, cfgPath, fmt.Sprintf(`hub:
  mqtt:
    brokers: [%s]
    ca_file: %s
    cert_file: %s
    key_file: %s
  key_dir: %s
  store_path: %s
  tick_millis: 200
s3:
  endpoint: %s
  region: %s
  access_key: %s
  secret_key: %s
  insecure: true
  bucket: %s
enroll:
  s3_access_key: %s
  s3_secret_key: %s
log_level: debug
`, broker.URL, broker.PKI.CAFile, ca.HubClientCert, ca.HubClientKey, keyDir, filepath.Join(dir, "hub.db"),
		s3.Endpoint, s3.Region, s3.AccessKey, s3.SecretKey, s3.Bucket, s3.AccessKey, s3.SecretKey))
	addr := freeAddr(t)
	hubURL := "http://" + addr
	hubLog := &testenv.Buffer{}
	runServe(t, hubURL, hubLog, "--config", cfgPath, "--api-addr", addr)
	cli := func(args ...string) []string { return append(args, "--hub", hubURL) }

	var tok api.EnrollTokenResponse
	mustJSON(t, mustRun(t, cli("devices", "enroll-token", "--labels", "site=plant-a,line=3", "--ttl", "10m", "-o", "json")...), &tok)
	if err := enroll.CheckTokenFormat(tok.Token); err != nil {
		t.Fatalf("enroll-token: %v", err)
	}
	text := mustRun(t, cli("devices", "enroll-token", "--device-id", "press-02")...)
	if !strings.Contains(text, "fleetagent enroll --hub "+hubURL+" --token mfe_") || !strings.Contains(text, "press-02") {
		t.Errorf("enroll-token text output:\n%s", text)
	}

	agentDir := filepath.Join(dir, "device")
	agentLog := &testenv.Buffer{}
	res, err := enrollment.Enroll(t.Context(), enrollment.Options{
		HubURL: hubURL, Token: tok.Token, DeviceID: "press-01",
		ConfigPath: filepath.Join(agentDir, "etc", "agent.yaml"), DataDir: filepath.Join(agentDir, "data"),
		Logger: newLogger(agentLog, "debug"),
	})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if res.Brokers[0] != broker.URL || res.BrokerCAFile == "" || res.S3Endpoint != s3.Endpoint {
		t.Errorf("enrollment result %+v", res)
	}

	cfg := agent.DefaultConfig()
	if err := config.Load(&cfg, res.ConfigPath, false, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the enrolled configuration does not validate: %v", err)
	}
	cfg.ORTLib = ortLib
	cfg.Serving.HTTPAddr = ""
	cfg.TelemetryIntervalSeconds = 1
	agentCtx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.New(cfg, newLogger(agentLog, "debug")).Run(agentCtx) }()
	t.Cleanup(func() {
		stopAgent()
		<-agentDone
		if t.Failed() {
			t.Logf("agent log:\n%s", agentLog.String())
		}
	})

	waitDevice := func(what string, ok func(d *api.DeviceDetail) bool) {
		t.Helper()
		c := &api.Client{BaseURL: hubURL}
		deadline := time.Now().Add(90 * time.Second)
		for {
			d, err := c.Device(t.Context(), "press-01")
			if err == nil && ok(d) {
				return
			}
			select {
			case err := <-agentDone:
				t.Fatalf("agent stopped while waiting for %s: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("device press-01 never %s: %+v, %v", what, d, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitDevice("came online over mTLS", func(d *api.DeviceDetail) bool {
		return d.Device.Online && d.Device.Labels["site"] == "plant-a" && d.Device.Labels["line"] == "3"
	})

	mustRun(t, cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.0")...)
	mustRun(t, cli("rollout", "start", "--model", "vibration-anomaly", "--version", "1.0.0", "--selector", "site=plant-a",
		"--waves", "100", "--soak", "0s")...)
	waitDevice("ran the assigned model", func(d *api.DeviceDetail) bool {
		m, ok := d.Device.Models["vibration-anomaly"]
		return ok && m.Version == "1.0.0" && m.Phase == "active"
	})

	// The broker saw the certificates' common names as user names: the
	// device's ID for the agent, fleethub for the hub.
	brokerLog, err := os.ReadFile(broker.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"u'press-01'", "u'" + pki.DefaultHubClientName + "'"} {
		if !strings.Contains(string(brokerLog), user) {
			t.Errorf("mosquitto log shows no client with user name %s:\n%s", user, brokerLog)
		}
	}

	// Nothing secret in the hub's or the agent's log, or in the enrollment
	// result.
	keyPEM, err := os.ReadFile(res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	keyLine := strings.Split(string(keyPEM), "\n")[1]
	logs := hubLog.String() + agentLog.String() + fmt.Sprintf("%+v", *res)
	if !strings.Contains(hubLog.String(), "device enrolled") {
		t.Errorf("hub log has no enrollment line:\n%s", hubLog.String())
	}
	for _, secret := range []string{tok.Token, s3.SecretKey, keyLine, "PRIVATE KEY"} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (%.10s…) appears in the logs", secret)
		}
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServeAPITLS: with api.tls_cert_file the API answers over HTTPS only.
func TestServeAPITLS(t *testing.T) {
	p := testenv.NewPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }),
		ErrorLog: log.New(io.Discard, "", 0), // the refused handshake below
	}
	done := make(chan error, 1)
	go func() {
		done <- serveAPI(srv, ln, serverAPIConfig{TLSCertFile: p.Server.CertFile, TLSKeyFile: p.Server.KeyFile})
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	url := "https://" + ln.Addr().String() + "/"
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Pool}}}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("HTTPS request: %v", err)
	}
	resp.Body.Close()
	if _, err := http.Get(url); err == nil {
		t.Error("a client not trusting the certificate got an answer")
	}
	if err := serveAPI(&http.Server{}, nil, serverAPIConfig{TLSCertFile: "x"}); err == nil || !strings.Contains(err.Error(), "both") {
		t.Errorf("certificate without key: %v", err)
	}
}
