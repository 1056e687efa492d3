package agent

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"strings"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/manifest"
)

// openModel loads the verified model file at path as the manifest
// describes it and runs its warm-up input (zeros when the manifest has
// none), so the first real request does not pay for lazy initialisation.
func openModel(ctx context.Context, path string, m *manifest.ModelManifest, variant string, log *slog.Logger) (*runtime.Session, error) {
	opts := runtime.Options{Logger: log.With("model", m.Name, "version", m.Version)}
	if variant == "cuda" {
		opts.Provider = runtime.ProviderCUDA
	}
	if h := m.Runtime; h != nil {
		opts.IntraOpThreads, opts.InterOpThreads, opts.GPUMemLimitBytes = h.IntraOpThreads, h.InterOpThreads, h.GPUMemLimitBytes
	}
	sess, err := runtime.Open(ctx, path, runtimeSpecs(m.Inputs), runtimeSpecs(m.Outputs), opts)
	if err != nil {
		return nil, newStepError("load", m.Ref(), path, err)
	}
	var warm map[string]runtime.Tensor
	if m.WarmUp != nil {
		if warm, err = warmUpTensors(m); err != nil {
			sess.Close()
			return nil, newStepError("warm-up input of", m.Ref(), path, err)
		}
	}
	took, err := sess.WarmUp(ctx, warm)
	if err != nil {
		sess.Close()
		return nil, newStepError("warm up", m.Ref(), path, err)
	}
	opts.Logger.Info("model loaded", "provider", sess.Provider(), "warmup", took.String())
	if note := sess.ProviderNote(); note != "" {
		opts.Logger.Warn("execution provider fallback", "note", note)
	}
	return sess, nil
}

// stepError is a failed step of bringing a model version up (load, warm
// up), worded once for the operator who reads it in the device's state and
// events: the step, the model version, and the cause. The runtime's errors
// name the blob file, and ONNX Runtime's own message names it again; the
// model and version say which file it is, so the path is left out.
type stepError struct {
	step  string // "load", "warm up", …
	ref   string // name@version
	cause string // err's message without the blob path
	err   error
}

func (e *stepError) Error() string { return e.step + " " + e.ref + ": " + e.cause }

func (e *stepError) Unwrap() error { return e.err }

// reason is the error for an event that names the model version itself.
func (e *stepError) reason() string { return e.step + " failed: " + e.cause }

// newStepError describes err, returned by step of the model version ref
// whose file is path. errors.Is and errors.As still see err.
func newStepError(step, ref, path string, err error) *stepError {
	cause := withoutPath(err, path)
	// The runtime may name the step itself ("warm up <path>: …").
	cause = strings.TrimPrefix(cause, step+": ")
	return &stepError{step: step, ref: ref, cause: cause, err: err}
}

// withoutPath returns err's message without path. The runtime wraps a
// cause as "<what> <path>: <cause>", and ONNX Runtime's message may name
// the file again ("Load model from <path> failed:<cause>"); what comes
// after the last mention of the path is the cause, and the runtime's
// sentinel says what kind of failure it is.
func withoutPath(err error, path string) string {
	msg := err.Error()
	first, last := strings.Index(msg, path), strings.LastIndex(msg, path)
	if path == "" || first < 0 {
		return msg
	}
	cause := strings.TrimSpace(msg[last+len(path):])
	cause = strings.TrimSpace(strings.TrimPrefix(cause, "failed")) // ONNX Runtime: "… <path> failed:<cause>"
	cause = strings.TrimSpace(strings.TrimPrefix(cause, ":"))
	var what string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		what = "the model file is missing"
	case errors.Is(err, runtime.ErrLoad):
		what = "ONNX Runtime cannot load it"
	case errors.Is(err, runtime.ErrSpecMismatch):
		what = runtime.ErrSpecMismatch.Error()
	case errors.Is(err, runtime.ErrRun):
		what = "ONNX Runtime failed to run it"
	default:
		what = strings.TrimRight(msg[:first], " :")
	}
	switch {
	case cause == "":
		return what
	case what == "":
		return cause
	}
	return what + ": " + cause
}

func runtimeSpecs(specs []manifest.TensorSpec) []runtime.TensorSpec {
	out := make([]runtime.TensorSpec, len(specs))
	for i, s := range specs {
		out[i] = runtime.TensorSpec{Name: s.Name, ElemType: runtime.ElemType(s.ElementType), Shape: s.Shape}
	}
	return out
}

// warmUpTensors decodes the manifest's warm-up tensors: raw little-endian
// element bytes, base64; empty data means zeros.
func warmUpTensors(m *manifest.ModelManifest) (map[string]runtime.Tensor, error) {
	types := map[string]string{}
	for _, in := range m.Inputs {
		types[in.Name] = in.ElementType
	}
	out := map[string]runtime.Tensor{}
	for _, w := range m.WarmUp.Inputs {
		et := runtime.ElemType(types[w.Name])
		if w.Data == "" {
			t, err := runtime.Zeros(et, w.Shape)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", w.Name, err)
			}
			out[w.Name] = t
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(w.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: data is not base64: %w", w.Name, err)
		}
		t, err := decodeTensor(et, w.Shape, raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w.Name, err)
		}
		out[w.Name] = t
	}
	return out, nil
}

func decodeTensor(et runtime.ElemType, shape []int64, raw []byte) (runtime.Tensor, error) {
	size := map[runtime.ElemType]int{runtime.Float32: 4, runtime.Float64: 8, runtime.Int64: 8, runtime.Int32: 4, runtime.Uint8: 1, runtime.Bool: 1}[et]
	if size == 0 {
		return runtime.Tensor{}, fmt.Errorf("unsupported element type %q", et)
	}
	if len(raw)%size != 0 {
		return runtime.Tensor{}, fmt.Errorf("%d bytes is not a whole number of %s elements", len(raw), et)
	}
	n := len(raw) / size
	le := binary.LittleEndian
	switch et {
	case runtime.Float32:
		d := make([]float32, n)
		for i := range d {
			d[i] = math.Float32frombits(le.Uint32(raw[i*4:]))
		}
		return runtime.NewTensor(shape, d), nil
	case runtime.Float64:
		d := make([]float64, n)
		for i := range d {
			d[i] = math.Float64frombits(le.Uint64(raw[i*8:]))
		}
		return runtime.NewTensor(shape, d), nil
	case runtime.Int64:
		d := make([]int64, n)
		for i := range d {
			d[i] = int64(le.Uint64(raw[i*8:]))
		}
		return runtime.NewTensor(shape, d), nil
	case runtime.Int32:
		d := make([]int32, n)
		for i := range d {
			d[i] = int32(le.Uint32(raw[i*4:]))
		}
		return runtime.NewTensor(shape, d), nil
	case runtime.Uint8:
		return runtime.NewTensor(shape, raw), nil
	default: // Bool
		d := make([]bool, n)
		for i := range d {
			d[i] = raw[i] != 0
		}
		return runtime.NewTensor(shape, d), nil
	}
}
