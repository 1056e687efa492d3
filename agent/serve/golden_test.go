package serve

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
// The files document the wire formats clients depend on; a change to one
// is a change to the protocol and should be deliberate.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, got, "", "  "); err != nil {
		t.Fatalf("%s: not JSON: %v: %s", name, err, got)
	}
	pretty.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestWireFormats -update to create it)", err)
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Errorf("%s changed:\n%s\nwant:\n%s", name, pretty.Bytes(), want)
	}
}

func TestWireFormats(t *testing.T) {
	info := ModelInfo{
		Name:    "vibration",
		Version: "1.2.0",
		Inputs:  []runtime.TensorSpec{{Name: "window", ElemType: runtime.Float32, Shape: []int64{-1, 64}}},
		Outputs: []runtime.TensorSpec{{Name: "score", ElemType: runtime.Float32, Shape: []int64{-1, 1}}, {Name: "flags", ElemType: runtime.Bool, Shape: []int64{-1}}},
	}
	outs := map[string]runtime.Tensor{
		"score": runtime.NewTensor([]int64{2, 1}, []float32{0.93, 1e-7}),
		"flags": runtime.NewTensor([]int64{2}, []bool{true, false}),
	}

	b, err := appendInferResponse(nil, "r-17", info, "1.2.0", outs, nil)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "infer-response.json", b)

	b, err = appendInferResponse(nil, "", info, "1.2.0", outs, []string{"score"})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "infer-response-picked.json", b)

	b, _ = json.Marshal(mqttError{ID: "r-18", ModelName: "vibration", Error: `invalid inference request: input "window" has shape [1,32], the model takes [-1,64]: dimension 1 must be 64`, Code: 400})
	golden(t, "mqtt-error-reply.json", b)

	b, err = appendResult(nil, info, "1.2.0", "factory/line1/vibration/s7", outs)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "binding-result.json", b)

	b, _ = json.Marshal(bindingError{Model: "vibration", SourceTopic: "factory/line1/vibration/s7", Error: `invalid inference request: input "window" takes a multiple of 64 values (shape [-1,64]), got 3`, Code: 400})
	golden(t, "binding-error.json", b)

	b, _ = json.Marshal(newModelMetadata(info))
	golden(t, "model-metadata.json", b)
}
