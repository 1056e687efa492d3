package sim

import (
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/examples/models/onnxpb"
	"github.com/modelfleet/modelfleet/internal/atomicfile"
)

// paddedModel returns the example vibration model with an unused constant
// of pseudo-random bytes, sized so the whole file is close to size bytes
// (within a few bytes: the constant's length is a multiple of 4 and
// protobuf length prefixes vary). The result is a real ONNX model, so the
// release push inspects it like any other, and random, so no layer below
// (S3, page cache, compression) can shortcut it. seed picks the content.
func paddedModel(seed uint64, size int64) []byte {
	base := mlp.Model(mlp.ModelSpec{Weights: mlp.NewWeights(1), ModelVersion: 1})
	baseLen := int64(len(base.Marshal()))
	// Tag, length prefixes and the tensor's name, dims and type take well
	// under 64 bytes around the padding itself.
	pad := max(size-baseLen-64, 4) / 4 * 4
	raw := make([]byte, pad)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(raw); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			raw[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(raw) / 8 * 8; i < len(raw); i++ {
		raw[i] = byte(r.Uint32())
	}
	base.Graph.Initializers = append(base.Graph.Initializers, onnxpb.Tensor{
		Name: "padding", DataType: onnxpb.Float, Dims: []int64{int64(len(raw) / 4)}, RawData: raw,
	})
	return base.Marshal()
}

// writeArtifact writes a padded model of about size bytes to path and
// returns its exact size.
func writeArtifact(path string, seed uint64, size int64) (int64, error) {
	data := paddedModel(seed, size)
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return 0, fmt.Errorf("write artifact %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil {
		return fi.Size(), nil
	}
	return int64(len(data)), nil
}
