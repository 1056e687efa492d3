package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// certValidity is how long generated certificates are valid. NotBefore is
// backdated by an hour so small clock differences never matter.
const certValidity = 7 * 24 * time.Hour

// PKI is a throwaway certificate authority with a server certificate for the
// loopback interface and one client certificate, all as PEM files in a
// temporary directory and as loaded values. Keys are ECDSA P-256.
type PKI struct {
	// Dir holds the PEM files.
	Dir string
	// CAFile is the CA certificate (PEM).
	CAFile string
	// CA is the CA certificate.
	CA *x509.Certificate
	// Pool contains only CA, for RootCAs or ClientCAs.
	Pool *x509.CertPool
	// Server is valid for localhost, 127.0.0.1 and ::1 (server auth).
	Server KeyPair
	// Client is a client-auth certificate with common name "testenv-client".
	Client KeyPair

	caKey crypto.Signer
}

// KeyPair is a certificate with its private key, as PEM files and loaded.
type KeyPair struct {
	// CertFile is the certificate (PEM).
	CertFile string
	// KeyFile is the PKCS #8 private key (PEM).
	KeyFile string
	// Certificate is the loaded pair, for tls.Config.Certificates.
	Certificate tls.Certificate
}

// NewPKI generates a CA, a loopback server certificate and a client
// certificate into a new temporary directory of tb.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	p, err := newPKI(tb.TempDir())
	if err != nil {
		tb.Fatalf("testenv: generate certificates: %v", err)
	}
	return p
}

func newPKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := certTemplate("testenv CA")
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), CA: ca, Pool: x509.NewCertPool(), caKey: key}
	p.Pool.AddCert(ca)
	if err := writeFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return nil, err
	}
	p.Server, err = p.issue("server", func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.DNSNames = []string{"localhost"}
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}, "testenv server")
	if err != nil {
		return nil, err
	}
	p.Client, err = p.issueClient("testenv-client")
	if err != nil {
		return nil, err
	}
	return p, nil
}

// IssueClientCert returns a new client-auth certificate signed by the CA,
// with the given common name (mosquitto's use_identity_as_username maps it
// to the MQTT user name). Its files are named after commonName in Dir; an
// earlier certificate's files are never overwritten.
func (p *PKI) IssueClientCert(tb testing.TB, commonName string) KeyPair {
	tb.Helper()
	kp, err := p.issueClient(commonName)
	if err != nil {
		tb.Fatalf("testenv: issue client certificate %q: %v", commonName, err)
	}
	return kp
}

// ClientTLSConfig returns a client configuration that trusts only the CA,
// presents the Client certificate and verifies the server as 127.0.0.1.
func (p *PKI) ClientTLSConfig() *tls.Config {
	return &tls.Config{
		RootCAs:      p.Pool,
		Certificates: []tls.Certificate{p.Client.Certificate},
		// Set explicitly: paho dials through tls.Client when a proxy is
		// configured, and that path does not derive the name from the URL.
		ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS12,
	}
}

func (p *PKI) issueClient(commonName string) (KeyPair, error) {
	// Never overwrite the files of an earlier certificate for the same name.
	name := "client-" + sanitizeFileName(commonName)
	for i := 2; ; i++ {
		if _, err := os.Stat(filepath.Join(p.Dir, name+".pem")); err != nil {
			break
		}
		name = fmt.Sprintf("client-%s-%d", sanitizeFileName(commonName), i)
	}
	return p.issue(name, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}, commonName)
}

// issue creates a leaf certificate signed by the CA and writes
// <name>.pem and <name>-key.pem.
func (p *PKI) issue(name string, customize func(*x509.Certificate), commonName string) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	tmpl, err := certTemplate(commonName)
	if err != nil {
		return KeyPair{}, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	customize(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, key.Public(), p.caKey)
	if err != nil {
		return KeyPair{}, fmt.Errorf("create %s certificate: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	kp := KeyPair{
		CertFile: filepath.Join(p.Dir, name+".pem"),
		KeyFile:  filepath.Join(p.Dir, name+"-key.pem"),
	}
	if err := writeFile(kp.CertFile, certPEM); err != nil {
		return KeyPair{}, err
	}
	if err := writeFile(kp.KeyFile, keyPEM); err != nil {
		return KeyPair{}, err
	}
	kp.Certificate, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return KeyPair{}, err
	}
	return kp, nil
}

func certTemplate(commonName string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"modelfleet testenv"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
	}, nil
}

// sanitizeFileName keeps letters, digits, '-', '_' and '.' and replaces
// everything else, so a common name can become part of a file name.
func sanitizeFileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}
