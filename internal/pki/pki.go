// Package pki is the X.509 side of modelfleet: the hub's device certificate
// authority, which signs the MQTT client certificates of enrolled agents and
// of the hub itself, and the small helpers an agent uses to make its own key
// and certificate signing request (CSR) during enrollment.
//
// Parties and keys: the device CA (ca.pem, ca-key.pem) lives with the hub,
// in a directory of its own (by default the "ca" subdirectory of the hub's
// key directory). The MQTT broker trusts it for client certificates
// (mosquitto: cafile, require_certificate true, use_identity_as_username
// true), so a certificate's common name is the MQTT user name the broker's
// ACL sees: the device ID for an agent, "fleethub" (DefaultHubClientName)
// for the hub. An agent generates its private key on the device and sends
// only a CSR; the key never leaves the device. The CA signs it for one year
// by default (DefaultClientValidity); a device re-enrolls with a new token
// to get a new certificate.
//
// All keys are ECDSA P-256: Mosquitto 2.0 with OpenSSL 1.1 or 3 accepts them
// for TLS 1.2 and 1.3 client authentication, which is not true of ed25519
// certificates everywhere. Private key files are PEM "PRIVATE KEY" (PKCS #8),
// created with mode 0600 and never overwritten (internal/keys); loading
// refuses a CA key readable by group or others.
//
// The package uses the standard library and internal/keys only, so the
// agent links it without any hub code.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/modelfleet/modelfleet/internal/keys"
)

// File names in a CA directory.
const (
	// CACertFile is the CA certificate (PEM), mode 0644: give it to the broker.
	CACertFile = "ca.pem"
	// CAKeyFile is the CA private key, mode 0600: it stays with the hub.
	CAKeyFile = "ca-key.pem"
	// HubClientCertFile and HubClientKeyFile are the hub's own MQTT client
	// certificate and key (common name DefaultHubClientName unless chosen
	// otherwise), for hub.mqtt.cert_file and hub.mqtt.key_file.
	HubClientCertFile = "hub-client.pem"
	HubClientKeyFile  = "hub-client-key.pem"
)

// Defaults.
const (
	// DefaultCAValidity is how long a new device CA is valid: 10 years.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultClientValidity is how long device and hub client certificates
	// are valid: 1 year.
	DefaultClientValidity = 365 * 24 * time.Hour
	// DefaultHubClientName is the common name (and so the MQTT user name) of
	// the hub's client certificate.
	DefaultHubClientName = "fleethub"
	// backdate is subtracted from NotBefore so a device whose clock is a
	// little behind accepts its new certificate at once.
	backdate = time.Hour
)

// Errors callers branch on with errors.Is.
var (
	// ErrNoCA: the CA directory holds no CA (see InitCA).
	ErrNoCA = errors.New("no device CA")
	// ErrBadCSR: a certificate signing request is malformed, its signature
	// does not verify, or its key type is not accepted.
	ErrBadCSR = errors.New("bad certificate signing request")
)

// CA is a loaded device certificate authority. It is safe for concurrent
// use.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// CertPEM is the CA certificate as PEM, as in CACertFile.
	CertPEM []byte
	// Dir is the directory it was loaded from.
	Dir string

	key crypto.Signer
	now func() time.Time
}

// Options configures InitCA and the certificates a CA issues.
type Options struct {
	// CommonName names the CA; empty means "modelfleet device CA".
	CommonName string
	// Validity is the CA's validity; 0 means DefaultCAValidity.
	Validity time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// InitCA creates a new CA in dir (made with mode 0700 if missing): a P-256
// key in CAKeyFile (0600) and a self-signed certificate in CACertFile. It
// refuses, with an error wrapping keys.ErrExists, to replace either file.
func InitCA(dir string, opts Options) (*CA, error) {
	now := clock(opts.Now)
	if opts.CommonName == "" {
		opts.CommonName = "modelfleet device CA"
	}
	if opts.Validity <= 0 {
		opts.Validity = DefaultCAValidity
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create device CA: %w", err)
	}
	for _, name := range []string{CACertFile, CAKeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return nil, fmt.Errorf("create device CA: %s already holds %s: %w", dir, name, keys.ErrExists)
		}
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("create device CA: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("create device CA: %w", err)
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName, Organization: []string{"modelfleet"}},
		NotBefore:             t.Add(-backdate),
		NotAfter:              t.Add(opts.Validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create device CA certificate: %w", err)
	}
	keyPEM, err := MarshalKey(key)
	if err != nil {
		return nil, fmt.Errorf("create device CA: %w", err)
	}
	// The key first: a certificate without its key would make LoadCA fail
	// with a clear message, the reverse would leave an unusable key.
	if err := keys.CreateFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("create device CA: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := keys.CreateFileAtomic(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("create device CA: %w", err)
	}
	return LoadCA(dir, opts.Now)
}

// LoadCA loads the CA in dir. It returns an error wrapping ErrNoCA when
// dir has no CACertFile, and keys.ErrInsecureKeyFile when the key file is
// readable by group or others. now is the clock of issued certificates;
// nil means time.Now.
func LoadCA(dir string, now func() time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load device CA: %s does not exist (create it with `fleethub keys init`): %w", certPath, ErrNoCA)
	}
	if err != nil {
		return nil, fmt.Errorf("load device CA: %w", err)
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load device CA %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load device CA %s: the certificate is not a CA certificate", certPath)
	}
	key, err := ReadKeyFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load device CA: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("load device CA: %s does not belong to %s", keyPath, certPath)
	}
	return &CA{Cert: cert, CertPEM: certPEM, Dir: dir, key: key, now: clock(now)}, nil
}

