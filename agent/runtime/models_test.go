package runtime_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/examples/models/onnxpb"
)

// This file provides the models the tests run: the committed examples and
// a few built here with onnxpb for what the examples do not cover.

// initORT loads ONNX Runtime for a test, if it is not loaded yet, and then
// unloads it when the test ends, after the test's sessions are closed
// (cleanups run last-in first-out). The library tests need a process
// without ONNX Runtime; this keeps them passing in any order (go test
// -shuffle=on).
func initORT(tb testing.TB) {
	tb.Helper()
	if _, loaded := runtime.Loaded(); loaded {
		return // whoever loaded it unloads it
	}
	runtimetest.Init(tb)
	tb.Cleanup(func() {
		if err := runtime.Shutdown(); err != nil {
			tb.Errorf("unload ONNX Runtime: %v", err)
		}
	})
}

// examplePath returns the path of an example model file.
func examplePath(name string) string {
	return filepath.Join("..", "..", "examples", "models", name)
}

// windowSpecs are the declared tensors of the vibration-anomaly models with
// the given batch dimension (1, or runtime.Dynamic for the batch model).
func windowSpecs(batch int64) (inputs, outputs []runtime.TensorSpec) {
	return []runtime.TensorSpec{{Name: mlp.InputName, ElemType: runtime.Float32, Shape: []int64{batch, mlp.InputSize}}},
		[]runtime.TensorSpec{{Name: mlp.OutputName, ElemType: runtime.Float32, Shape: []int64{batch, 1}}}
}

// mustOpen loads ONNX Runtime and opens an example model with its usual
// specs and default options, closing it at the end of the test.
func mustOpen(tb testing.TB, file string) *runtime.Session {
	tb.Helper()
	initORT(tb)
	batch := int64(1)
	if file == models.FileBatch {
		batch = runtime.Dynamic
	}
	in, out := windowSpecs(batch)
	s, err := runtime.Open(context.Background(), examplePath(file), in, out, runtime.Options{})
	if err != nil {
		tb.Fatalf("Open %s: %v", file, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close %s: %v", file, err)
		}
	})
	return s
}

// randomWindows returns batch windows of random samples in [-1, 1).
func randomWindows(rng *rand.Rand, batch int) []float32 {
	w := make([]float32, batch*mlp.InputSize)
	for i := range w {
		w[i] = rng.Float32()*2 - 1
	}
	return w
}

// windowInput is the request map of a batch of windows.
func windowInput(data []float32, batch int) map[string]runtime.Tensor {
	return map[string]runtime.Tensor{
		mlp.InputName: runtime.NewTensor([]int64{int64(batch), mlp.InputSize}, data),
	}
}

// writeModel writes m to a temporary file and returns its path.
func writeModel(tb testing.TB, name string, m *onnxpb.Model) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, m.Marshal(), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// typesModel has one input and one output per supported element type, each
// [batch,2]: x_T → y_T with y = x+x for the numeric types (uint8 excepted:
// ONNX Runtime's CPU Add lacks it, so y = x), and y = Not(x) for bool.
func typesModel(tb testing.TB) (path string, inputs, outputs []runtime.TensorSpec) {
	tb.Helper()
	elem := map[runtime.ElemType]onnxpb.DataType{
		runtime.Float32: onnxpb.Float, runtime.Float64: onnxpb.Double, runtime.Int64: onnxpb.Int64,
		runtime.Int32: onnxpb.Int32, runtime.Uint8: onnxpb.Uint8, runtime.Bool: onnxpb.Bool,
	}
	g := onnxpb.Graph{Name: "types"}
	for _, t := range runtime.ElemTypes() {
		x, y := "x_"+string(t), "y_"+string(t)
		var node onnxpb.Node
		switch t {
		case runtime.Uint8:
			node = onnxpb.Node{OpType: "Identity", Inputs: []string{x}, Outputs: []string{y}}
		case runtime.Bool:
			node = onnxpb.Node{OpType: "Not", Inputs: []string{x}, Outputs: []string{y}}
		default:
			node = onnxpb.Node{OpType: "Add", Inputs: []string{x, x}, Outputs: []string{y}}
		}
		g.Nodes = append(g.Nodes, node)
		shape := []onnxpb.Dim{{Param: "batch"}, {Value: 2}}
		g.Inputs = append(g.Inputs, onnxpb.TensorInfo(x, elem[t], shape...))
		g.Outputs = append(g.Outputs, onnxpb.TensorInfo(y, elem[t], shape...))
		inputs = append(inputs, runtime.TensorSpec{Name: x, ElemType: t, Shape: []int64{runtime.Dynamic, 2}})
		outputs = append(outputs, runtime.TensorSpec{Name: y, ElemType: t, Shape: []int64{runtime.Dynamic, 2}})
	}
	m := &onnxpb.Model{IRVersion: mlp.IRVersion, OpsetImports: []onnxpb.OpsetID{{Version: mlp.Opset}}, Graph: g}
	return writeModel(tb, "types.onnx", m), inputs, outputs
}

// slowSize is the side of the square matrices of slowModel.
const slowSize = 256

// slowModel multiplies a [slowSize,slowSize] input by the identity matrix
// nodes times: each node is about 33 MFLOP, so the run lasts long enough to
// be cancelled or closed in the middle, and the output equals the input.
func slowModel(tb testing.TB, nodes int) (path string, inputs, outputs []runtime.TensorSpec) {
	tb.Helper()
	eye := make([]float32, slowSize*slowSize)
	for i := range slowSize {
		eye[i*slowSize+i] = 1
	}
	g := onnxpb.Graph{
		Name:         "slow",
		Initializers: []onnxpb.Tensor{onnxpb.FloatTensor("eye", []int64{slowSize, slowSize}, eye)},
		Inputs:       []onnxpb.ValueInfo{onnxpb.TensorInfo("x", onnxpb.Float, onnxpb.Dims(slowSize, slowSize)...)},
		Outputs:      []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Float, onnxpb.Dims(slowSize, slowSize)...)},
	}
	prev := "x"
	for i := range nodes {
		out := "m" + strconv.Itoa(i)
		if i == nodes-1 {
			out = "y"
		}
		g.Nodes = append(g.Nodes, onnxpb.Node{OpType: "MatMul", Inputs: []string{prev, "eye"}, Outputs: []string{out}})
		prev = out
	}
	m := &onnxpb.Model{IRVersion: mlp.IRVersion, OpsetImports: []onnxpb.OpsetID{{Version: mlp.Opset}}, Graph: g}
	spec := []int64{slowSize, slowSize}
	return writeModel(tb, "slow.onnx", m),
		[]runtime.TensorSpec{{Name: "x", ElemType: runtime.Float32, Shape: spec}},
		[]runtime.TensorSpec{{Name: "y", ElemType: runtime.Float32, Shape: spec}}
}

// slowInput is a request for slowModel.
func slowInput() map[string]runtime.Tensor {
	x := make([]float32, slowSize*slowSize)
	for i := range x {
		x[i] = float32(i % 7)
	}
	return map[string]runtime.Tensor{"x": runtime.NewTensor([]int64{slowSize, slowSize}, x)}
}
