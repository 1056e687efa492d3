// Package models holds the example ONNX models of modelfleet, as files in
// this directory, and the catalog that generates them (see README.md).
//
// The models are written by Go code rather than exported from a training
// framework, so they can be rebuilt anywhere without Python; a test checks
// that the committed files match the generator and that ONNX Runtime loads
// them and agrees with the pure-Go reference in package mlp.
package models

//go:generate go run ./gen -out .

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/examples/models/onnxpb"
)

// File names of the example models in this directory.
const (
	FileV1     = "vibration-anomaly-v1.onnx"
	FileV2     = "vibration-anomaly-v2.onnx"
	FileBatch  = "vibration-anomaly-batch.onnx"
	FileBroken = "broken.onnx"
	// FileV2Samples is v2 with its input renamed SamplesInputName: a release
	// that changed its input contract, so clients that still send
	// mlp.InputName get invalid-input errors.
	FileV2Samples = "vibration-anomaly-v2-samples.onnx"
)

// SamplesInputName is the input name of FileV2Samples.
const SamplesInputName = "samples"

// Weight seeds of the example models (see mlp.NewWeights). The batch model
// shares version 1's weights.
const (
	SeedV1 uint64 = 1
	SeedV2 uint64 = 2
)

// File is one generated model file.
type File struct {
	Name  string        // file name in this directory
	Model *onnxpb.Model // its content
}

// Files returns the catalog of example models, in a fixed order.
func Files() []File {
	v1 := mlp.NewWeights(SeedV1)
	return []File{
		{FileV1, mlp.Model(mlp.ModelSpec{
			Weights:      v1,
			ModelVersion: 1,
			Doc:          "vibration-anomaly v1: scores a window of 64 float32 vibration samples, input window [1,64], output score [1,1] in (0,1).",
		})},
		{FileV2, mlp.Model(mlp.ModelSpec{
			Weights:      mlp.NewWeights(SeedV2),
			ModelVersion: 2,
			Doc:          "vibration-anomaly v2: same network as v1 with other weights, input window [1,64], output score [1,1] in (0,1).",
		})},
		{FileBatch, mlp.Model(mlp.ModelSpec{
			Weights:      v1,
			DynamicBatch: true,
			ModelVersion: 1,
			Doc:          "vibration-anomaly v1 with a dynamic batch dimension: input window [batch,64], output score [batch,1].",
		})},
		{FileBroken, broken()},
		{FileV2Samples, renamedInput(SeedV2, SamplesInputName)},
	}
}

// broken returns a model that is well-formed protobuf with the inputs and
// outputs of v1, but that ONNX Runtime refuses at session creation: the
// first MatMul multiplies the [1,64] window by a [32,16] weight, so shape
// inference fails. It stands for a bad export that passes every check
// before the runtime (signature, digest, size).
func broken() *onnxpb.Model {
	m := mlp.Model(mlp.ModelSpec{
		Weights:      mlp.NewWeights(SeedV1),
		ModelVersion: 3,
		Doc:          "broken: vibration-anomaly with a fc1.weight of shape [32,16] that cannot multiply the [1,64] window; ONNX Runtime must reject it.",
	})
	w1 := &m.Graph.Initializers[0]
	w1.Dims = []int64{32, mlp.HiddenSize}
	w1.FloatData = w1.FloatData[:32*mlp.HiddenSize]
	return m
}

// renamedInput returns the network with the weights of seed whose input is
// called name instead of mlp.InputName.
func renamedInput(seed uint64, name string) *onnxpb.Model {
	m := mlp.Model(mlp.ModelSpec{
		Weights:      mlp.NewWeights(seed),
		ModelVersion: 2,
		Doc:          "vibration-anomaly v2 with its input renamed " + name + ": input " + name + " [1,64], output score [1,1]; requests that send window fail.",
	})
	m.Graph.Inputs[0].Name = name
	for i := range m.Graph.Nodes {
		for j, in := range m.Graph.Nodes[i].Inputs {
			if in == mlp.InputName {
				m.Graph.Nodes[i].Inputs[j] = name
			}
		}
	}
	return m
}

// WriteAll writes every file of the catalog into dir.
func WriteAll(dir string) error {
	for _, f := range Files() {
		path := filepath.Join(dir, f.Name)
		if err := os.WriteFile(path, f.Model.Marshal(), 0o644); err != nil {
			return fmt.Errorf("write model: %w", err)
		}
	}
	return nil
}