// LoadOrInitCA loads the CA in dir, creating it (and the hub's client
// certificate, see IssueHubClient) when dir holds none. created reports
// whether it did.
func LoadOrInitCA(dir string, opts Options) (ca *CA, created bool, err error) {
	ca, err = LoadCA(dir, opts.Now)
	if !errors.Is(err, ErrNoCA) {
		return ca, false, err
	}
	if ca, err = InitCA(dir, opts); err != nil {
		return nil, false, err
	}
	if _, err := ca.IssueHubClient(DefaultHubClientName, 0); err != nil {
		return nil, true, err
	}
	return ca, true, nil
}

// Issued is a certificate a CA signed.
type Issued struct {
	// Cert is the certificate.
	Cert *x509.Certificate
	// PEM is Cert as PEM.
	PEM []byte
}

// SignClient signs a TLS client certificate for pub with the given common
// name (a device ID, or the hub's name), valid for validity (0:
// DefaultClientValidity, never beyond the CA's own expiry). Whatever subject
// a CSR asked for is ignored: the CA decides the name.
func (ca *CA) SignClient(pub crypto.PublicKey, commonName string, validity time.Duration) (*Issued, error) {
	if commonName == "" {
		return nil, errors.New("sign client certificate: empty common name")
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("sign client certificate for %s: %w", commonName, err)
	}
	if validity <= 0 {
		validity = DefaultClientValidity
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	t := ca.now()
	notAfter := t.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"modelfleet"}},
		NotBefore:    t.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign client certificate for %s: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// SignCSR checks a PEM certificate signing request (ParseCSR) and signs a
// client certificate for its key with the given common name (SignClient).
func (ca *CA) SignCSR(csrPEM []byte, commonName string, validity time.Duration) (*Issued, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	return ca.SignClient(csr.PublicKey, commonName, validity)
}

// IssueHubClient creates the hub's own MQTT client certificate in the CA
// directory: a new key in HubClientKeyFile (0600) and a certificate with the
// given common name (empty: DefaultHubClientName) in HubClientCertFile. It
// refuses (keys.ErrExists) to replace existing files. It returns the two
// paths, certificate first.
func (ca *CA) IssueHubClient(commonName string, validity time.Duration) ([2]string, error) {
	if commonName == "" {
		commonName = DefaultHubClientName
	}
	paths := [2]string{filepath.Join(ca.Dir, HubClientCertFile), filepath.Join(ca.Dir, HubClientKeyFile)}
	key, err := GenerateKey()
	if err != nil {
		return paths, err
	}
	issued, err := ca.SignClient(key.Public(), commonName, validity)
	if err != nil {
		return paths, err
	}
	keyPEM, err := MarshalKey(key)
	if err != nil {
		return paths, err
	}
	if err := keys.CreateFileAtomic(paths[1], keyPEM, 0o600); err != nil {
		return paths, fmt.Errorf("hub client certificate: %w", err)
	}
	if err := keys.CreateFileAtomic(paths[0], issued.PEM, 0o644); err != nil {
		return paths, fmt.Errorf("hub client certificate: %w", err)
	}
	return paths, nil
}

// GenerateKey returns a new ECDSA P-256 private key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// MarshalKey encodes a private key as a PEM "PRIVATE KEY" block (PKCS #8).
func MarshalKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: keys.PEMType, Bytes: der}), nil
}

// ReadKeyFile reads a PEM PKCS #8 private key written by MarshalKey. It
// refuses a file readable by group or others (keys.ErrInsecureKeyFile).
func ReadKeyFile(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s (mode %v): %w; run chmod 600 %s", path, fi.Mode().Perm(), keys.ErrInsecureKeyFile, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != keys.PEMType {
		return nil, fmt.Errorf("%s: no PEM %q block", path, keys.PEMType)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported key type %T", path, k)
	}
	return s, nil
}

// NewCSR returns a PEM certificate signing request for key. The common name
// is only a hint: the CA sets the name it decides on.
func NewCSR(key crypto.Signer, commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate signing request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// maxCSRBytes bounds a PEM CSR; real ones are well under 2 KiB.
const maxCSRBytes = 16 << 10

// ParseCSR decodes a PEM certificate signing request and checks its
// signature (proof that the sender holds the private key) and key type
// (ECDSA P-256 or P-384, RSA of at least 2048 bits). Errors wrap ErrBadCSR.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	if len(csrPEM) > maxCSRBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadCSR, maxCSRBytes)
	}
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrBadCSR)
	}
	if len(pemTrim(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the PEM block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", ErrBadCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	return csr, nil
}

// ParseCertificatePEM decodes the first PEM CERTIFICATE block of raw.
func ParseCertificatePEM(raw []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, raw = pem.Decode(raw)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// PublicKeysEqual reports whether two public keys are the same key.
func PublicKeysEqual(a, b crypto.PublicKey) bool { return publicKeysEqual(a, b) }

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

// checkPublicKey accepts the key types Mosquitto/OpenSSL verify everywhere.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s not accepted (want P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits not accepted (want at least 2048)", k.N.BitLen())
		}
	default:
		return fmt.Errorf("key type %T not accepted (want ECDSA P-256)", pub)
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
