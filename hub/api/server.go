// Package api is the hub's HTTP interface: the JSON API under /api/v1 that
// the fleethub CLI drives (devices, model releases, rollouts), the
// Prometheus /metrics endpoint, /healthz (the process serves HTTP) and
// /readyz (the hub core runs and is connected to its broker), plus Client,
// the typed Go client of that API.
//
// The server is a thin layer: it decodes requests, calls the hub core
// (Hub, and MetricsSource for /metrics), the store (Store) and the release
// pusher (Options.Push), and maps their documented errors to HTTP statuses:
// store.ErrNotFound → 404; store.ErrConflict, rollout.ErrNotAllowed,
// hub.ErrUnsignedRelease, existing and already signed releases → 409;
// invalid input, refused signatures and signed manifests that differ from
// the registered one → 400; an unreachable object store → 502;
// hub.ErrNotRunning → 503. Every error body is
// {"error": "..."} written for the operator.
//
// Offline signing: GET /api/v1/models/{name}/{version}/manifest answers the
// stored manifest envelope byte for byte; PUT on the same path takes it
// back signed and stores it after hub/release.Attach checked it against the
// hub's trust root (TrustRoot) and the registered manifest.
//
// Model push design: the CLI uploads the ONNX files to the hub in one
// multipart/form-data request and the hub runs hub/release.Push with its own
// S3 credentials and release key. Operators therefore need only the hub URL
// and the API token, never S3 credentials, and the hub's key directory is
// the one place the release key lives online.
//
// Authentication: when Options.Token is set, every /api/ request must carry
// "Authorization: Bearer <token>" (compared in constant time), or it gets
// 401. /healthz, /readyz and /metrics are open so probes and scrapers need
// no secret. The exception under /api/ is POST /api/v1/enroll, which a
// device calls with its one-time enrollment token instead (enroll.go).
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/release"
	"github.com/modelfleet/modelfleet/hub/rollout"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/enroll"
)

// Hub is what the API needs of the hub core; *hub.Hub implements it.
type Hub interface {
	// StartRollout registers a rollout and returns its ID.
	StartRollout(ctx context.Context, spec rollout.Spec) (int64, error)
	// Pause, Resume, Abort and Rollback apply an operator command.
	Pause(ctx context.Context, id int64) error
	Resume(ctx context.Context, id int64) error
	Abort(ctx context.Context, id int64) error
	Rollback(ctx context.Context, id int64) error
	// RolloutStatus returns one rollout with its controller state.
	RolloutStatus(ctx context.Context, id int64) (hub.RolloutInfo, error)
	// ListRollouts returns the rollouts with one of the statuses (all when
	// none given), newest first.
	ListRollouts(ctx context.Context, statuses ...store.RolloutStatus) ([]hub.RolloutInfo, error)
	// TrustRoot returns the root.json the hub publishes; releases signed
	// offline are verified against its release role.
	TrustRoot() ([]byte, error)
}

// MetricsSource is what /metrics and /readyz read of the hub core besides
// the store: its counters and connection state. *hub.Hub implements it; a
// Hub that does not serves the store's gauges only and is always ready.
type MetricsSource interface {
	Metrics() hub.Metrics
}

// Store is what the API reads from and writes to the store directly; every
// store.Store implements it.
type Store interface {
	ListDevices(ctx context.Context, sel store.Selector) ([]store.Device, error)
	GetDevice(ctx context.Context, id string) (store.Device, error)
	SetLabels(ctx context.Context, id string, set map[string]string, remove []string) (store.Device, error)
	GetRelease(ctx context.Context, name, version string) (store.Release, error)
	SignRelease(ctx context.Context, name, version string, envelope []byte) error
	ListReleases(ctx context.Context, name string) ([]store.Release, error)
	ListEvents(ctx context.Context, device string, since time.Time, limit int) ([]store.Event, error)
	ListTelemetry(ctx context.Context, q store.TelemetryQuery) ([]store.TelemetryRollup, error)
	ListRollouts(ctx context.Context, statuses ...store.RolloutStatus) ([]store.Rollout, error)
}

// PushFunc publishes a release (see hub/release.Push). The server fills
// Name, Version, Artifacts (temporary files that live for the call) and
// SignLater; the function adds the bucket, the signers and the object store.
type PushFunc func(ctx context.Context, req release.PushRequest) (*release.Result, error)

// Defaults of Options.
const (
	// DefaultMaxUploadBytes caps one model push request (all files): 2 GiB.
	DefaultMaxUploadBytes = 2 << 30
	// DefaultRecentEvents is how many events GET /api/v1/devices/{id} returns.
	DefaultRecentEvents = 20
	// maxJSONBodyBytes caps JSON request bodies.
	maxJSONBodyBytes = 1 << 20
)

// Options configure a Server.
type Options struct {
	// Token, when not empty, is required as a bearer token on /api/.
	Token string
	// Logger receives request errors; nil means slog.Default().
	Logger *slog.Logger
	// Push publishes releases; nil makes POST /api/v1/models answer 501.
	Push PushFunc
	// MaxUploadBytes caps a push request; 0 means DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// TempDir receives pushed files while they are processed; empty means
	// os.TempDir().
	TempDir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Enroll configures device enrollment (enroll.go); nil disables it.
	Enroll *Enrollment
}

