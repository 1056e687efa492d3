package models_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
)

// tolerance is how far ONNX Runtime's scores may be from mlp.Reference:
// both round to float32 after every operator, but sum in different orders.
const tolerance = 1e-5

// TestFilesUpToDate regenerates the models and compares them with the
// committed files byte for byte.
func TestFilesUpToDate(t *testing.T) {
	dir := t.TempDir()
	if err := models.WriteAll(dir); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range models.Files() {
		names = append(names, f.Name)
		want, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.Name)
		if err != nil {
			t.Errorf("%s: %v; run \"go generate ./examples/models\"", f.Name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generator's output; run \"go generate ./examples/models\"", f.Name)
		}
	}
	committed, err := filepath.Glob("*.onnx")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range committed {
		if !slices.Contains(names, name) {
			t.Errorf("%s is not in models.Files(): remove it or add it to the catalog", name)
		}
	}
}

// TestFilesAreWellFormedProtobuf walks every file's top-level fields, so
// that broken.onnx is known to fail in ONNX Runtime for its graph, not its
// encoding.
func TestFilesAreWellFormedProtobuf(t *testing.T) {
	for _, f := range models.Files() {
		b := f.Model.Marshal()
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				t.Fatalf("%s: bad tag: %v", f.Name, protowire.ParseError(n))
			}
			b = b[n:]
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				t.Fatalf("%s: field %d: %v", f.Name, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
}

// newSessionOptions returns options for a deterministic, single-threaded
// session, as the agent will configure them (onnxruntime_go issue #2).
func newSessionOptions(t *testing.T) *ort.SessionOptions {
	t.Helper()
	opts, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { opts.Destroy() })
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	return opts
}

// randomWindows returns batch windows of vibration-like samples: a sine of
// random frequency and amplitude plus noise.
func randomWindows(r *rand.Rand, batch int) []float32 {
	x := make([]float32, batch*mlp.InputSize)
	for n := range batch {
		amp := 0.2 + 2*r.Float64()
		freq := 1 + 15*r.Float64()
		for i := range mlp.InputSize {
			v := amp*math.Sin(2*math.Pi*freq*float64(i)/mlp.InputSize) + 0.3*r.NormFloat64()
			x[n*mlp.InputSize+i] = float32(v)
		}
	}
	return x
}

func assertScores(t *testing.T, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d scores, want %d", len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > tolerance || math.IsNaN(float64(got[i])) {
			t.Errorf("score[%d] = %.7f, reference %.7f (diff %.2g)", i, got[i], want[i], d)
		}
	}
}

func TestRuntimeMatchesReference(t *testing.T) {
	runtimetest.Init(t)
	tests := []struct {
		file string
		seed uint64
	}{
		{models.FileV1, models.SeedV1},
		{models.FileV2, models.SeedV2},
	}
	first := map[string]float32{}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			w := mlp.NewWeights(tt.seed)
			input, err := ort.NewTensor(ort.NewShape(1, mlp.InputSize), make([]float32, mlp.InputSize))
			if err != nil {
				t.Fatal(err)
			}
			defer input.Destroy()
			output, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 1))
			if err != nil {
				t.Fatal(err)
			}
			defer output.Destroy()
			s, err := ort.NewAdvancedSession(tt.file, []string{mlp.InputName}, []string{mlp.OutputName},
				[]ort.Value{input}, []ort.Value{output}, newSessionOptions(t))
			if err != nil {
				t.Fatalf("ONNX Runtime refused %s: %v", tt.file, err)
			}
			defer s.Destroy()

			r := rand.New(rand.NewPCG(42, 0)) // same inputs for both versions
			for i := range 10 {
				x := randomWindows(r, 1)
				copy(input.GetData(), x)
				if err := s.Run(); err != nil {
					t.Fatal(err)
				}
				assertScores(t, output.GetData(), mlp.Reference(w, x, 1))
				if i == 0 {
					first[tt.file] = output.GetData()[0]
				}
			}
		})
	}
	if a, b := first[models.FileV1], first[models.FileV2]; math.Abs(float64(a-b)) < 1e-3 {
		t.Errorf("v1 and v2 score the same window alike (%.6f, %.6f): versions must be distinguishable", a, b)
	}
}

