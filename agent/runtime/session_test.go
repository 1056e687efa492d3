package runtime_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
)

// tolerance is how far ONNX Runtime's scores may be from mlp.Reference (see
// examples/models).
const tolerance = 1e-5

// checkScores compares a score output with mlp.Reference for the windows.
func checkScores(t *testing.T, out map[string]runtime.Tensor, w *mlp.Weights, windows []float32, batch int) {
	t.Helper()
	score, ok := out[mlp.OutputName]
	if !ok {
		t.Fatalf("no %q in outputs %v", mlp.OutputName, out)
	}
	if got, want := score.Shape(), []int64{int64(batch), 1}; !slices.Equal(got, want) {
		t.Errorf("score shape = %v, want %v", got, want)
	}
	if score.ElemType() != runtime.Float32 {
		t.Fatalf("score is %s, want float32", score.ElemType())
	}
	want := mlp.Reference(w, windows, batch)
	got := score.Float32()
	if len(got) != len(want) {
		t.Fatalf("%d scores, want %d", len(got), len(want))
	}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > tolerance {
			t.Errorf("score[%d] = %v, reference %v", i, got[i], want[i])
		}
	}
}

func TestOpenMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		file string
		seed uint64
	}{
		{models.FileV1, models.SeedV1},
		{models.FileV2, models.SeedV2},
	} {
		t.Run(tc.file, func(t *testing.T) {
			s := mustOpen(t, tc.file)
			if s.Provider() != runtime.ProviderCPU || s.ProviderNote() != "" {
				t.Errorf("Provider = %q (%q), want cpu and no note", s.Provider(), s.ProviderNote())
			}
			w := mlp.NewWeights(tc.seed)
			rng := rand.New(rand.NewPCG(tc.seed, 7))
			for range 20 {
				windows := randomWindows(rng, 1)
				out, err := s.Run(context.Background(), windowInput(windows, 1))
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				checkScores(t, out, w, windows, 1)
			}
		})
	}
}

func TestRunBatch(t *testing.T) {
	s := mustOpen(t, models.FileBatch)
	w := mlp.NewWeights(models.SeedV1)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, batch := range []int{1, 3, 8} {
		windows := randomWindows(rng, batch)
		out, err := s.Run(context.Background(), windowInput(windows, batch))
		if err != nil {
			t.Fatalf("batch %d: Run: %v", batch, err)
		}
		checkScores(t, out, w, windows, batch)
	}
}

// TestOpenNarrowedSpec declares [1,64] for the batch model: a manifest may
// promise less than the model can do, and requests are held to the promise.
func TestOpenNarrowedSpec(t *testing.T) {
	initORT(t)
	in, out := windowSpecs(1)
	s, err := runtime.Open(context.Background(), examplePath(models.FileBatch), in, out, runtime.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	windows := randomWindows(rand.New(rand.NewPCG(1, 1)), 3)
	if _, err := s.Run(context.Background(), windowInput(windows[:mlp.InputSize], 1)); err != nil {
		t.Errorf("batch 1: %v", err)
	}
	if _, err := s.Run(context.Background(), windowInput(windows, 3)); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Errorf("batch 3 on a [1,64] spec: %v, want ErrInvalidInput", err)
	}
}

