package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/enroll"
	"github.com/modelfleet/modelfleet/internal/pki"
	"github.com/modelfleet/modelfleet/manifest"
)

// Enrollment defaults.
const (
	// DefaultEnrollTokenTTL is how long an enrollment token is valid unless
	// the operator asks otherwise.
	DefaultEnrollTokenTTL = time.Hour
	// MaxEnrollTokenTTL is the longest validity a token may be given.
	MaxEnrollTokenTTL = 30 * 24 * time.Hour
	// maxEnrollBodyBytes caps an enrollment request (a token and a CSR).
	maxEnrollBodyBytes = 64 << 10
)

// EnrollStore is what enrollment needs of the store; every store.Store
// implements it.
type EnrollStore interface {
	CreateEnrollToken(ctx context.Context, t store.EnrollToken) error
	GetEnrollToken(ctx context.Context, hash []byte) (store.EnrollToken, error)
	ConsumeEnrollToken(ctx context.Context, hash []byte, device string, at time.Time) (store.EnrollToken, error)
}

// Enrollment configures device enrollment: POST /api/v1/enroll-tokens
// (operator token required) makes one-time tokens, POST /api/v1/enroll
// (authenticated by such a token alone) enrolls a device. With
// Options.Enroll nil both answer 501.
type Enrollment struct {
	// Store keeps the tokens and registers enrolled devices.
	Store EnrollStore
	// CA signs the devices' client certificates.
	CA *pki.CA
	// CertValidity is how long device certificates are valid; 0 means
	// pki.DefaultClientValidity (one year).
	CertValidity time.Duration
	// Brokers are the broker URLs handed to agents.
	Brokers []string
	// BrokerCA is the PEM bundle agents verify the broker with; empty means
	// the system roots.
	BrokerCA []byte
	// TopicPrefix is the MQTT topic prefix handed to agents.
	TopicPrefix string
	// S3 is handed to agents (read-only credentials!); nil hands out none.
	S3 *enroll.S3
	// RootFile is the trust root (root.json) handed to agents, read at each
	// enrollment so a rotated root is picked up.
	RootFile string
	// ReservedIDs are MQTT identities no device may get, compared without
	// regard to case: a device certificate with the hub's common name would
	// have the hub's access on the broker. pki.DefaultHubClientName is
	// always reserved.
	ReservedIDs []string
}

// reserved returns an error when id is a reserved identity.
func (e *Enrollment) reserved(id string) error {
	for _, r := range append([]string{pki.DefaultHubClientName}, e.ReservedIDs...) {
		if strings.EqualFold(id, r) {
			return fmt.Errorf("device ID %q is reserved: it is the MQTT identity of the hub or another client, and a device certificate with that name would get its access", id)
		}
	}
	return nil
}

// EnrollTokenRequest is the body of POST /api/v1/enroll-tokens.
type EnrollTokenRequest struct {
	// Labels become the enrolled device's hub labels.
	Labels map[string]string `json:"labels,omitempty"`
	// TTLSeconds is the token's validity; 0 means DefaultEnrollTokenTTL.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
	// DeviceID, when set, is the only device the token enrolls (and may be
	// a registered one, to re-enroll it).
	DeviceID string `json:"device_id,omitempty"`
}

// EnrollTokenResponse is a new token. Token is shown this once: the hub
// keeps only its hash.
type EnrollTokenResponse struct {
	// Token is the secret to pass to `fleetagent enroll --token`.
	Token string `json:"token"`
	// ID names the token in the hub's logs without revealing it.
	ID string `json:"id"`
	// DeviceID is the device the token is limited to, if any.
	DeviceID string `json:"device_id,omitempty"`
	// Labels are the labels the device will get.
	Labels map[string]string `json:"labels,omitempty"`
	// Expires is when the token stops working.
	Expires time.Time `json:"expires"`
}

// CreateEnrollToken makes a one-time enrollment token.
func (c *Client) CreateEnrollToken(ctx context.Context, req EnrollTokenRequest) (*EnrollTokenResponse, error) {
	var out EnrollTokenResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/api/v1/enroll-tokens", req, &out)
}

