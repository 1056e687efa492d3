package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/modelfleet/modelfleet/agent/runtime"
)

// Inferer runs requests on the serving version of a model. The agent
// implements it (*agent.Agent); the front ends of this package only decode,
// route and encode.
//
// Infer returns the outputs and the version that computed them. Its errors
// decide what the client is told, matched with errors.Is:
// [runtime.ErrInvalidInput] (a bad request, 400), [runtime.ErrNotLoaded]
// (no such model, or it is not serving, 404), [runtime.ErrBusy] (try again
// later, 503), [runtime.ErrClosed] (503), a context error (504 on a
// deadline), anything else a run failure (500) whose details are logged but
// not sent to the client.
//
// Model returns the serving version and the tensor specs of one model, and
// false when the device does not know the name; Models lists every model.
// All three are called concurrently.
type Inferer interface {
	Infer(ctx context.Context, model string, inputs map[string]runtime.Tensor) (outputs map[string]runtime.Tensor, version string, err error)
	Model(name string) (ModelInfo, bool)
	Models() []ModelInfo
}

// ModelInfo describes one model as the front ends publish it (OIP model
// metadata) and decode requests for it.
type ModelInfo struct {
	// Name is the model name, as in request URLs and topics.
	Name string
	// Version is the serving version; "" when none is loaded.
	Version string
	// Ready reports that requests are served now (an idle model unloaded
	// to save memory that reloads on the next request counts as ready).
	Ready bool
	// Inputs and Outputs are the declared tensors; -1 in a shape is a
	// dimension chosen per request.
	Inputs, Outputs []runtime.TensorSpec
	// Platform names the backend in OIP model metadata; "" means
	// [PlatformONNXRuntime].
	Platform string
}

// PlatformONNXRuntime is the OIP platform name of models run by ONNX
// Runtime, as Triton and KServe spell it.
const PlatformONNXRuntime = "onnxruntime_onnx"

// platform returns the platform to report.
func (m ModelInfo) platform() string {
	if m.Platform == "" {
		return PlatformONNXRuntime
	}
	return m.Platform
}

// input returns the spec of the named input.
func (m ModelInfo) input(name string) (runtime.TensorSpec, bool) {
	for _, s := range m.Inputs {
		if s.Name == name {
			return s, true
		}
	}
	return runtime.TensorSpec{}, false
}

// hasOutput reports whether the model declares the named output.
func (m ModelInfo) hasOutput(name string) bool {
	for _, s := range m.Outputs {
		if s.Name == name {
			return true
		}
	}
	return false
}

// Errors of this package, matched with errors.Is. Both wrap the runtime
// error the status mapping knows, so either can be tested for.
var (
	// ErrUnknownModel means the device serves no model of that name, or
	// not the version asked for. It wraps [runtime.ErrNotLoaded].
	ErrUnknownModel = fmt.Errorf("unknown model: %w", runtime.ErrNotLoaded)
	// ErrOverloaded means the front end's own queue for the model is full.
	// It wraps [runtime.ErrBusy].
	ErrOverloaded = fmt.Errorf("too many requests waiting: %w", runtime.ErrBusy)
)

// unknownModel returns the error for a model name the device does not
// serve; it matches ErrUnknownModel.
func unknownModel(name string) error {
	return &plainError{msg: fmt.Sprintf("no model %q on this device", name), kind: ErrUnknownModel}
}

// plainError is an error of a kind (a sentinel) whose message does not
// repeat the kind's own text.
type plainError struct {
	msg  string
	kind error
}

func (e *plainError) Error() string { return e.msg }
func (e *plainError) Unwrap() error { return e.kind }

// invalid returns an error for a bad request, wrapping
// runtime.ErrInvalidInput so that it maps to 400.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", runtime.ErrInvalidInput, fmt.Sprintf(format, args...))
}

// statusOf maps an error to the HTTP status of the OIP response, which the
// MQTT replies use as their "code" too.
func statusOf(err error) int {
	switch {
	case errors.Is(err, runtime.ErrInvalidInput):
		return http.StatusBadRequest
	case errors.Is(err, runtime.ErrNotLoaded):
		return http.StatusNotFound
	case errors.Is(err, runtime.ErrBusy), errors.Is(err, runtime.ErrClosed), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// clientMessage is what the client is told about err. Bad requests, unknown
// models and busy models get the error's own text, written for the client;
// a run failure carries file paths and ONNX Runtime internals, so the
// client gets a plain sentence and the log gets the details.
func clientMessage(model string, err error) string {
	switch statusOf(err) {
	case http.StatusInternalServerError:
		return fmt.Sprintf("model %q failed to run this request; the device's log has the details", model)
	case http.StatusGatewayTimeout:
		return fmt.Sprintf("model %q did not answer in time", model)
	case http.StatusServiceUnavailable:
		if errors.Is(err, context.Canceled) {
			return "the request was cancelled"
		}
	}
	return err.Error()
}

// logFailure logs a request that failed on the device's side (500, 504),
// where the client gets only a summary.
func logFailure(log *slog.Logger, model, version string, err error) {
	switch statusOf(err) {
	case http.StatusInternalServerError, http.StatusGatewayTimeout:
		log.Error("inference failed", "model", model, "version", version, "err", err)
	}
}