func TestRuntimeDynamicBatch(t *testing.T) {
	runtimetest.Init(t)
	info, _, err := ort.GetInputOutputInfo(models.FileBatch)
	if err != nil {
		t.Fatal(err)
	}
	if got := info[0].Dimensions; len(got) != 2 || got[0] != -1 || got[1] != mlp.InputSize {
		t.Errorf("input shape = %v, want [-1 %d]", got, mlp.InputSize)
	}

	s, err := ort.NewDynamicAdvancedSession(models.FileBatch, []string{mlp.InputName}, []string{mlp.OutputName},
		newSessionOptions(t))
	if err != nil {
		t.Fatalf("ONNX Runtime refused %s: %v", models.FileBatch, err)
	}
	defer s.Destroy()
	w := mlp.NewWeights(models.SeedV1)
	r := rand.New(rand.NewPCG(7, 0))
	for _, batch := range []int{1, 3, 8} {
		x := randomWindows(r, batch)
		input, err := ort.NewTensor(ort.NewShape(int64(batch), mlp.InputSize), x)
		if err != nil {
			t.Fatal(err)
		}
		output, err := ort.NewEmptyTensor[float32](ort.NewShape(int64(batch), 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Run([]ort.Value{input}, []ort.Value{output}); err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		assertScores(t, output.GetData(), mlp.Reference(w, x, batch))
		input.Destroy()
		output.Destroy()
	}
}

func TestRuntimeRejectsBroken(t *testing.T) {
	runtimetest.Init(t)
	opts := newSessionOptions(t)
	s, err := ort.NewDynamicAdvancedSession(models.FileBroken, []string{mlp.InputName}, []string{mlp.OutputName}, opts)
	if err == nil {
		s.Destroy()
		t.Fatalf("ONNX Runtime loaded %s into a DynamicAdvancedSession", models.FileBroken)
	}
	t.Logf("ONNX Runtime refused %s as it should: %v", models.FileBroken, err)

	input, err := ort.NewTensor(ort.NewShape(1, mlp.InputSize), make([]float32, mlp.InputSize))
	if err != nil {
		t.Fatal(err)
	}
	defer input.Destroy()
	output, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer output.Destroy()
	as, err := ort.NewAdvancedSession(models.FileBroken, []string{mlp.InputName}, []string{mlp.OutputName},
		[]ort.Value{input}, []ort.Value{output}, opts)
	if err == nil {
		as.Destroy()
		t.Fatalf("ONNX Runtime loaded %s into an AdvancedSession", models.FileBroken)
	}
}

// TestRuntimeSamplesInput checks that the renamed-input release computes
// v2's scores under its new input name, the only input it declares (so
// requests naming the old one fail validation).
func TestRuntimeSamplesInput(t *testing.T) {
	runtimetest.Init(t)
	input, err := ort.NewTensor(ort.NewShape(1, mlp.InputSize), make([]float32, mlp.InputSize))
	if err != nil {
		t.Fatal(err)
	}
	defer input.Destroy()
	output, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer output.Destroy()
	info, _, err := ort.GetInputOutputInfo(models.FileV2Samples)
	if err != nil {
		t.Fatal(err)
	}
	if len(info) != 1 || info[0].Name != models.SamplesInputName {
		t.Fatalf("%s inputs = %v, want one named %q", models.FileV2Samples, info, models.SamplesInputName)
	}
	s, err := ort.NewAdvancedSession(models.FileV2Samples, []string{models.SamplesInputName}, []string{mlp.OutputName},
		[]ort.Value{input}, []ort.Value{output}, newSessionOptions(t))
	if err != nil {
		t.Fatalf("ONNX Runtime refused %s: %v", models.FileV2Samples, err)
	}
	defer s.Destroy()
	x := randomWindows(rand.New(rand.NewPCG(42, 0)), 1)
	copy(input.GetData(), x)
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	assertScores(t, output.GetData(), mlp.Reference(mlp.NewWeights(models.SeedV2), x, 1))
}