func (s *Server) createEnrollToken(w http.ResponseWriter, r *http.Request) error {
	e := s.opts.Enroll
	if e == nil {
		return &statusError{http.StatusNotImplemented, "enrollment is not configured on this hub (it has no device CA)"}
	}
	var req EnrollTokenRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := e.reserved(req.DeviceID); err != nil {
		return badRequest("%v", err)
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	switch {
	case req.TTLSeconds == 0:
		ttl = DefaultEnrollTokenTTL
	case req.TTLSeconds < 0 || ttl > MaxEnrollTokenTTL:
		return badRequest("ttl_seconds %d: want 1 to %d (%s)", req.TTLSeconds, int64(MaxEnrollTokenTTL/time.Second), MaxEnrollTokenTTL)
	}
	token, err := enroll.NewToken()
	if err != nil {
		return err
	}
	now := s.opts.Now().UTC().Truncate(time.Microsecond)
	t := store.EnrollToken{
		Hash: enroll.HashToken(token), DeviceID: req.DeviceID, Labels: req.Labels,
		Created: now, Expires: now.Add(ttl),
	}
	if err := e.Store.CreateEnrollToken(r.Context(), t); err != nil {
		return err
	}
	s.log.Info("enrollment token created", "token_id", t.ID(), "device", t.DeviceID, "labels", store.Selector(t.Labels).String(), "expires", t.Expires)
	writeJSON(w, http.StatusCreated, EnrollTokenResponse{Token: token, ID: t.ID(), DeviceID: t.DeviceID, Labels: t.Labels, Expires: t.Expires})
	return nil
}

// enrollError is a refused enrollment with its code.
type enrollError struct {
	status int
	body   enroll.ErrorBody
}

func refuse(status int, code, format string, a ...any) *enrollError {
	return &enrollError{status, enroll.ErrorBody{Error: fmt.Sprintf(format, a...), Code: code}}
}

// enrollDevice serves POST /api/v1/enroll. The request carries no operator
// token: the enrollment token is its credential.
func (s *Server) enrollDevice(w http.ResponseWriter, r *http.Request) {
	resp, tokenID, eerr := s.enroll(w, r)
	if eerr != nil {
		if eerr.status >= 500 {
			s.log.Error("enrollment failed", "token_id", tokenID, "remote", r.RemoteAddr, "err", eerr.body.Error)
		} else {
			s.log.Warn("enrollment refused", "token_id", tokenID, "remote", r.RemoteAddr, "code", eerr.body.Code, "reason", eerr.body.Error)
		}
		writeJSON(w, eerr.status, eerr.body)
		return
	}
	s.log.Info("device enrolled", "device", resp.DeviceID, "token_id", tokenID, "labels", store.Selector(resp.Labels).String(),
		"certificate_expires", resp.CertificateExpires)
	writeJSON(w, http.StatusOK, resp)
}

// enroll does the work of enrollDevice; tokenID names the token for logs.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) (_ *enroll.Response, tokenID string, _ *enrollError) {
	e := s.opts.Enroll
	if e == nil {
		return nil, "", refuse(http.StatusNotImplemented, enroll.CodeUnavailable, "enrollment is not configured on this hub (it has no device CA)")
	}
	ctx := r.Context()
	var req enroll.Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxEnrollBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, "", refuse(http.StatusBadRequest, enroll.CodeBadRequest, "request body: %v", err)
	}
	if err := enroll.CheckTokenFormat(req.Token); err != nil {
		return nil, "", refuse(http.StatusUnauthorized, enroll.CodeTokenUnknown, "%v", err)
	}
	hash := enroll.HashToken(req.Token)
	tokenID = store.EnrollToken{Hash: hash}.ID()
	now := s.opts.Now()

	// Read the token first for a clear refusal and to learn the device ID;
	// ConsumeEnrollToken below checks everything again atomically.
	tok, err := e.Store.GetEnrollToken(ctx, hash)
	if eerr := tokenRefusal(err, tok, now); eerr != nil {
		return nil, tokenID, eerr
	}
	csr, err := pki.ParseCSR([]byte(req.CSR))
	if err != nil {
		return nil, tokenID, refuse(http.StatusBadRequest, enroll.CodeBadRequest, "%v", err)
	}
	id := tok.DeviceID
	switch {
	case id != "" && req.DeviceID != "" && req.DeviceID != id:
		return nil, tokenID, refuse(http.StatusBadRequest, enroll.CodeDeviceID, "this token enrolls device %s only, not %s: drop --device-id or ask for a token for %s", id, req.DeviceID, req.DeviceID)
	case id == "" && req.DeviceID != "":
		id = req.DeviceID
	case id == "":
		if id, err = newDeviceID(); err != nil {
			return nil, tokenID, refuse(http.StatusInternalServerError, "", "generate a device ID: %v", err)
		}
	}
	if err := manifest.ValidateDeviceID(id); err != nil {
		return nil, tokenID, refuse(http.StatusBadRequest, enroll.CodeDeviceID, "%v", err)
	}
	if err := e.reserved(id); err != nil {
		return nil, tokenID, refuse(http.StatusBadRequest, enroll.CodeDeviceID, "%v", err)
	}
	root, err := os.ReadFile(e.RootFile)
	if err != nil {
		return nil, tokenID, refuse(http.StatusInternalServerError, "", "read the trust root: %v", err)
	}
	// Sign before consuming the token: if signing failed the token would be
	// gone for nothing. A certificate for a refused token is never sent.
	issued, err := e.CA.SignClient(csr.PublicKey, id, e.CertValidity)
	if err != nil {
		return nil, tokenID, refuse(http.StatusInternalServerError, "", "%v", err)
	}
	used, err := e.Store.ConsumeEnrollToken(ctx, hash, id, now)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Either someone used the token meanwhile or the ID is taken.
			if again, gerr := e.Store.GetEnrollToken(ctx, hash); gerr == nil && !again.UsedAt.IsZero() {
				return nil, tokenID, tokenRefusal(nil, again, now)
			}
			return nil, tokenID, refuse(http.StatusConflict, enroll.CodeDeviceID, "device ID %s is already registered: enroll with another --device-id, or ask the operator for a token naming %s to re-enroll it", id, id)
		}
		if eerr := tokenRefusal(err, tok, now); eerr != nil {
			return nil, tokenID, eerr
		}
		if errors.Is(err, store.ErrInvalid) {
			return nil, tokenID, refuse(http.StatusBadRequest, enroll.CodeDeviceID, "%v", err)
		}
		return nil, tokenID, refuse(http.StatusInternalServerError, "", "%v", err)
	}
	labels := maps.Clone(used.Labels)
	if d, err := s.st.GetDevice(ctx, id); err == nil {
		labels = d.Labels
	}
	resp := &enroll.Response{
		DeviceID:           id,
		Labels:             labels,
		Certificate:        string(issued.PEM),
		CertificateExpires: issued.Cert.NotAfter.UTC(),
		DeviceCA:           string(e.CA.CertPEM),
		BrokerCA:           string(e.BrokerCA),
		Brokers:            e.Brokers,
		TopicPrefix:        e.TopicPrefix,
		S3:                 e.S3,
		Root:               root,
	}
	return resp, tokenID, nil
}

