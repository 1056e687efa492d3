package api_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/enroll"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/pki"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// enrollEnv is the API with enrollment over a real SQLite store, a real
// device CA and trust root, and a settable clock.
type enrollEnv struct {
	st     *sqlite.Store
	ca     *pki.CA
	srv    *httptest.Server
	client *api.Client
	root   []byte
	logs   *testenv.Buffer
	now    atomic.Int64 // unix nanoseconds
}

const s3Secret = "s3-read-only-secret-for-tests"

func mustEnrollEnv(t *testing.T) *enrollEnv {
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
	e := &enrollEnv{st: st, logs: &testenv.Buffer{}}
	e.now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, e.now.Load()) }
	e.ca, err = pki.InitCA(filepath.Join(dir, "keys", "ca"), pki.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if e.root, err = os.ReadFile(kr.RootPath); err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(nil, st, api.Options{
		Token:  token,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    clock,
		Enroll: &api.Enrollment{
			Store: st, CA: e.ca, Brokers: []string{"ssl://broker.example:8883"}, BrokerCA: []byte("BROKER CA PEM"),
			TopicPrefix: "acme/v1", RootFile: kr.RootPath, ReservedIDs: []string{"line-gateway"},
			S3: &enroll.S3{Endpoint: "https://s3.example", Region: "eu-1", Bucket: "models", AccessKey: "ro", SecretKey: s3Secret},
		},
	})
	e.srv = httptest.NewServer(srv)
	t.Cleanup(e.srv.Close)
	e.client = &api.Client{BaseURL: e.srv.URL, Token: token}
	return e
}

func (e *enrollEnv) advance(d time.Duration) { e.now.Add(int64(d)) }

// token makes an enrollment token through the API.
func (e *enrollEnv) token(t *testing.T, req api.EnrollTokenRequest) *api.EnrollTokenResponse {
	t.Helper()
	tok, err := e.client.CreateEnrollToken(t.Context(), req)
	if err != nil {
		t.Fatalf("CreateEnrollToken: %v", err)
	}
	return tok
}

// enroll sends an enrollment with a fresh key and returns the answer and
// the key's CSR.
func (e *enrollEnv) enroll(t *testing.T, token, deviceID string) (*enroll.Response, error) {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "whatever")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := enroll.Enroll(t.Context(), e.srv.Client(), e.srv.URL, enroll.Request{Token: token, CSR: string(csr), DeviceID: deviceID})
	if err == nil {
		cert, perr := pki.ParseCertificatePEM([]byte(resp.Certificate))
		if perr != nil {
			t.Fatalf("certificate in the answer: %v", perr)
		}
		if !pki.PublicKeysEqual(cert.PublicKey, key.Public()) {
			t.Fatal("the certificate is not for the key of the CSR")
		}
	}
	return resp, err
}

func TestEnrollTokenCreate(t *testing.T) {
	e := mustEnrollEnv(t)
	ctx := t.Context()

	anon := &api.Client{BaseURL: e.srv.URL}
	_, err := anon.CreateEnrollToken(ctx, api.EnrollTokenRequest{})
	wantStatus(t, err, http.StatusUnauthorized)

	start := time.Unix(0, e.now.Load())
	tok := e.token(t, api.EnrollTokenRequest{Labels: map[string]string{"site": "plant-a"}})
	if err := enroll.CheckTokenFormat(tok.Token); err != nil {
		t.Errorf("token %q: %v", tok.Token, err)
	}
	if got := tok.Expires.Sub(start); got < api.DefaultEnrollTokenTTL-time.Second || got > api.DefaultEnrollTokenTTL {
		t.Errorf("default TTL %v, want %v", got, api.DefaultEnrollTokenTTL)
	}
	stored, err := e.st.GetEnrollToken(ctx, enroll.HashToken(tok.Token))
	if err != nil || stored.ID() != tok.ID || stored.Labels["site"] != "plant-a" {
		t.Errorf("stored token %+v, %v", stored, err)
	}
	if other := e.token(t, api.EnrollTokenRequest{}); other.Token == tok.Token {
		t.Error("two tokens are equal")
	}

	for _, tc := range []struct {
		name string
		req  api.EnrollTokenRequest
	}{
		{"negative TTL", api.EnrollTokenRequest{TTLSeconds: -1}},
		{"TTL too long", api.EnrollTokenRequest{TTLSeconds: int64(api.MaxEnrollTokenTTL/time.Second) + 1}},
		{"bad label", api.EnrollTokenRequest{Labels: map[string]string{"site": "a=b"}}},
		{"bad device ID", api.EnrollTokenRequest{DeviceID: "a/b"}},
		{"the hub's identity", api.EnrollTokenRequest{DeviceID: pki.DefaultHubClientName}},
		{"a reserved identity", api.EnrollTokenRequest{DeviceID: "Line-Gateway"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.CreateEnrollToken(ctx, tc.req)
			wantStatus(t, err, http.StatusBadRequest)
		})
	}
	if strings.Contains(e.logs.String(), tok.Token) {
		t.Errorf("the hub logged a token:\n%s", e.logs.String())
	}
}

