package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/internal/buildinfo"
)

// DefaultMaxBodyBytes is the largest inference request body the HTTP front
// end reads when [HTTPOptions.MaxBodyBytes] is 0: 16 MiB, about 1.5 million
// FP32 values in JSON.
const DefaultMaxBodyBytes = 16 << 20

// DefaultServerName is the server name of OIP server metadata when
// [HTTPOptions.ServerName] is empty.
const DefaultServerName = "modelfleet-agent"

// HTTPOptions tune the HTTP front end. The zero value is ready to use.
type HTTPOptions struct {
	// MaxBodyBytes caps an inference request body; a larger one is refused
	// with 413 before it is read. 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// InferTimeout bounds one inference on top of the client's own
	// deadline; a request over it gets 504. 0 means no bound.
	InferTimeout time.Duration
	// ServerName and ServerVersion are reported by GET /v2; empty means
	// DefaultServerName and the binary's version.
	ServerName, ServerVersion string
	// Logger receives run failures (the client gets only a summary); nil
	// discards.
	Logger *slog.Logger
}

// httpHandler serves the Open Inference Protocol over HTTP.
type httpHandler struct {
	inf  Inferer
	opts HTTPOptions
	log  *slog.Logger
	mux  *http.ServeMux
}

// NewHTTP returns the HTTP handler of the Open Inference Protocol (KServe
// v2 REST) over inf:
//
//	GET  /v2/health/live                          200 while the process serves HTTP
//	GET  /v2/health/ready                         200 when at least one model is known and every model is ready, else 503
//	GET  /v2                                      server metadata: name, version, extensions
//	GET  /v2/models/{name}[/versions/{v}]         model metadata: name, versions, platform, inputs, outputs
//	GET  /v2/models/{name}[/versions/{v}]/ready   200 ready, 503 not ready, 404 unknown
//	POST /v2/models/{name}[/versions/{v}]/infer   inference
//
// A version in the path must be the serving one, or the answer is 404: the
// device serves one version of a model at a time, and a request naming
// another is not silently answered by it.
//
// Inference bodies follow the protocol's JSON: each input has name, shape,
// datatype (FP32, FP64, INT64, INT32, UINT8 or BOOL) and data, flat or
// nested row-major; "outputs" may pick outputs by name; "id" is echoed.
// Unknown fields are refused, "parameters" are accepted and ignored except
// those asking for Triton's binary data extension, which is not supported.
// Errors are {"error": "…"} with 400 (bad request), 404 (unknown model or
// version), 413 (body over MaxBodyBytes), 503 with Retry-After (busy), 504
// (timed out) or 500 (run failure; details in the log). The request's
// context reaches the model: a client that goes away stops its run.
func NewHTTP(inf Inferer, opts HTTPOptions) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.ServerName == "" {
		opts.ServerName = DefaultServerName
	}
	if opts.ServerVersion == "" {
		opts.ServerVersion = buildinfo.Read().Version
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &httpHandler{inf: inf, opts: opts, log: log.With("component", "serve-http"), mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	h.mux.HandleFunc("GET /v2/health/ready", h.serverReady)
	h.mux.HandleFunc("GET /v2", h.serverMetadata)
	h.mux.HandleFunc("GET /v2/models/{name}", h.modelMetadata)
	h.mux.HandleFunc("GET /v2/models/{name}/versions/{version}", h.modelMetadata)
	h.mux.HandleFunc("GET /v2/models/{name}/ready", h.modelReady)
	h.mux.HandleFunc("GET /v2/models/{name}/versions/{version}/ready", h.modelReady)
	h.mux.HandleFunc("POST /v2/models/{name}/infer", h.infer)
	h.mux.HandleFunc("POST /v2/models/{name}/versions/{version}/infer", h.infer)
	for _, path := range []string{"/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"} {
		h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed here; inference requests are POSTed", r.Method))
		})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s (this server speaks the Open Inference Protocol under /v2)", r.Method, r.URL.Path))
	})
	return h
}

// ServeHTTP implements http.Handler.
func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *httpHandler) serverReady(w http.ResponseWriter, r *http.Request) {
	models := h.inf.Models()
	if len(models) == 0 {
		writeError(w, http.StatusServiceUnavailable, "no model is assigned to this device yet")
		return
	}
	for _, m := range models {
		if !m.Ready {
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("model %q is not ready", m.Name))
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (h *httpHandler) serverMetadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Name       string   `json:"name"`
		Version    string   `json:"version"`
		Extensions []string `json:"extensions"`
	}{h.opts.ServerName, h.opts.ServerVersion, []string{}})
}

// model finds the model of the request path, checking the version when
// the path has one, or writes the 404 and returns false.
func (h *httpHandler) model(w http.ResponseWriter, r *http.Request) (ModelInfo, bool) {
	name, version := r.PathValue("name"), r.PathValue("version")
	info, ok := h.inf.Model(name)
	if !ok {
		writeError(w, http.StatusNotFound, unknownModel(name).Error())
		return info, false
	}
	if version != "" && version != info.Version {
		writeError(w, http.StatusNotFound, versionMismatch(name, version, info.Version))
		return info, false
	}
	return info, true
}