// tokenRefusal turns a token lookup (err, or the token found) into a
// refusal, or nil when the token may be used at now.
func tokenRefusal(err error, tok store.EnrollToken, now time.Time) *enrollError {
	const fix = "ask the operator for a new one (`fleethub devices enroll-token`)"
	switch {
	case errors.Is(err, store.ErrNotFound):
		return refuse(http.StatusUnauthorized, enroll.CodeTokenUnknown, "unknown enrollment token: check it was copied whole, or %s", fix)
	case errors.Is(err, store.ErrExpired):
		return refuse(http.StatusGone, enroll.CodeTokenExpired, "enrollment token expired at %s: %s", tok.Expires.UTC().Format(time.RFC3339), fix)
	case err != nil:
		return refuse(http.StatusInternalServerError, "", "look up the enrollment token: %v", err)
	case !tok.UsedAt.IsZero():
		return refuse(http.StatusConflict, enroll.CodeTokenUsed, "enrollment token already used at %s (by device %s); tokens work once: %s",
			tok.UsedAt.UTC().Format(time.RFC3339), tok.UsedBy, fix)
	case !now.Before(tok.Expires):
		return refuse(http.StatusGone, enroll.CodeTokenExpired, "enrollment token expired at %s: %s", tok.Expires.UTC().Format(time.RFC3339), fix)
	}
	return nil
}

// newDeviceID makes an ID for a device that asked for none.
func newDeviceID() (string, error) {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "edge-" + hex.EncodeToString(b), nil
}
