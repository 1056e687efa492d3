package pki_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/pki"
)

func TestCALifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := pki.LoadCA(dir, nil); !errors.Is(err, pki.ErrNoCA) {
		t.Fatalf("LoadCA of an empty dir: %v, want ErrNoCA", err)
	}
	ca, created, err := pki.LoadOrInitCA(dir, pki.Options{})
	if err != nil || !created {
		t.Fatalf("LoadOrInitCA: created %t, %v", created, err)
	}
	for name, want := range map[string]os.FileMode{pki.CAKeyFile: 0o600, pki.CACertFile: 0o644, pki.HubClientKeyFile: 0o600, pki.HubClientCertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	again, created, err := pki.LoadOrInitCA(dir, pki.Options{})
	if err != nil || created || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("second LoadOrInitCA: created %t, %v; want the same CA loaded", created, err)
	}
	if _, err := pki.InitCA(dir, pki.Options{}); !errors.Is(err, keys.ErrExists) {
		t.Errorf("InitCA over an existing CA: %v, want ErrExists", err)
	}

	// The hub's client certificate: CN fleethub, client auth, chains to the CA.
	raw, err := os.ReadFile(filepath.Join(dir, pki.HubClientCertFile))
	if err != nil {
		t.Fatal(err)
	}
	hubCert, err := pki.ParseCertificatePEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	if hubCert.Subject.CommonName != pki.DefaultHubClientName {
		t.Errorf("hub client CN %q, want %q", hubCert.Subject.CommonName, pki.DefaultHubClientName)
	}
	verifyClient(t, ca, hubCert)
	hubKey, err := pki.ReadKeyFile(filepath.Join(dir, pki.HubClientKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !pki.PublicKeysEqual(hubKey.Public(), hubCert.PublicKey) {
		t.Error("hub client key does not match its certificate")
	}

	// A CA key readable by others is refused.
	if err := os.Chmod(filepath.Join(dir, pki.CAKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCA(dir, nil); !errors.Is(err, keys.ErrInsecureKeyFile) {
		t.Errorf("LoadCA with a 0644 key: %v, want ErrInsecureKeyFile", err)
	}
}

func verifyClient(t *testing.T, ca *pki.CA, cert *x509.Certificate) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate %q does not verify as a client certificate of the CA: %v", cert.Subject.CommonName, err)
	}
}

func TestSignCSR(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := pki.InitCA(t.TempDir(), pki.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "i-want-to-be-admin")
	if err != nil {
		t.Fatal(err)
	}
	issued, err := ca.SignCSR(csr, "edge-0042", 0)
	if err != nil {
		t.Fatal(err)
	}
	c := issued.Cert
	if c.Subject.CommonName != "edge-0042" {
		t.Errorf("CN %q: the CA must set the name, not the CSR", c.Subject.CommonName)
	}
	if !pki.PublicKeysEqual(key.Public(), c.PublicKey) {
		t.Error("certificate is not for the CSR's key")
	}
	if got := c.NotAfter.Sub(now); got != pki.DefaultClientValidity {
		t.Errorf("validity %v, want %v", got, pki.DefaultClientValidity)
	}
	if c.IsCA {
		t.Error("client certificate is a CA")
	}
	// Parse and verify again at the issuing time.
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify: %v", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate also verifies for server auth")
	}
}

func TestParseCSRRefuses(t *testing.T) {
	p256, _ := pki.GenerateKey()
	good, err := pki.NewCSR(p256, "x")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	weak, err := pki.NewCSR(p224, "x")
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ed, err := pki.NewCSR(edKey, "x")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not PEM", []byte("hello")},
		{"certificate instead", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})},
		{"P-224 key", weak},
		{"ed25519 key", ed},
		{"trailing data", append(append([]byte(nil), good...), "junk"...)},
		{"too large", make([]byte, 20<<10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := pki.ParseCSR(tt.in); !errors.Is(err, pki.ErrBadCSR) {
				t.Errorf("ParseCSR: %v, want ErrBadCSR", err)
			}
		})
	}
	if _, err := pki.ParseCSR(good); err != nil {
		t.Errorf("ParseCSR of a good CSR: %v", err)
	}
}

func TestClientValidityCappedByCA(t *testing.T) {
	ca, err := pki.InitCA(t.TempDir(), pki.Options{Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.GenerateKey()
	issued, err := ca.SignClient(key.Public(), "edge-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if issued.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("client certificate outlives its CA: %v > %v", issued.Cert.NotAfter, ca.Cert.NotAfter)
	}
}