func versionMismatch(name, want, serving string) string {
	if serving == "" {
		return fmt.Sprintf("model %q version %q is not serving; no version is loaded", name, want)
	}
	return fmt.Sprintf("model %q version %q is not serving; version %q is", name, want, serving)
}

func (h *httpHandler) modelMetadata(w http.ResponseWriter, r *http.Request) {
	info, ok := h.model(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, newModelMetadata(info))
}

func (h *httpHandler) modelReady(w http.ResponseWriter, r *http.Request) {
	info, ok := h.model(w, r)
	if !ok {
		return
	}
	if !info.Ready {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("model %q is not ready", info.Name))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// bufPool recycles request and response buffers of up to
// maxPooledBuffer bytes.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledBuffer = 1 << 20

func (h *httpHandler) infer(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > h.opts.MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, tooLarge(r.ContentLength, h.opts.MaxBodyBytes))
		return
	}
	if r.Header.Get("Inference-Header-Content-Length") != "" {
		writeError(w, http.StatusBadRequest, "binary tensor data (Inference-Header-Content-Length) is not supported; send the request as JSON")
		return
	}
	info, ok := h.model(w, r)
	if !ok {
		return
	}

	bp := bufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledBuffer {
			bufPool.Put(bp)
		}
	}()
	body, err := readBody(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes), (*bp)[:0], r.ContentLength)
	*bp = body[:0]
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, tooLarge(-1, h.opts.MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "could not read the request body: "+err.Error())
		return
	}

	var req inferRequest
	if err := decodeStrict(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	inputs, err := decodeInputs(info, req.Inputs)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	names, err := outputNames(info, req.Outputs)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}

	ctx := r.Context()
	if h.opts.InferTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.opts.InferTimeout)
		defer cancel()
	}
	outs, version, err := h.inf.Infer(ctx, info.Name, inputs)
	if err != nil {
		logFailure(h.log, info.Name, version, err)
		status := statusOf(err)
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, status, clientMessage(info.Name, err))
		return
	}
	if want := r.PathValue("version"); want != "" && version != want {
		// The model was swapped between the check above and the run.
		writeError(w, http.StatusNotFound, versionMismatch(info.Name, want, version))
		return
	}

	resp, err := appendInferResponse(body[:0], req.ID, info, version, outs, names)
	*bp = resp[:0]
	if err != nil {
		h.log.Error("inference output cannot be encoded", "model", info.Name, "version", version, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("model %q returned an output that cannot be sent as JSON: %v", info.Name, err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(resp)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp)
}

// readBody reads r into buf, sized up front when the length is known,
// up to 1 MiB: a client that announces a large body and sends nothing
// should not make the server allocate it.
func readBody(r io.Reader, buf []byte, length int64) ([]byte, error) {
	if want := min(length+1, maxPooledBuffer); length > 0 && int64(cap(buf)) < want {
		buf = make([]byte, 0, want)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func tooLarge(length, limit int64) string {
	if length > 0 {
		return fmt.Sprintf("request body of %d bytes is over this server's limit of %d bytes", length, limit)
	}
	return fmt.Sprintf("request body is over this server's limit of %d bytes", limit)
}

// writeJSON writes v as the JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError writes the protocol's error body, {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

// Server timeouts of Serve. Inference itself is bounded by
// HTTPOptions.InferTimeout, not by a write timeout.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = time.Minute // a whole body, at most DefaultMaxBodyBytes
	idleTimeout       = 2 * time.Minute
)

// DefaultShutdownTimeout is how long Serve waits for requests in progress
// when its context ends, if ServerOptions.ShutdownTimeout is 0.
const DefaultShutdownTimeout = 10 * time.Second

// ServerOptions tune [Serve] and [ListenAndServe]. The zero value is ready
// to use.
type ServerOptions struct {
	// ShutdownTimeout is how long requests in progress may take to finish
	// once the context ends; after it, their runs are cancelled and the
	// connections closed. 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger receives the server's own errors (bad TLS handshakes, …) and
	// shutdown events; nil discards.
	Logger *slog.Logger
}

// ListenAndServe listens on addr (host:port) and serves h there until ctx
// ends, as [Serve] does.
func ListenAndServe(ctx context.Context, addr string, h http.Handler, opts ServerOptions) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve inference API: %w", err)
	}
	return Serve(ctx, ln, h, opts)
}

// Serve serves h on ln until ctx ends, then shuts down gracefully: it stops
// accepting connections, lets requests in progress finish for up to
// ShutdownTimeout, then cancels the ones left and closes their connections.
// It returns nil after a shutdown, or the error that stopped the server
// before. Requests do not see ctx's cancellation, only their own (the
// client going away) and the end of the grace period. Serve closes ln.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, opts ServerOptions) error {
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "serve-http", "addr", ln.Addr().String())
	base, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("inference API listening")

	select {
	case err := <-errc:
		return fmt.Errorf("serve inference API on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("requests still running after the shutdown grace period; cancelling them", "grace", opts.ShutdownTimeout.String())
		abort()
		_ = srv.Close()
	}
	<-errc // http.ErrServerClosed
	log.Info("inference API stopped")
	return nil
}