func TestEnroll(t *testing.T) {
	e := mustEnrollEnv(t)
	ctx := t.Context()
	var secrets []string

	tok := e.token(t, api.EnrollTokenRequest{Labels: map[string]string{"site": "plant-a", "line": "3"}})
	secrets = append(secrets, tok.Token)
	resp, err := e.enroll(t, tok.Token, "press-01")
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if resp.DeviceID != "press-01" || resp.Labels["site"] != "plant-a" || resp.Labels["line"] != "3" {
		t.Errorf("answer: device %q labels %v", resp.DeviceID, resp.Labels)
	}
	if !bytes.Equal(resp.Root, e.root) {
		t.Error("root.json in the answer differs from the hub's")
	}
	if resp.TopicPrefix != "acme/v1" || len(resp.Brokers) != 1 || resp.BrokerCA != "BROKER CA PEM" ||
		resp.S3 == nil || resp.S3.SecretKey != s3Secret || resp.S3.Bucket != "models" {
		t.Errorf("answer settings: %+v", resp)
	}
	cert, _ := pki.ParseCertificatePEM([]byte(resp.Certificate))
	if cert.Subject.CommonName != "press-01" {
		t.Errorf("certificate CN %q, want the device ID", cert.Subject.CommonName)
	}
	if !cert.NotAfter.Equal(resp.CertificateExpires) {
		t.Errorf("certificate_expires %v, certificate says %v", resp.CertificateExpires, cert.NotAfter)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(resp.DeviceCA)) {
		t.Fatal("device_ca holds no certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not chain to device_ca: %v", err)
	}
	d, err := e.st.GetDevice(ctx, "press-01")
	if err != nil || d.HubLabels["site"] != "plant-a" {
		t.Errorf("registered device %+v, %v", d, err)
	}

	t.Run("ReusedToken", func(t *testing.T) {
		_, err := e.enroll(t, tok.Token, "press-02")
		if !errors.Is(err, enroll.ErrTokenUsed) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("second use: %v, want ErrTokenUsed", err)
		}
		if _, err := e.st.GetDevice(ctx, "press-02"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("refused enrollment registered its device: %v", err)
		}
	})

	t.Run("UnknownToken", func(t *testing.T) {
		fake, _ := enroll.NewToken()
		secrets = append(secrets, fake)
		for _, tk := range []string{fake, "nonsense", ""} {
			if _, err := e.enroll(t, tk, ""); !errors.Is(err, enroll.ErrTokenUnknown) {
				t.Errorf("token %q: %v, want ErrTokenUnknown", tk, err)
			}
		}
	})

	t.Run("ExpiredToken", func(t *testing.T) {
		short := e.token(t, api.EnrollTokenRequest{TTLSeconds: 60})
		secrets = append(secrets, short.Token)
		e.advance(61 * time.Second)
		_, err := e.enroll(t, short.Token, "")
		if !errors.Is(err, enroll.ErrTokenExpired) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired token: %v, want ErrTokenExpired", err)
		}
	})

	t.Run("RefusalsKeepTheToken", func(t *testing.T) {
		named := e.token(t, api.EnrollTokenRequest{DeviceID: "press-09"})
		free := e.token(t, api.EnrollTokenRequest{})
		secrets = append(secrets, named.Token, free.Token)
		var ae *enroll.Error
		// Another ID than the token names.
		if _, err := e.enroll(t, named.Token, "press-10"); !errors.As(err, &ae) || ae.Body.Code != enroll.CodeDeviceID || ae.StatusCode != http.StatusBadRequest {
			t.Errorf("other ID than named: %v", err)
		}
		// An ID that is registered already.
		if _, err := e.enroll(t, free.Token, "press-01"); !errors.As(err, &ae) || ae.Body.Code != enroll.CodeDeviceID || ae.StatusCode != http.StatusConflict {
			t.Errorf("registered ID: %v", err)
		}
		// The hub's own identity: its certificate would have the hub's access.
		for _, id := range []string{pki.DefaultHubClientName, "FleetHub", "line-gateway"} {
			if _, err := e.enroll(t, free.Token, id); !errors.As(err, &ae) || ae.Body.Code != enroll.CodeDeviceID || !strings.Contains(err.Error(), "reserved") {
				t.Errorf("enroll as %s: %v; want a refusal naming it reserved", id, err)
			}
		}
		// A CSR that does not verify.
		body := fmt.Sprintf(`{"token":%q,"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`, free.Token)
		r, err := http.Post(e.srv.URL+enroll.Path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusBadRequest {
			t.Errorf("bad CSR: HTTP %d, want 400", r.StatusCode)
		}
		// Both tokens still work.
		if resp, err := e.enroll(t, named.Token, ""); err != nil || resp.DeviceID != "press-09" {
			t.Errorf("named token after refusals: %v", err)
		}
		resp, err := e.enroll(t, free.Token, "")
		if err != nil || !strings.HasPrefix(resp.DeviceID, "edge-") {
			t.Fatalf("free token after refusals: %+v, %v; want a generated edge-… ID", resp, err)
		}
	})

	t.Run("ConcurrentUse", func(t *testing.T) {
		race := e.token(t, api.EnrollTokenRequest{})
		secrets = append(secrets, race.Token)
		const n = 6
		var (
			wg         sync.WaitGroup
			ok, reused atomic.Int32
		)
		for i := range n {
			wg.Go(func() {
				_, err := e.enroll(t, race.Token, fmt.Sprint("racer-", i))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, enroll.ErrTokenUsed):
					reused.Add(1)
				default:
					t.Errorf("racer %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || reused.Load() != n-1 {
			t.Errorf("%d enrollments succeeded and %d were refused as reused; want 1 and %d", ok.Load(), reused.Load(), n-1)
		}
	})

	t.Run("NoSecretsInLogs", func(t *testing.T) {
		logs := e.logs.String()
		if !strings.Contains(logs, "device enrolled") || !strings.Contains(logs, "enrollment refused") {
			t.Fatalf("expected enrollment log lines, got:\n%s", logs)
		}
		for _, s := range append(secrets, s3Secret, "PRIVATE KEY", "CERTIFICATE REQUEST") {
			if strings.Contains(logs, s) {
				t.Errorf("the hub's log contains %q:\n%s", s, logs)
			}
		}
	})
}

func TestEnrollNotConfigured(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(api.NewServer(nil, st, api.Options{}))
	defer srv.Close()
	_, err = enroll.Enroll(context.Background(), srv.Client(), srv.URL, enroll.Request{Token: "mfe_x"})
	var ae *enroll.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotImplemented {
		t.Errorf("enroll without a CA: %v, want HTTP 501", err)
	}
	_, err = (&api.Client{BaseURL: srv.URL}).CreateEnrollToken(context.Background(), api.EnrollTokenRequest{})
	wantStatus(t, err, http.StatusNotImplemented)
}