func TestOpenBrokenModel(t *testing.T) {
	initORT(t)
	in, out := windowSpecs(1)
	path := examplePath(models.FileBroken)
	_, err := runtime.Open(context.Background(), path, in, out, runtime.Options{})
	if !errors.Is(err, runtime.ErrLoad) {
		t.Fatalf("Open broken model = %v, want ErrLoad", err)
	}
	t.Log(err)
	// ONNX Runtime's own words must reach the operator.
	for _, want := range []string{path, "fc1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestOpenMissingFile(t *testing.T) {
	initORT(t)
	in, out := windowSpecs(1)
	_, err := runtime.Open(context.Background(), examplePath("no-such-model.onnx"), in, out, runtime.Options{})
	if !errors.Is(err, runtime.ErrLoad) || !strings.Contains(err.Error(), "no-such-model.onnx") {
		t.Fatalf("Open missing file = %v, want ErrLoad naming the file", err)
	}
}

func TestOpenSpecMismatch(t *testing.T) {
	initORT(t)
	typesPath, typesIn, typesOut := typesModel(t)
	v1 := examplePath(models.FileV1)
	spec := func(name string, et runtime.ElemType, shape ...int64) runtime.TensorSpec {
		return runtime.TensorSpec{Name: name, ElemType: et, Shape: shape}
	}
	window := spec("window", runtime.Float32, 1, 64)
	score := spec("score", runtime.Float32, 1, 1)
	tests := []struct {
		name    string
		path    string
		inputs  []runtime.TensorSpec
		outputs []runtime.TensorSpec
		want    []string // substrings of the error
	}{
		{name: "wrong input name", path: v1,
			inputs: []runtime.TensorSpec{spec("windows", runtime.Float32, 1, 64)}, outputs: []runtime.TensorSpec{score},
			want: []string{`input "windows" is declared but the model has no such input`, `"window" float32 [1,64]`}},
		{name: "wrong input dimension", path: v1,
			inputs: []runtime.TensorSpec{spec("window", runtime.Float32, 1, 32)}, outputs: []runtime.TensorSpec{score},
			want: []string{`input "window"`, "[1,32]", "[1,64]", "dimension 1 is 64"}},
		{name: "wrong input rank", path: v1,
			inputs: []runtime.TensorSpec{spec("window", runtime.Float32, 64)}, outputs: []runtime.TensorSpec{score},
			want: []string{`input "window"`, "rank 1", "rank 2"}},
		{name: "wrong element type", path: v1,
			inputs: []runtime.TensorSpec{spec("window", runtime.Int64, 1, 64)}, outputs: []runtime.TensorSpec{score},
			want: []string{`input "window" is declared int64, the model's is float32`}},
		{name: "dynamic batch declared for a fixed model", path: v1,
			inputs:  []runtime.TensorSpec{spec("window", runtime.Float32, -1, 64)},
			outputs: []runtime.TensorSpec{spec("score", runtime.Float32, -1, 1)},
			want:    []string{`input "window"`, `output "score"`, "fixed at 1"}},
		{name: "wrong output name", path: v1,
			inputs: []runtime.TensorSpec{window}, outputs: []runtime.TensorSpec{spec("anomaly", runtime.Float32, 1, 1)},
			want: []string{`output "anomaly" is declared but the model has no such output`, `"score"`}},
		{name: "wrong output shape", path: v1,
			inputs: []runtime.TensorSpec{window}, outputs: []runtime.TensorSpec{spec("score", runtime.Float32, 1, 2)},
			want: []string{`output "score"`, "dimension 1 is 1"}},
		{name: "model input not declared", path: typesPath,
			inputs: typesIn[:1], outputs: typesOut,
			want: []string{`model input "x_float64" float64 [-1,2] is not declared`, `"x_bool"`}},
		{name: "no inputs", path: v1,
			outputs: []runtime.TensorSpec{score},
			want:    []string{"no inputs are declared"}},
		{name: "duplicate input", path: v1,
			inputs: []runtime.TensorSpec{window, window}, outputs: []runtime.TensorSpec{score},
			want: []string{`input "window" is declared twice`}},
		{name: "unsupported element type", path: v1,
			inputs: []runtime.TensorSpec{spec("window", "float16", 1, 64)}, outputs: []runtime.TensorSpec{score},
			want: []string{`"float16"`, "not support"}},
		{name: "zero dimension", path: v1,
			inputs: []runtime.TensorSpec{spec("window", runtime.Float32, 0, 64)}, outputs: []runtime.TensorSpec{score},
			want: []string{`input "window": dimension 0 is 0`}},
		{name: "scalar", path: v1,
			inputs: []runtime.TensorSpec{spec("window", runtime.Float32)}, outputs: []runtime.TensorSpec{score},
			want: []string{"scalar"}},
		{name: "unnamed output", path: v1,
			inputs: []runtime.TensorSpec{window}, outputs: []runtime.TensorSpec{spec("", runtime.Float32, 1, 1)},
			want: []string{"output #0 has no name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := runtime.Open(context.Background(), tt.path, tt.inputs, tt.outputs, runtime.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want ErrSpecMismatch")
			}
			if !errors.Is(err, runtime.ErrSpecMismatch) {
				t.Fatalf("Open = %v, want ErrSpecMismatch", err)
			}
			t.Log(err)
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q", want)
				}
			}
		})
	}
}

