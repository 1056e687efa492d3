// Package enroll is the wire protocol of device enrollment, shared by the
// hub's API (hub/api) and the agent (fleetagent enroll), which must not link
// hub code.
//
// The exchange: an operator makes a one-time token on the hub (`fleethub
// devices enroll-token`) and hands it to the installer of a device. On the
// device, `fleetagent enroll` generates an ECDSA P-256 key that never leaves
// the device and POSTs a Request with the token and a certificate signing
// request to Path on the hub's API. The token is the only credential of that
// request. The hub checks the token (known, unused, unexpired; it is marked
// used atomically, so a second use fails), decides the device ID, signs a
// client certificate with common name = device ID, registers the device with
// the token's labels, and answers with a Response: the certificate, the CA
// bundle to verify the broker with, broker URLs and topic prefix, the S3
// settings (read-only credentials, when the hub has them) and the trust root.
//
// Tokens are "mfe_" followed by 43 base64url characters (32 random bytes).
// The hub stores only HashToken of a token.
package enroll

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"time"
)

// Path is the enrollment endpoint on the hub's API.
const Path = "/api/v1/enroll"

// TokenPrefix starts every enrollment token, so one pasted into the wrong
// place is recognizable (and secret scanners can find leaked ones).
const TokenPrefix = "mfe_"

// tokenBytes is the entropy of a token.
const tokenBytes = 32

// NewToken returns a new random enrollment token.
func NewToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// HashToken returns the SHA-256 of a token, which is what the hub stores
// and looks tokens up by. Surrounding white space (from copy and paste) is
// ignored. Tokens are 256-bit random values, so a fast hash is enough: there
// is nothing to brute-force.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return h[:]
}

// CheckTokenFormat reports whether token looks like a token NewToken made,
// so a typo is reported without asking the hub.
func CheckTokenFormat(token string) error {
	rest, ok := strings.CutPrefix(strings.TrimSpace(token), TokenPrefix)
	if !ok {
		return errors.New("enrollment token: does not start with " + TokenPrefix + " (copy the whole token `fleethub devices enroll-token` printed)")
	}
	if b, err := base64.RawURLEncoding.DecodeString(rest); err != nil || len(b) != tokenBytes {
		return errors.New("enrollment token: malformed or truncated (copy the whole token `fleethub devices enroll-token` printed)")
	}
	return nil
}

// Request is the body of POST Path.
type Request struct {
	// Token is the one-time enrollment token.
	Token string `json:"token"`
	// CSR is a PEM certificate signing request for the device's key.
	CSR string `json:"csr"`
	// DeviceID is the ID the device asks for; empty lets the hub decide.
	// A token that names a device overrides it (asking for another ID is
	// refused).
	DeviceID string `json:"device_id,omitempty"`
}

// Response is the answer to a successful enrollment.
type Response struct {
	// DeviceID is the device's ID: its certificate's common name, its MQTT
	// user name and the ID in its topics.
	DeviceID string `json:"device_id"`
	// Labels are the labels the hub recorded for the device.
	Labels map[string]string `json:"labels,omitempty"`
	// Certificate is the device's client certificate (PEM).
	Certificate string `json:"certificate"`
	// CertificateExpires is when Certificate expires; the device must
	// enroll again (new token) before then.
	CertificateExpires time.Time `json:"certificate_expires"`
	// DeviceCA is the CA that signed Certificate (PEM).
	DeviceCA string `json:"device_ca"`
	// BrokerCA is the PEM bundle to verify the broker's server certificate
	// with; empty means the system roots.
	BrokerCA string `json:"broker_ca,omitempty"`
	// Brokers are the broker URLs to connect to.
	Brokers []string `json:"brokers"`
	// TopicPrefix is the MQTT topic prefix.
	TopicPrefix string `json:"topic_prefix"`
	// S3 is where model artifacts are downloaded from; nil when the hub has
	// no S3 settings for agents.
	S3 *S3 `json:"s3,omitempty"`
	// Root is the trust root (root.json), byte for byte.
	Root []byte `json:"root"`
}

// S3 is the object store settings handed to an enrolled agent.
type S3 struct {
	Endpoint string `json:"endpoint"`
	Region   string `json:"region,omitempty"`
	Bucket   string `json:"bucket,omitempty"`
	// AccessKey and SecretKey should be read-only credentials; empty means
	// the agent uses its environment's credential chain.
	AccessKey string `json:"access_key,omitempty"`
	SecretKey string `json:"secret_key,omitempty"`
	// Insecure is plain HTTP (dev only).
	Insecure bool `json:"insecure,omitempty"`
	// CA is a PEM bundle to verify the S3 endpoint with; empty: system roots.
	CA string `json:"ca,omitempty"`
}

// Error codes of an ErrorBody, one per refusal a client branches on.
const (
	CodeTokenUnknown = "token_unknown"
	CodeTokenUsed    = "token_used"
	CodeTokenExpired = "token_expired"
	CodeDeviceID     = "device_id"
	CodeBadRequest   = "bad_request"
	CodeUnavailable  = "enrollment_unavailable"
)

// ErrorBody is the body of a refused enrollment.
type ErrorBody struct {
	// Error says what went wrong, for the person enrolling the device.
	Error string `json:"error"`
	// Code is one of the Code* constants.
	Code string `json:"code,omitempty"`
}

// Errors Enroll returns (wrapped in *Error) for the refusals a caller
// branches on with errors.Is.
var (
	ErrTokenUnknown = errors.New("unknown enrollment token")
	ErrTokenUsed    = errors.New("enrollment token already used")
	ErrTokenExpired = errors.New("enrollment token expired")
)

// Error is a refusal by the hub.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Body is the hub's explanation.
	Body ErrorBody
}

func (e *Error) Error() string { return "hub refused the enrollment: " + e.Body.Error }

// Unwrap returns the sentinel error matching the code, if any.
func (e *Error) Unwrap() error {
	switch e.Body.Code {
	case CodeTokenUnknown:
		return ErrTokenUnknown
	case CodeTokenUsed:
		return ErrTokenUsed
	case CodeTokenExpired:
		return ErrTokenExpired
	}
	return nil
}
