// Package mlp defines the small multilayer perceptron of the example
// vibration-anomaly models: its deterministic weights, its ONNX graph, and a
// pure-Go forward pass that tests, the demo and the factory simulator use as
// the reference for what ONNX Runtime must return.
//
// The network scores one window of [InputSize] float32 vibration samples:
//
//	score = Sigmoid(Relu(window · W1 + B1) · W2 + B2)
//
// with W1 [InputSize×HiddenSize], B1 [HiddenSize], W2 [HiddenSize×1] and B2
// [1]. The weights are random, drawn from a seeded generator, so the score
// means nothing about real machines; what matters is that it is
// deterministic and differs between seeds, which makes model versions
// distinguishable by their outputs.
package mlp

import (
	"fmt"
	"math"

	"github.com/modelfleet/modelfleet/examples/models/onnxpb"
)

// Sizes and tensor names of the network.
const (
	InputSize  = 64 // samples per window
	HiddenSize = 16 // hidden units

	InputName  = "window" // graph input, float32 [batch, InputSize]
	OutputName = "score"  // graph output, float32 [batch, 1], in (0, 1)
)

// ONNX versions the models are written with.
const (
	IRVersion = 8  // ONNX IR version (ONNX 1.10 and later read it)
	Opset     = 13 // ai.onnx operator set
)

// Weights are the parameters of the network, row-major.
type Weights struct {
	W1 []float32 // InputSize×HiddenSize: W1[i*HiddenSize+j] links sample i to hidden unit j
	B1 []float32 // HiddenSize
	W2 []float32 // HiddenSize×1
	B2 []float32 // 1
}

// NewWeights draws weights from a splitmix64 generator seeded with seed, in
// the order W1, B1, W2, B2. Every weight is a multiple of a power of two
// computed with exact integer arithmetic, so the result is bit-for-bit the
// same on every platform and Go version, and so are the generated model
// files. W1 lies in [-1/4, 1/4), B1 and B2 in [-1/8, 1/8), W2 in [-1/2, 1/2).
func NewWeights(seed uint64) *Weights {
	g := splitmix64{state: seed}
	w := &Weights{
		W1: make([]float32, InputSize*HiddenSize),
		B1: make([]float32, HiddenSize),
		W2: make([]float32, HiddenSize),
		B2: make([]float32, 1),
	}
	fill := func(dst []float32, halfRangeLog2 int) {
		for i := range dst {
			dst[i] = g.symmetric(halfRangeLog2)
		}
	}
	fill(w.W1, -2)
	fill(w.B1, -3)
	fill(w.W2, -1)
	fill(w.B2, -3)
	return w
}

// Reference computes the scores of batch windows laid out one after another
// in input (len(input) must be batch*InputSize) as ONNX Runtime does: each
// intermediate tensor rounded to float32. Dot products are summed in float64,
// so results agree with ONNX Runtime to about 1e-6, not bit for bit.
// Reference panics if len(input) != batch*InputSize.
func Reference(w *Weights, input []float32, batch int) []float32 {
	if batch < 0 || len(input) != batch*InputSize {
		panic(fmt.Sprintf("mlp.Reference: %d input values for batch %d, want %d", len(input), batch, batch*InputSize))
	}
	scores := make([]float32, batch)
	hidden := make([]float32, HiddenSize)
	for n := range batch {
		x := input[n*InputSize : (n+1)*InputSize]
		for j := range hidden {
			var dot float64
			for i, xi := range x {
				dot += float64(xi) * float64(w.W1[i*HiddenSize+j])
			}
			hidden[j] = max(float32(dot)+w.B1[j], 0)
		}
		var dot float64
		for j, h := range hidden {
			dot += float64(h) * float64(w.W2[j])
		}
		z := float32(dot) + w.B2[0]
		scores[n] = float32(1 / (1 + math.Exp(-float64(z))))
	}
	return scores
}

// ModelSpec describes one ONNX model of the network.
type ModelSpec struct {
	Weights *Weights
	// DynamicBatch declares the batch dimension of input and output as the
	// symbolic "batch"; otherwise it is fixed at 1.
	DynamicBatch bool
	// ModelVersion is stored as ModelProto.model_version.
	ModelVersion int64
	// Doc is stored as the model's doc_string.
	Doc string
}

// Model returns the ONNX model of the network:
//
//	window ─MatMul(fc1.weight)─Add(fc1.bias)─Relu─MatMul(fc2.weight)─Add(fc2.bias)─Sigmoid─▶ score
func Model(spec ModelSpec) *onnxpb.Model {
	batch := onnxpb.Dim{Value: 1}
	if spec.DynamicBatch {
		batch = onnxpb.Dim{Param: "batch"}
	}
	w := spec.Weights
	node := func(op string, in []string, out string) onnxpb.Node {
		return onnxpb.Node{Name: out, OpType: op, Inputs: in, Outputs: []string{out}}
	}
	return &onnxpb.Model{
		IRVersion:    IRVersion,
		OpsetImports: []onnxpb.OpsetID{{Version: Opset}},
		ProducerName: "modelfleet examples/models",
		Domain:       "io.modelfleet.examples",
		ModelVersion: spec.ModelVersion,
		DocString:    spec.Doc,
		Graph: onnxpb.Graph{
			Name: "vibration_anomaly",
			Nodes: []onnxpb.Node{
				node("MatMul", []string{InputName, "fc1.weight"}, "fc1.matmul"),
				node("Add", []string{"fc1.matmul", "fc1.bias"}, "fc1.add"),
				node("Relu", []string{"fc1.add"}, "fc1.relu"),
				node("MatMul", []string{"fc1.relu", "fc2.weight"}, "fc2.matmul"),
				node("Add", []string{"fc2.matmul", "fc2.bias"}, "fc2.add"),
				node("Sigmoid", []string{"fc2.add"}, OutputName),
			},
			Initializers: []onnxpb.Tensor{
				onnxpb.FloatTensor("fc1.weight", []int64{InputSize, HiddenSize}, w.W1),
				onnxpb.FloatTensor("fc1.bias", []int64{HiddenSize}, w.B1),
				onnxpb.FloatTensor("fc2.weight", []int64{HiddenSize, 1}, w.W2),
				onnxpb.FloatTensor("fc2.bias", []int64{1}, w.B2),
			},
			Inputs:  []onnxpb.ValueInfo{onnxpb.TensorInfo(InputName, onnxpb.Float, batch, onnxpb.Dim{Value: InputSize})},
			Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo(OutputName, onnxpb.Float, batch, onnxpb.Dim{Value: 1})},
		},
	}
}

// splitmix64 is Steele, Lea and Flood's SplitMix64 generator. It is spelled
// out here because the model files must not change when math/rand does.
type splitmix64 struct{ state uint64 }

func (g *splitmix64) next() uint64 {
	g.state += 0x9e3779b97f4a7c15
	z := g.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// symmetric returns a uniform value in [-2^e, 2^e) with 24 random bits: an
// integer in [-2^23, 2^23) scaled by a power of two, which float32
// represents exactly.
func (g *splitmix64) symmetric(e int) float32 {
	k := int32(g.next()>>40) - 1<<23
	return float32(math.Ldexp(float64(k), e-23))
}