func TestRunInvalidInput(t *testing.T) {
	v1 := mustOpen(t, models.FileV1)
	batch := mustOpen(t, models.FileBatch)
	window := make([]float32, mlp.InputSize)
	tensor := func(shape []int64, n int) runtime.Tensor { return runtime.NewTensor(shape, make([]float32, n)) }
	tests := []struct {
		name    string
		session *runtime.Session
		inputs  map[string]runtime.Tensor
		want    []string
	}{
		{name: "nil request", session: v1, inputs: nil,
			want: []string{`input "window" float32 [1,64] is missing`}},
		{name: "misspelt name", session: v1,
			inputs: map[string]runtime.Tensor{"windows": runtime.NewTensor([]int64{1, 64}, window)},
			want:   []string{`input "window" float32 [1,64] is missing`, `unknown input "windows"`}},
		{name: "extra input", session: v1,
			inputs: map[string]runtime.Tensor{"window": runtime.NewTensor([]int64{1, 64}, window), "b": {}, "a": {}},
			want:   []string{`unknown input "a", "b" (the model takes "window" float32 [1,64])`}},
		{name: "wrong element type", session: v1,
			inputs: map[string]runtime.Tensor{"window": runtime.NewTensor([]int64{1, 64}, make([]int64, 64))},
			want:   []string{`input "window" is int64, the model takes float32`}},
		{name: "wrong rank", session: v1,
			inputs: map[string]runtime.Tensor{"window": runtime.NewTensor([]int64{64}, window)},
			want:   []string{`input "window" has shape [64] (rank 1), the model takes [1,64] (rank 2)`}},
		{name: "wrong dimension", session: v1,
			inputs: map[string]runtime.Tensor{"window": tensor([]int64{1, 32}, 32)},
			want:   []string{`input "window" has shape [1,32], the model takes [1,64]: dimension 1 must be 64`}},
		{name: "batch on a fixed model", session: v1,
			inputs: map[string]runtime.Tensor{"window": tensor([]int64{2, 64}, 128)},
			want:   []string{"dimension 0 must be 1"}},
		{name: "too few values", session: v1,
			inputs: map[string]runtime.Tensor{"window": tensor([]int64{1, 64}, 63)},
			want:   []string{`input "window" has 63 values, its shape [1,64] needs 64`}},
		{name: "too many values", session: v1,
			inputs: map[string]runtime.Tensor{"window": tensor([]int64{1, 64}, 65)},
			want:   []string{"65 values", "needs 64"}},
		{name: "no data", session: v1,
			inputs: map[string]runtime.Tensor{"window": {}},
			want:   []string{`input "window" has no data (want float32 [1,64])`}},
		{name: "nil data", session: v1,
			inputs: map[string]runtime.Tensor{"window": runtime.NewTensor[float32]([]int64{1, 64}, nil)},
			want:   []string{`input "window" has 0 values`}},
		{name: "zero batch", session: batch,
			inputs: map[string]runtime.Tensor{"window": tensor([]int64{0, 64}, 0)},
			want:   []string{`input "window" has shape [0,64]: dimension 0 is 0, it must be at least 1`}},
		{name: "negative batch", session: batch,
			inputs: map[string]runtime.Tensor{"window": tensor([]int64{-1, 64}, 64)},
			want:   []string{"dimension 0 is -1"}},
		{name: "huge batch", session: batch,
			inputs: map[string]runtime.Tensor{"window": tensor([]int64{1 << 60, 64}, 64)},
			want:   []string{`input "window"`, "more than"}},
		{name: "data length wrong for batch", session: batch,
			inputs: map[string]runtime.Tensor{"window": tensor([]int64{3, 64}, 128)},
			want:   []string{"128 values", "[3,64] needs 192"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.session.Run(context.Background(), tt.inputs)
			if !errors.Is(err, runtime.ErrInvalidInput) {
				t.Fatalf("Run = %v, %v; want ErrInvalidInput", out, err)
			}
			t.Log(err)
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q", want)
				}
			}
		})
	}
	// A rejected request leaves the session healthy.
	if _, err := v1.Run(context.Background(), windowInput(window, 1)); err != nil {
		t.Fatalf("valid request after invalid ones: %v", err)
	}
}

