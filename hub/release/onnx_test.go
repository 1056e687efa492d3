package release

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/onnxpb"
	"github.com/modelfleet/modelfleet/manifest"
)

const exampleDir = "../../examples/models"

func spec(name, elem string, shape ...int64) manifest.TensorSpec {
	if shape == nil {
		shape = []int64{}
	}
	return manifest.TensorSpec{Name: name, ElementType: elem, Shape: shape}
}

// mustReadExample returns an example model file's bytes.
func mustReadExample(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(exampleDir, name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// onlyReader hides io.Seeker, so the decoder reads what it skips.
type onlyReader struct{ io.Reader }

func graphModel(g onnxpb.Graph) []byte {
	m := &onnxpb.Model{IRVersion: 8, OpsetImports: []onnxpb.OpsetID{{Version: 13}}, Graph: g}
	return m.Marshal()
}

func TestInspectONNXExamples(t *testing.T) {
	v1In := []manifest.TensorSpec{spec("window", "float32", 1, 64)}
	v1Out := []manifest.TensorSpec{spec("score", "float32", 1, 1)}
	tests := []struct {
		name            string
		file            string
		wantIn, wantOut []manifest.TensorSpec
	}{
		{"v1", models.FileV1, v1In, v1Out},
		{"v2", models.FileV2, v1In, v1Out},
		{"batch", models.FileBatch, []manifest.TensorSpec{spec("window", "float32", -1, 64)}, []manifest.TensorSpec{spec("score", "float32", -1, 1)}},
		// broken.onnx fails in ONNX Runtime, not here: its interface is v1's.
		{"broken", models.FileBroken, v1In, v1Out},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := mustReadExample(t, tt.file)
			for _, r := range []io.Reader{bytes.NewReader(raw), onlyReader{bytes.NewReader(raw)}} {
				in, out, err := InspectONNX(r)
				if err != nil {
					t.Fatalf("InspectONNX(%T): %v", r, err)
				}
				if !reflect.DeepEqual(in, tt.wantIn) || !reflect.DeepEqual(out, tt.wantOut) {
					t.Errorf("InspectONNX(%T) = %v, %v; want %v, %v", r, in, out, tt.wantIn, tt.wantOut)
				}
			}
			in, out, err := InspectONNXFile(filepath.Join(exampleDir, tt.file))
			if err != nil || !reflect.DeepEqual(in, tt.wantIn) || !reflect.DeepEqual(out, tt.wantOut) {
				t.Errorf("InspectONNXFile = %v, %v, %v", in, out, err)
			}
		})
	}
}

