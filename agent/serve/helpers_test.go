package serve_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/agent/serve"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/internal/fleettest"
)

// tolerance is how far ONNX Runtime's scores may be from mlp.Reference.
const tolerance = 1e-5

// Model versions the tests serve, and the weights each one computes with.
const (
	v1 = "1.0.0"
	v2 = "2.0.0"
)

var weights = map[string]*mlp.Weights{v1: mlp.NewWeights(models.SeedV1), v2: mlp.NewWeights(models.SeedV2)}

// fleet is a real Inferer for tests, the way the agent is one: each model
// name has a runtime.Slot holding an ONNX Runtime session of an example
// model, optionally behind a runtime.Limiter.
type fleet struct {
	tb  testing.TB
	dir string

	mu     sync.Mutex // guards models
	models map[string]*servedModel
}

type servedModel struct {
	slot     runtime.Slot
	inputs   []runtime.TensorSpec
	outputs  []runtime.TensorSpec
	limiter  *runtime.Limiter
	notReady bool
}

// newFleet loads ONNX Runtime (skipping the test without it) and returns an
// empty fleet.
func newFleet(tb testing.TB) *fleet {
	tb.Helper()
	runtimetest.Init(tb)
	dir := tb.TempDir()
	for _, f := range []string{models.FileV1, models.FileV2, models.FileBatch} {
		if err := os.WriteFile(filepath.Join(dir, f), fleettest.ModelBytes(tb, f), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	fl := &fleet{tb: tb, dir: dir, models: map[string]*servedModel{}}
	tb.Cleanup(func() {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		for _, m := range fl.models {
			if old, _ := m.slot.Swap(nil, ""); old != nil {
				old.Close()
			}
		}
	})
	return fl
}

// windowSpecs are the specs of the example models, with the batch size.
func windowSpecs(batch int64) (in, out []runtime.TensorSpec) {
	return []runtime.TensorSpec{{Name: mlp.InputName, ElemType: runtime.Float32, Shape: []int64{batch, mlp.InputSize}}},
		[]runtime.TensorSpec{{Name: mlp.OutputName, ElemType: runtime.Float32, Shape: []int64{batch, 1}}}
}

// open loads an example model file and warms it up.
func (fl *fleet) open(file string) *runtime.Session {
	fl.tb.Helper()
	batch := int64(1)
	if file == models.FileBatch {
		batch = runtime.Dynamic
	}
	in, out := windowSpecs(batch)
	s, err := runtime.Open(context.Background(), filepath.Join(fl.dir, file), in, out, runtime.Options{})
	if err != nil {
		fl.tb.Fatalf("open %s: %v", file, err)
	}
	if _, err := s.WarmUp(context.Background(), nil); err != nil {
		fl.tb.Fatalf("warm up %s: %v", file, err)
	}
	return s
}

// serve makes name serve file as version, replacing (and closing) what it
// served before.
func (fl *fleet) serve(name, file, version string) {
	fl.tb.Helper()
	s := fl.open(file)
	fl.mu.Lock()
	m := fl.models[name]
	if m == nil {
		m = &servedModel{}
		fl.models[name] = m
	}
	m.inputs, m.outputs = s.Inputs(), s.Outputs()
	fl.mu.Unlock()
	if old, _ := m.slot.Swap(s, version); old != nil {
		old.Close()
	}
}

// limit puts name behind a runtime.Limiter and returns it.
func (fl *fleet) limit(name string, concurrency, queue int) *runtime.Limiter {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	l := runtime.NewLimiter(concurrency, queue)
	fl.models[name].limiter = l
	return l
}

// setReady marks name ready or not, as the agent does while it loads.
func (fl *fleet) setReady(name string, ready bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.models[name].notReady = !ready
}

// Infer implements serve.Inferer.
func (fl *fleet) Infer(ctx context.Context, name string, inputs map[string]runtime.Tensor) (map[string]runtime.Tensor, string, error) {
	fl.mu.Lock()
	m := fl.models[name]
	var limiter *runtime.Limiter
	if m != nil {
		limiter = m.limiter
	}
	fl.mu.Unlock()
	if m == nil {
		return nil, "", fmt.Errorf("%w: %s", runtime.ErrNotLoaded, name)
	}
	if limiter != nil {
		release, err := limiter.Acquire(ctx)
		if err != nil {
			return nil, "", err
		}
		defer release()
	}
	return m.slot.Run(ctx, inputs)
}

// Model implements serve.Inferer.
func (fl *fleet) Model(name string) (serve.ModelInfo, bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	m := fl.models[name]
	if m == nil {
		return serve.ModelInfo{}, false
	}
	version, loaded := m.slot.Version()
	return serve.ModelInfo{Name: name, Version: version, Ready: loaded && !m.notReady, Inputs: m.inputs, Outputs: m.outputs}, true
}

// Models implements serve.Inferer.
func (fl *fleet) Models() []serve.ModelInfo {
	fl.mu.Lock()
	names := make([]string, 0, len(fl.models))
	for n := range fl.models {
		names = append(names, n)
	}
	fl.mu.Unlock()
	slices.Sort(names)
	var infos []serve.ModelInfo
	for _, n := range names {
		if info, ok := fl.Model(n); ok {
			infos = append(infos, info)
		}
	}
	return infos
}

// randomWindows returns batch windows of samples in [-1, 1), one after
// another.
func randomWindows(rng *rand.Rand, batch int) []float32 {
	w := make([]float32, batch*mlp.InputSize)
	for i := range w {
		w[i] = rng.Float32()*2 - 1
	}
	return w
}

// checkScores compares scores with mlp.Reference for version's weights.
func checkScores(tb testing.TB, version string, windows []float32, got []float32) {
	tb.Helper()
	w, ok := weights[version]
	if !ok {
		tb.Fatalf("answered by unknown version %q", version)
	}
	want := mlp.Reference(w, windows, len(windows)/mlp.InputSize)
	if len(got) != len(want) {
		tb.Fatalf("%d scores, want %d", len(got), len(want))
	}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > tolerance {
			tb.Fatalf("score[%d] = %v, version %s reference %v", i, got[i], version, want[i])
		}
	}
}

// nested splits windows into rows of mlp.InputSize, for nested JSON data.
func nested(windows []float32) [][]float32 {
	var rows [][]float32
	for i := 0; i < len(windows); i += mlp.InputSize {
		rows = append(rows, windows[i:i+mlp.InputSize])
	}
	return rows
}
