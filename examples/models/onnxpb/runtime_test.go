package onnxpb_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/examples/models/onnxpb"
)

// TestRuntimeReadsAttributesAndInt64 has ONNX Runtime evaluate a model that
// uses float, int and ints attributes and an int64 initializer, which the
// example MLP does not:
//
//	y = Reshape(Transpose(Gemm(x, w, c, alpha=2, beta=0.5, transB=1), perm=[1,0]), [8])
func TestRuntimeReadsAttributesAndInt64(t *testing.T) {
	runtimetest.Init(t)
	x := []float32{1, 2, 3, 4, 5, 6}                   // [2,3]
	w := []float32{1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1} // [4,3], used transposed
	c := []float32{10, 20, 30, 40}                     // [4]
	m := &onnxpb.Model{
		IRVersion:    8,
		OpsetImports: []onnxpb.OpsetID{{Version: 13}},
		Graph: onnxpb.Graph{
			Name: "attrs",
			Nodes: []onnxpb.Node{
				{OpType: "Gemm", Inputs: []string{"x", "w", "c"}, Outputs: []string{"g"}, Attributes: []onnxpb.Attribute{
					{Name: "alpha", Type: onnxpb.AttrFloat, F: 2},
					{Name: "beta", Type: onnxpb.AttrFloat, F: 0.5},
					{Name: "transB", Type: onnxpb.AttrInt, I: 1},
				}},
				{OpType: "Transpose", Inputs: []string{"g"}, Outputs: []string{"t"}, Attributes: []onnxpb.Attribute{
					{Name: "perm", Type: onnxpb.AttrInts, Ints: []int64{1, 0}},
				}},
				{OpType: "Reshape", Inputs: []string{"t", "shape"}, Outputs: []string{"y"}},
			},
			Initializers: []onnxpb.Tensor{
				onnxpb.FloatTensor("w", []int64{4, 3}, w),
				onnxpb.FloatTensor("c", []int64{4}, c),
				{Name: "shape", DataType: onnxpb.Int64, Dims: []int64{1}, Int64Data: []int64{8}},
			},
			Inputs:  []onnxpb.ValueInfo{onnxpb.TensorInfo("x", onnxpb.Float, onnxpb.Dims(2, 3)...)},
			Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Float, onnxpb.Dims(8)...)},
		},
	}
	path := filepath.Join(t.TempDir(), "attrs.onnx")
	if err := os.WriteFile(path, m.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}

	// g[i][j] = 2 * sum_k x[i][k] w[j][k] + 0.5 c[j]; y = g transposed, flattened.
	var want []float32
	for j := range 4 {
		for i := range 2 {
			var dot float32
			for k := range 3 {
				dot += x[i*3+k] * w[j*3+k]
			}
			want = append(want, 2*dot+0.5*c[j])
		}
	}

	opts, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	in, err := ort.NewTensor(ort.NewShape(2, 3), x)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Destroy()
	out, err := ort.NewEmptyTensor[float32](ort.NewShape(8))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Destroy()
	s, err := ort.NewAdvancedSession(path, []string{"x"}, []string{"y"}, []ort.Value{in}, []ort.Value{out}, opts)
	if err != nil {
		t.Fatalf("ONNX Runtime refused the model: %v", err)
	}
	defer s.Destroy()
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	for i, got := range out.GetData() {
		if math.Abs(float64(got-want[i])) > 1e-5 {
			t.Errorf("y[%d] = %g, want %g", i, got, want[i])
		}
	}
}