func TestInspectONNXBuilt(t *testing.T) {
	big := make([]byte, 3<<20) // skipped by seeking, or read past
	tests := []struct {
		name            string
		graph           onnxpb.Graph
		wantIn, wantOut []manifest.TensorSpec
		wantErr         error
	}{
		{
			name: "element types",
			graph: onnxpb.Graph{
				Inputs: []onnxpb.ValueInfo{
					onnxpb.TensorInfo("ids", onnxpb.Int64, onnxpb.Dims(1, 128)...),
					onnxpb.TensorInfo("img", onnxpb.Uint8, onnxpb.Dims(1, 3, 224, 224)...),
					onnxpb.TensorInfo("mask", onnxpb.Bool, onnxpb.Dims(1, 128)...),
					onnxpb.TensorInfo("h", onnxpb.Float16, onnxpb.Dims(2)...),
					onnxpb.TensorInfo("b", onnxpb.DataType(16), onnxpb.Dims(2)...),
					onnxpb.TensorInfo("d", onnxpb.Double, onnxpb.Dims(2)...),
					onnxpb.TensorInfo("i8", onnxpb.Int8, onnxpb.Dims(2)...),
					onnxpb.TensorInfo("u16", onnxpb.Uint16, onnxpb.Dims(2)...),
					onnxpb.TensorInfo("i16", onnxpb.Int16, onnxpb.Dims(2)...),
					onnxpb.TensorInfo("i32", onnxpb.Int32, onnxpb.Dims(2)...),
					onnxpb.TensorInfo("u32", onnxpb.Uint32, onnxpb.Dims(2)...),
					onnxpb.TensorInfo("u64", onnxpb.Uint64, onnxpb.Dims(2)...),
				},
				Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("logits", onnxpb.Float, onnxpb.Dims(1, 2)...)},
			},
			wantIn: []manifest.TensorSpec{
				spec("ids", "int64", 1, 128), spec("img", "uint8", 1, 3, 224, 224), spec("mask", "bool", 1, 128),
				spec("h", "float16", 2), spec("b", "bfloat16", 2), spec("d", "float64", 2),
				spec("i8", "int8", 2), spec("u16", "uint16", 2), spec("i16", "int16", 2),
				spec("i32", "int32", 2), spec("u32", "uint32", 2), spec("u64", "uint64", 2),
			},
			wantOut: []manifest.TensorSpec{spec("logits", "float32", 1, 2)},
		},
		{
			name: "dynamic dims and scalar",
			graph: onnxpb.Graph{
				Inputs: []onnxpb.ValueInfo{
					onnxpb.TensorInfo("x", onnxpb.Float, onnxpb.Dim{Param: "batch"}, onnxpb.Dim{Param: "seq"}, onnxpb.Dim{Value: 8}),
					onnxpb.TensorInfo("t", onnxpb.Float),
				},
				Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Float, onnxpb.Dim{Param: "batch"}, onnxpb.Dim{Value: 1})},
			},
			wantIn:  []manifest.TensorSpec{spec("x", "float32", -1, -1, 8), spec("t", "float32")},
			wantOut: []manifest.TensorSpec{spec("y", "float32", -1, 1)},
		},
		{
			name: "initializers listed as inputs are left out",
			graph: onnxpb.Graph{
				Initializers: []onnxpb.Tensor{
					{Name: "w", DataType: onnxpb.Float, Dims: []int64{int64(len(big) / 4)}, RawData: big},
					onnxpb.FloatTensor("b", []int64{1}, []float32{0.5}),
				},
				Inputs: []onnxpb.ValueInfo{
					onnxpb.TensorInfo("w", onnxpb.Float, onnxpb.Dims(int64(len(big)/4))...),
					onnxpb.TensorInfo("x", onnxpb.Float, onnxpb.Dims(1, 4)...),
					onnxpb.TensorInfo("b", onnxpb.Float, onnxpb.Dims(1)...),
				},
				Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Float, onnxpb.Dims(1, 4)...)},
			},
			wantIn:  []manifest.TensorSpec{spec("x", "float32", 1, 4)},
			wantOut: []manifest.TensorSpec{spec("y", "float32", 1, 4)},
		},
		{
			name: "string tensor",
			graph: onnxpb.Graph{
				Inputs:  []onnxpb.ValueInfo{onnxpb.TensorInfo("text", onnxpb.String, onnxpb.Dims(1)...)},
				Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Float, onnxpb.Dims(1)...)},
			},
			wantErr: ErrUnsupported,
		},
		{
			name: "unknown rank",
			graph: onnxpb.Graph{
				Inputs:  []onnxpb.ValueInfo{{Name: "x", ElemType: onnxpb.Float, UnknownRank: true}},
				Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Float, onnxpb.Dims(1)...)},
			},
			wantErr: ErrUnsupported,
		},
		{
			name: "zero-sized dimension",
			graph: onnxpb.Graph{
				Inputs:  []onnxpb.ValueInfo{onnxpb.TensorInfo("x", onnxpb.Float, onnxpb.Dims(0, 4)...)},
				Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Float, onnxpb.Dims(1)...)},
			},
			wantErr: ErrUnsupported,
		},
		{
			name: "rank above 16",
			graph: onnxpb.Graph{
				Inputs:  []onnxpb.ValueInfo{onnxpb.TensorInfo("x", onnxpb.Float, onnxpb.Dims(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)...)},
				Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.Float, onnxpb.Dims(1)...)},
			},
			wantErr: ErrUnsupported,
		},
		{
			name:    "no outputs",
			graph:   onnxpb.Graph{Inputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("x", onnxpb.Float, onnxpb.Dims(1)...)}},
			wantErr: ErrNotONNX,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := graphModel(tt.graph)
			for _, r := range []io.Reader{bytes.NewReader(raw), onlyReader{bytes.NewReader(raw)}} {
				in, out, err := InspectONNX(r)
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("InspectONNX(%T) error = %v, want %v", r, err, tt.wantErr)
					}
					t.Logf("%T: %v", r, err)
					continue
				}
				if err != nil {
					t.Fatalf("InspectONNX(%T): %v", r, err)
				}
				if !reflect.DeepEqual(in, tt.wantIn) || !reflect.DeepEqual(out, tt.wantOut) {
					t.Errorf("InspectONNX(%T) = %v, %v; want %v, %v", r, in, out, tt.wantIn, tt.wantOut)
				}
			}
		})
	}
}