// Server serves the API. It is an http.Handler, safe for concurrent use.
type Server struct {
	hub  Hub
	st   Store
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
}

// NewServer returns the API handler over h and st.
func NewServer(h Hub, st Store, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxUploadBytes <= 0 {
		opts.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{hub: h, st: st, opts: opts, log: opts.Logger.With("component", "api"), mux: http.NewServeMux()}
	s.routes()
	return s
}

func (s *Server) routes() {
	api := func(pattern string, h func(http.ResponseWriter, *http.Request) error) {
		s.mux.Handle(pattern, s.auth(s.handle(h)))
	}
	api("GET /api/v1/devices", s.listDevices)
	api("GET /api/v1/devices/{id}", s.getDevice)
	api("PUT /api/v1/devices/{id}/labels", s.setLabels)
	api("GET /api/v1/models", s.listModels)
	api("GET /api/v1/models/{name}/{version}", s.getModel)
	api("POST /api/v1/models", s.pushModel)
	api("GET /api/v1/models/{name}/{version}/manifest", s.getManifest)
	api("PUT /api/v1/models/{name}/{version}/manifest", s.attachSignature)
	api("POST /api/v1/rollouts", s.startRollout)
	api("GET /api/v1/rollouts", s.listRollouts)
	api("GET /api/v1/rollouts/{id}", s.getRollout)
	api("POST /api/v1/rollouts/{id}/{command}", s.rolloutCommand)
	api("POST /api/v1/enroll-tokens", s.createEnrollToken)
	s.mux.HandleFunc("POST "+enroll.Path, s.enrollDevice) // authenticated by the enrollment token itself
	// Anything else under /api/ is a JSON 404 (after authentication, so
	// the API's shape is not probed anonymously).
	api("/api/", func(http.ResponseWriter, *http.Request) error {
		return &statusError{http.StatusNotFound, "no such API endpoint"}
	})
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.Handle("GET /metrics", s.handle(s.metrics))
	s.mux.HandleFunc("GET /readyz", s.readyz)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// auth enforces the bearer token when one is configured.
func (s *Server) auth(next http.Handler) http.Handler {
	if s.opts.Token == "" {
		return next
	}
	want := []byte(s.opts.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fleethub"`)
			writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: "missing or wrong API token: pass --token or set MODELFLEET_TOKEN to the hub's api.token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handle adapts a handler returning an error: the error becomes the JSON
// error body with the status errors map to.
func (s *Server) handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		code := statusOf(err)
		msg := err.Error()
		if code == http.StatusInternalServerError || code == http.StatusBadGateway {
			s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		if errors.Is(err, hub.ErrNotRunning) {
			msg += notReadyHint
		}
		writeJSON(w, code, ErrorBody{Error: msg})
	})
}

// notReadyHint completes the message of an operation refused because the
// hub core is not running yet.
const notReadyHint = " (the hub is starting, or cannot reach its MQTT broker and keeps retrying: see its log and GET /readyz)"

// readyz answers 200 once the hub core runs and is connected to the
// broker, 503 with the reason otherwise. /healthz only says the process
// serves HTTP.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ms, ok := s.hub.(MetricsSource)
	if !ok {
		_, _ = w.Write([]byte("ready\n"))
		return
	}
	m := ms.Metrics()
	switch {
	case !m.Ready:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: the hub has not connected to its MQTT broker yet and keeps retrying (see its log)\n"))
	case !m.BrokerConnected:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: the connection to the MQTT broker is lost; reconnecting (see the hub's log)\n"))
	default:
		_, _ = w.Write([]byte("ready\n"))
	}
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	// Error says what went wrong, for the operator.
	Error string `json:"error"`
}

// statusError is an error with its own HTTP status.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// badRequest returns a 400 error.
func badRequest(format string, a ...any) error {
	return &statusError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

// statusOf maps the documented errors of the hub, store, rollout and release
// packages to HTTP statuses.
func statusOf(err error) int {
	var se *statusError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		return se.code
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrConflict), errors.Is(err, rollout.ErrNotAllowed),
		errors.Is(err, hub.ErrUnsignedRelease), errors.Is(err, release.ErrVersionExists),
		errors.Is(err, release.ErrObjectExists), errors.Is(err, release.ErrAlreadySigned):
		return http.StatusConflict
	case errors.Is(err, store.ErrInvalid), errors.Is(err, rollout.ErrInvalidSpec),
		errors.Is(err, release.ErrInvalid), errors.Is(err, release.ErrNotONNX),
		errors.Is(err, release.ErrUnsupported), errors.Is(err, release.ErrVariantMismatch),
		errors.Is(err, release.ErrSignatureRejected), errors.Is(err, release.ErrManifestMismatch):
		return http.StatusBadRequest
	case errors.Is(err, hub.ErrNotRunning):
		return http.StatusServiceUnavailable
	case errors.Is(err, release.ErrObjectStore):
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decodeJSON strictly decodes a JSON request body into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}
