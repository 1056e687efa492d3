package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
)

// TestStepError checks how a failed load or warm-up reads in the device's
// state and events, for the shapes of error the runtime returns: the model
// version and step once, the cause, no blob path, and the error still
// matching the runtime's sentinels.
func TestStepError(t *testing.T) {
	const path = "/var/lib/modelfleet/blobs/sha256/a2c77ad7"
	ortLoad := fmt.Sprintf("Error loading temporary session: Load model from %s failed:Node (fc1.matmul) Op (MatMul) [ShapeInferenceError] Incompatible dimensions", path)
	tests := []struct {
		name       string
		step       string
		err        error
		want       string // Error()
		wantReason string
		wantIs     error
	}{
		{
			name: "ONNX Runtime refuses the model, naming the file again",
			step: "load", err: fmt.Errorf("%w %s: %v", runtime.ErrLoad, path, errors.New(ortLoad)),
			want:       "load m@3.0.0: ONNX Runtime cannot load it: Node (fc1.matmul) Op (MatMul) [ShapeInferenceError] Incompatible dimensions",
			wantReason: "load failed: ONNX Runtime cannot load it: Node (fc1.matmul) Op (MatMul) [ShapeInferenceError] Incompatible dimensions",
			wantIs:     runtime.ErrLoad,
		},
		{
			name: "declared tensors do not match",
			step: "load", err: fmt.Errorf("%w: %s: %s", runtime.ErrSpecMismatch, path, `input "window": dimension 1 is 32, declared 64`),
			want:   `load m@3.0.0: model does not match its declared tensors: input "window": dimension 1 is 32, declared 64`,
			wantIs: runtime.ErrSpecMismatch,
		},
		{
			name: "warm-up run fails",
			step: "warm up", err: fmt.Errorf("warm up %s: %w", path, fmt.Errorf("%w: %s: %v", runtime.ErrRun, path, errors.New("out of memory"))),
			want:   "warm up m@3.0.0: ONNX Runtime failed to run it: out of memory",
			wantIs: runtime.ErrRun,
		},
		{
			name: "warm-up input refused",
			step: "warm up", err: fmt.Errorf("warm up %s: %w", path, fmt.Errorf("%w: input %q missing", runtime.ErrInvalidInput, "window")),
			want:   `warm up m@3.0.0: invalid inference request: input "window" missing`,
			wantIs: runtime.ErrInvalidInput,
		},
		{
			name: "file gone",
			step: "load", err: fmt.Errorf("%w: %w", runtime.ErrLoad, &fs.PathError{Op: "stat", Path: path, Err: fs.ErrNotExist}),
			want:   "load m@3.0.0: the model file is missing: file does not exist",
			wantIs: fs.ErrNotExist,
		},
		{
			name: "no path in the error",
			step: "warm-up input of", err: errors.New("window: data is not base64"),
			want:   "warm-up input of m@3.0.0: window: data is not base64",
			wantIs: nil,
		},
		{
			name: "interrupted",
			step: "load", err: fmt.Errorf("open model %s: %w", path, context.Canceled),
			want:   "load m@3.0.0: open model: context canceled",
			wantIs: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStepError(tt.step, "m@3.0.0", path, tt.err)
			if got := e.Error(); got != tt.want {
				t.Errorf("Error() = %q\nwant      %q", got, tt.want)
			}
			if tt.wantReason != "" && e.reason() != tt.wantReason {
				t.Errorf("reason() = %q\nwant       %q", e.reason(), tt.wantReason)
			}
			if tt.wantIs != nil && !errors.Is(e, tt.wantIs) {
				t.Errorf("errors.Is(%v) = false", tt.wantIs)
			}
		})
	}
}