// jpegHeader is the start of a JFIF file.
var jpegHeader = []byte{0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43}

func TestInspectONNXRejectsOtherFiles(t *testing.T) {
	v1 := mustReadExample(t, models.FileV1)
	random := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"jpeg", jpegHeader},
		{"text", []byte("name,value\nwindow,1.0\n")},
		{"json", []byte(`{"model": "vibration"}`)},
		{"random", random},
		{"truncated in the graph", v1[:len(v1)/2]},
		{"truncated by one byte", v1[:len(v1)-1]},
		{"no graph", []byte{0x08, 0x08}}, // ir_version 8 and nothing else
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []io.Reader{bytes.NewReader(tt.data), onlyReader{bytes.NewReader(tt.data)}} {
				_, _, err := InspectONNX(r)
				if !errors.Is(err, ErrNotONNX) {
					t.Fatalf("InspectONNX(%T) error = %v, want ErrNotONNX", r, err)
				}
				t.Logf("%T: %v", r, err)
			}
		})
	}
}

// FuzzInspectONNX checks that the decoder never panics, never takes long,
// returns only its documented errors, and that reading through a seeker and
// through a plain reader agree.
func FuzzInspectONNX(f *testing.F) {
	for _, name := range []string{models.FileV1, models.FileBatch} {
		raw := mustReadExample(f, name)
		f.Add(raw)
		f.Add(raw[:len(raw)/3])
	}
	f.Add([]byte{})
	f.Add(jpegHeader)
	f.Add(graphModel(onnxpb.Graph{
		Initializers: []onnxpb.Tensor{onnxpb.FloatTensor("w", []int64{2}, []float32{1, 2})},
		Inputs: []onnxpb.ValueInfo{
			onnxpb.TensorInfo("w", onnxpb.Float, onnxpb.Dims(2)...),
			onnxpb.TensorInfo("x", onnxpb.Int64, onnxpb.Dim{Param: "n"}, onnxpb.Dim{Value: 3}),
		},
		Outputs: []onnxpb.ValueInfo{onnxpb.TensorInfo("y", onnxpb.String, onnxpb.Dims(1)...)},
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		tm := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("SLOW %x", data)) })
		defer tm.Stop()
		in1, out1, err1 := InspectONNX(bytes.NewReader(data))
		in2, out2, err2 := InspectONNX(onlyReader{bytes.NewReader(data)})
		// Without a seeker, a truncated file may first show another fault
		// met while streaming, so only success must agree.
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("seeker and reader disagree: %v / %v", err1, err2)
		}
		if err1 != nil {
			if !errors.Is(err1, ErrNotONNX) && !errors.Is(err1, ErrUnsupported) {
				t.Fatalf("error is neither ErrNotONNX nor ErrUnsupported: %v", err1)
			}
			return
		}
		if !reflect.DeepEqual(in1, in2) || !reflect.DeepEqual(out1, out2) {
			t.Fatalf("seeker and reader disagree: %v %v / %v %v", in1, out1, in2, out2)
		}
		if len(out1) == 0 {
			t.Fatal("success without outputs")
		}
		for _, s := range append(in1, out1...) {
			if _, ok := manifest.ElementTypes[s.ElementType]; !ok || len(s.Shape) > maxRank {
				t.Fatalf("bad spec %+v", s)
			}
			for _, d := range s.Shape {
				if d < 1 && d != -1 {
					t.Fatalf("bad dimension in %+v", s)
				}
			}
		}
	})
}