// TestRunElementTypes runs every supported element type through ONNX
// Runtime and back.
func TestRunElementTypes(t *testing.T) {
	initORT(t)
	path, in, out := typesModel(t)
	s, err := runtime.Open(context.Background(), path, in, out, runtime.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	shape := []int64{3, 2}
	inputs := map[string]runtime.Tensor{
		"x_float32": runtime.NewTensor(shape, []float32{1.5, -2, 3, 4, 5, 6}),
		"x_float64": runtime.NewTensor(shape, []float64{1e300, -2, 3, 4, 5, 0.25}),
		"x_int64":   runtime.NewTensor(shape, []int64{1 << 40, -2, 3, 4, 5, 6}),
		"x_int32":   runtime.NewTensor(shape, []int32{1 << 20, -2, 3, 4, 5, 6}),
		"x_uint8":   runtime.NewTensor(shape, []uint8{0, 1, 2, 253, 254, 255}),
		"x_bool":    runtime.NewTensor(shape, []bool{true, false, true, true, false, false}),
	}
	got, err := s.Run(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for name, tensor := range got {
		if !slices.Equal(tensor.Shape(), shape) {
			t.Errorf("%s shape = %v, want %v", name, tensor.Shape(), shape)
		}
	}
	checkData(t, "y_float32", got["y_float32"].Float32(), []float32{3, -4, 6, 8, 10, 12})
	checkData(t, "y_float64", got["y_float64"].Float64(), []float64{2e300, -4, 6, 8, 10, 0.5})
	checkData(t, "y_int64", got["y_int64"].Int64(), []int64{1 << 41, -4, 6, 8, 10, 12})
	checkData(t, "y_int32", got["y_int32"].Int32(), []int32{1 << 21, -4, 6, 8, 10, 12})
	checkData(t, "y_uint8", got["y_uint8"].Uint8(), []uint8{0, 1, 2, 253, 254, 255})
	checkData(t, "y_bool", got["y_bool"].Bool(), []bool{false, true, false, false, true, true})

	if d, ok := runtime.TensorData[int64](got["y_int64"]); !ok || len(d) != 6 {
		t.Errorf("TensorData[int64] = %v, %v", d, ok)
	}
	if d, ok := runtime.TensorData[float32](got["y_int64"]); ok || d != nil {
		t.Errorf("TensorData[float32] of an int64 tensor = %v, %v; want nil, false", d, ok)
	}
	if got["y_int64"].Float32() != nil {
		t.Error("Float32() of an int64 tensor is not nil")
	}
	if s := got["y_bool"].String(); s != "bool [3,2]" {
		t.Errorf("String = %q", s)
	}

	// Outputs may be a subset of the model's.
	sub, err := runtime.Open(context.Background(), path, in, out[2:3], runtime.Options{})
	if err != nil {
		t.Fatalf("Open with one output: %v", err)
	}
	defer sub.Close()
	got, err = sub.Run(context.Background(), inputs)
	if err != nil || len(got) != 1 || got["y_int64"].Len() != 6 {
		t.Fatalf("Run with one output = %v, %v; want only y_int64", got, err)
	}
}

// checkData compares output data exactly.
func checkData[T comparable](t *testing.T, name string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", name, got, want)
	}
}

func TestWarmUp(t *testing.T) {
	initORT(t)
	for _, file := range []string{models.FileV1, models.FileBatch} {
		s := mustOpen(t, file)
		d, err := s.WarmUp(context.Background(), nil)
		if err != nil {
			t.Fatalf("%s: WarmUp with zeros: %v", file, err)
		}
		t.Logf("%s: warm-up took %v", file, d)
		windows := randomWindows(rand.New(rand.NewPCG(5, 5)), 1)
		if _, err := s.WarmUp(context.Background(), windowInput(windows, 1)); err != nil {
			t.Fatalf("%s: WarmUp with a window: %v", file, err)
		}
		if _, err := s.WarmUp(context.Background(), windowInput(windows[:10], 1)); !errors.Is(err, runtime.ErrInvalidInput) {
			t.Errorf("%s: WarmUp with a bad window = %v, want ErrInvalidInput", file, err)
		}
	}
	path, in, out := typesModel(t)
	s, err := runtime.Open(context.Background(), path, in, out, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.WarmUp(context.Background(), nil); err != nil {
		t.Fatalf("types model: WarmUp with zeros: %v", err)
	}
}

func TestRunContext(t *testing.T) {
	s := mustOpen(t, models.FileV1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	window := make([]float32, mlp.InputSize)
	if _, err := s.Run(ctx, windowInput(window, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context = %v, want context.Canceled", err)
	}
	// A context that is never cancelled takes the path with run options.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.Run(ctx, windowInput(window, 1)); err != nil {
		t.Errorf("Run with a live context: %v", err)
	}
}

// TestRunCancelledMidway cancels a run of a model that takes seconds and
// expects ONNX Runtime to stop between operators.
func TestRunCancelledMidway(t *testing.T) {
	initORT(t)
	path, in, out := slowModel(t, 2000)
	s, err := runtime.Open(context.Background(), path, in, out, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFor(t, func() bool { return s.Holds() == 1 })
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	_, err = s.Run(ctx, slowInput())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run cancelled midway = %v, want context.Canceled", err)
	}
	t.Logf("Run returned %v after cancellation, %v after start: %v", time.Since(start)-20*time.Millisecond, time.Since(start), err)

	// The terminate flag belongs to that run only.
	small, in, out := slowModel(t, 2)
	s2, err := runtime.Open(context.Background(), small, in, out, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Run(context.Background(), slowInput())
	if err != nil {
		t.Fatalf("Run after a cancelled one: %v", err)
	}
	if !slices.Equal(got["y"].Float32(), slowInput()["x"].Float32()) {
		t.Error("slow model output differs from its input")
	}
}

// waitFor polls cond until it holds, failing after a generous time.
func waitFor(t *testing.T, cond func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Error("condition not reached in 30s")
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func TestConcurrentRun(t *testing.T) {
	for _, file := range []string{models.FileV1, models.FileBatch} {
		t.Run(file, func(t *testing.T) {
			s := mustOpen(t, file)
			ref := mlp.NewWeights(models.SeedV1)
			var wg sync.WaitGroup
			var failures atomic.Int64
			for g := range 8 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 11))
					for i := range 200 {
						batch := 1
						if file == models.FileBatch {
							batch = 1 + (g+i)%4
						}
						windows := randomWindows(rng, batch)
						out, err := s.Run(context.Background(), windowInput(windows, batch))
						if err != nil {
							failures.Add(1)
							t.Errorf("goroutine %d run %d: %v", g, i, err)
							return
						}
						want := mlp.Reference(ref, windows, batch)
						for j, got := range out[mlp.OutputName].Float32() {
							if math.Abs(float64(got-want[j])) > tolerance {
								failures.Add(1)
								t.Errorf("goroutine %d run %d: score[%d] = %v, want %v", g, i, j, got, want[j])
								return
							}
						}
					}
				})
			}
			wg.Wait()
			if n := failures.Load(); n > 0 {
				t.Fatalf("%d goroutines failed", n)
			}
		})
	}
}

// TestCloseWaitsForInFlight closes a session while a long Run is in
// progress: the Run must complete with the right result, and Close must not
// return while the Run still holds the session.
func TestCloseWaitsForInFlight(t *testing.T) {
	initORT(t)
	path, in, out := slowModel(t, 600)
	s, err := runtime.Open(context.Background(), path, in, out, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	input := slowInput()
	type result struct {
		out map[string]runtime.Tensor
		err error
	}
	runDone := make(chan result, 1)
	go func() {
		out, err := s.Run(context.Background(), input)
		runDone <- result{out, err}
	}()
	waitFor(t, func() bool { return s.Holds() == 1 })
	closeDone := make(chan error, 1)
	go func() { closeDone <- s.Close() }()
	waitFor(t, s.Closing)
	if _, err := s.Run(context.Background(), input); !errors.Is(err, runtime.ErrClosed) {
		t.Errorf("Run while closing = %v, want ErrClosed", err)
	}
	// Holds only fall once Close has begun, so a Close seen finished while
	// a hold is still counted returned too early.
	var closeErr error
	for closed := false; !closed; {
		select {
		case closeErr = <-closeDone:
			closed = true
		case <-time.After(time.Millisecond):
		}
		if h := s.Holds(); closed && h != 0 {
			t.Fatalf("Close returned with %d Runs in flight", h)
		}
	}
	if closeErr != nil {
		t.Fatalf("Close: %v", closeErr)
	}
	r := <-runDone
	if r.err != nil {
		t.Fatalf("in-flight Run: %v", r.err)
	}
	if !slices.Equal(r.out["y"].Float32(), input["x"].Float32()) {
		t.Error("in-flight Run returned a wrong result")
	}
}

func TestCloseTwiceAndRunAfterClose(t *testing.T) {
	initORT(t)
	in, out := windowSpecs(1)
	s, err := runtime.Open(context.Background(), examplePath(models.FileV1), in, out, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Errorf("concurrent Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	window := make([]float32, mlp.InputSize)
	if _, err := s.Run(context.Background(), windowInput(window, 1)); !errors.Is(err, runtime.ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if _, err := s.WarmUp(context.Background(), nil); !errors.Is(err, runtime.ErrClosed) {
		t.Errorf("WarmUp after Close = %v, want ErrClosed", err)
	}
}

// TestCUDAFallback asks for CUDA. With the CPU build of ONNX Runtime the
// session must still open, on the CPU, and say why.
func TestCUDAFallback(t *testing.T) {
	initORT(t)
	in, out := windowSpecs(1)
	s, err := runtime.Open(context.Background(), examplePath(models.FileV1), in, out,
		runtime.Options{Provider: runtime.ProviderCUDA, GPUMemLimitBytes: 256 << 20})
	if err != nil {
		t.Fatalf("Open with CUDA: %v", err)
	}
	defer s.Close()
	switch s.Provider() {
	case runtime.ProviderCPU:
		if !strings.Contains(s.ProviderNote(), "asked for CUDA, running on CPU") {
			t.Errorf("ProviderNote = %q, want the reason for the CPU fallback", s.ProviderNote())
		}
		t.Logf("fell back: %s", s.ProviderNote())
	case runtime.ProviderCUDA:
		if s.ProviderNote() != "" {
			t.Errorf("ProviderNote = %q on CUDA", s.ProviderNote())
		}
		t.Log("running on CUDA")
	default:
		t.Fatalf("Provider = %q", s.Provider())
	}
	windows := randomWindows(rand.New(rand.NewPCG(9, 9)), 1)
	got, err := s.Run(context.Background(), windowInput(windows, 1))
	if err != nil {
		t.Fatal(err)
	}
	checkScores(t, got, mlp.NewWeights(models.SeedV1), windows, 1)
}

func TestOpenOptions(t *testing.T) {
	initORT(t)
	in, out := windowSpecs(1)
	path := examplePath(models.FileV1)
	for _, bad := range []runtime.Options{
		{IntraOpThreads: -1},
		{InterOpThreads: -2},
		{GPUMemLimitBytes: -1},
		{Provider: "tpu"},
	} {
		if _, err := runtime.Open(context.Background(), path, in, out, bad); !errors.Is(err, runtime.ErrInvalidOptions) {
			t.Errorf("Open with %+v = %v, want ErrInvalidOptions", bad, err)
		} else {
			t.Log(err)
		}
	}
	s, err := runtime.Open(context.Background(), path, in, out,
		runtime.Options{IntraOpThreads: 2, InterOpThreads: 2, EnableCPUArena: true, Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatalf("Open with 2 threads and the arena: %v", err)
	}
	defer s.Close()
	if _, err := s.WarmUp(context.Background(), nil); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := runtime.Open(ctx, path, in, out, runtime.Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestInspect(t *testing.T) {
	initORT(t)
	for _, tc := range []struct {
		file  string
		batch int64
	}{{models.FileV1, 1}, {models.FileBatch, runtime.Dynamic}} {
		in, out, err := runtime.Inspect(context.Background(), examplePath(tc.file))
		if err != nil {
			t.Fatalf("Inspect %s: %v", tc.file, err)
		}
		wantIn, wantOut := windowSpecs(tc.batch)
		if !equalSpecs(in, wantIn) || !equalSpecs(out, wantOut) {
			t.Errorf("Inspect %s = %v, %v; want %v, %v", tc.file, in, out, wantIn, wantOut)
		}
	}
	if _, _, err := runtime.Inspect(context.Background(), examplePath(models.FileBroken)); !errors.Is(err, runtime.ErrLoad) {
		t.Errorf("Inspect broken = %v, want ErrLoad", err)
	}
}

func equalSpecs(a, b []runtime.TensorSpec) bool {
	return slices.EqualFunc(a, b, func(x, y runtime.TensorSpec) bool {
		return x.Name == y.Name && x.ElemType == y.ElemType && slices.Equal(x.Shape, y.Shape)
	})
}

// TestOpenWithoutLibrary checks the message when Init was not called.
func TestOpenWithoutLibrary(t *testing.T) {
	initORT(t)
	if err := runtime.Shutdown(); err != nil {
		t.Fatal(err)
	}
	in, out := windowSpecs(1)
	_, err := runtime.Open(context.Background(), examplePath(models.FileV1), in, out, runtime.Options{})
	if !errors.Is(err, runtime.ErrLoad) || !strings.Contains(err.Error(), "runtime.Init") {
		t.Fatalf("Open without ONNX Runtime = %v, want ErrLoad mentioning runtime.Init", err)
	}
	t.Log(err)
}

// TestRunResultsAreNotReused: runs reuse their ONNX Runtime tensors, so a
// result must be a copy that later runs, with or without a cancellable
// context, do not overwrite.
func TestRunResultsAreNotReused(t *testing.T) {
	s := mustOpen(t, models.FileV1)
	w := mlp.NewWeights(models.SeedV1)
	rng := rand.New(rand.NewPCG(11, 12))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type kept struct {
		windows []float32
		out     map[string]runtime.Tensor
	}
	var all []kept
	for i := range 50 {
		windows := randomWindows(rng, 1)
		c := context.Background()
		if i%2 == 1 {
			c = ctx
		}
		out, err := s.Run(c, windowInput(windows, 1))
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		all = append(all, kept{windows, out})
	}
	for _, k := range all {
		checkScores(t, k.out, w, k.windows, 1)
	}
}
