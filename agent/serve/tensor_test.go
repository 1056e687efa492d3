package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
)

// fuzzModel has one input of every supported element type, so that the
// decoders are exercised on all of them.
var fuzzModel = ModelInfo{
	Name: "all-types",
	Inputs: []runtime.TensorSpec{
		{Name: "f", ElemType: runtime.Float32, Shape: []int64{-1, 4}},
		{Name: "d", ElemType: runtime.Float64, Shape: []int64{2}},
		{Name: "i", ElemType: runtime.Int64, Shape: []int64{-1}},
		{Name: "j", ElemType: runtime.Int32, Shape: []int64{3}},
		{Name: "u", ElemType: runtime.Uint8, Shape: []int64{-1, 2}},
		{Name: "b", ElemType: runtime.Bool, Shape: []int64{-1}},
	},
	Outputs: []runtime.TensorSpec{{Name: "y", ElemType: runtime.Float32, Shape: []int64{-1, 1}}},
}

func TestDecodeData(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    string
		et      runtime.ElemType
		shape   []int64
		want    any
		wantErr string
	}{
		{name: "flat fp32", data: `[1, 2.5, -3e-2, 0]`, et: runtime.Float32, shape: []int64{2, 2}, want: []float32{1, 2.5, -0.03, 0}},
		{name: "nested fp32", data: `[[1,2],[3,4]]`, et: runtime.Float32, shape: []int64{2, 2}, want: []float32{1, 2, 3, 4}},
		{name: "nested rank 3", data: `[[[1],[2]],[[3],[4]]]`, et: runtime.Float64, shape: []int64{2, 2, 1}, want: []float64{1, 2, 3, 4}},
		{name: "int64", data: `[9007199254740993, -1]`, et: runtime.Int64, shape: []int64{2}, want: []int64{9007199254740993, -1}},
		{name: "int32", data: `[2147483647]`, et: runtime.Int32, shape: []int64{1}, want: []int32{2147483647}},
		{name: "uint8", data: `[0, 255]`, et: runtime.Uint8, shape: []int64{2}, want: []uint8{0, 255}},
		{name: "bool", data: `[true,false]`, et: runtime.Bool, shape: []int64{2}, want: []bool{true, false}},
		{name: "white space", data: " \n[ [ 1 , 2 ] ]\t", et: runtime.Float32, shape: []int64{1, 2}, want: []float32{1, 2}},

		{name: "too few", data: `[1,2,3]`, et: runtime.Float32, shape: []int64{2, 2}, wantErr: "3 values, shape [2,2] needs 4"},
		{name: "too many", data: `[1,2,3,4,5]`, et: runtime.Float32, shape: []int64{2, 2}, wantErr: "more than the 4 values"},
		{name: "nesting differs", data: `[[1,2,3],[4,5,6]]`, et: runtime.Float32, shape: []int64{3, 2}, wantErr: "nested as [2,3]"},
		{name: "ragged", data: `[[1,2],[3]]`, et: runtime.Float32, shape: []int64{3}, wantErr: "not rectangular"},
		{name: "mixed", data: `[[1,2],3]`, et: runtime.Float32, shape: []int64{3}, wantErr: "mixes values and arrays"},
		{name: "NaN string", data: `["NaN", 1]`, et: runtime.Float32, shape: []int64{2}, wantErr: `value #0 is a string ("\"NaN\""); FP32 data must be JSON numbers (JSON has no NaN`},
		{name: "bare NaN", data: `[NaN, 1]`, et: runtime.Float32, shape: []int64{2}, wantErr: `value #0 is "NaN"`},
		{name: "Infinity", data: `[1, -Infinity]`, et: runtime.Float64, shape: []int64{2}, wantErr: `not a valid JSON number (JSON has no NaN`},
		{name: "fp32 overflow", data: `[1e39]`, et: runtime.Float32, shape: []int64{1}, wantErr: "out of the FP32 range"},
		{name: "null", data: `[null]`, et: runtime.Float32, shape: []int64{1}, wantErr: "value #0 is null"},
		{name: "int fraction", data: `[1.5]`, et: runtime.Int64, shape: []int64{1}, wantErr: "not an integer"},
		{name: "int32 overflow", data: `[2147483648]`, et: runtime.Int32, shape: []int64{1}, wantErr: "out of the INT32 range"},
		{name: "uint8 negative", data: `[-1]`, et: runtime.Uint8, shape: []int64{1}, wantErr: "out of the UINT8"},
		{name: "bool number", data: `[1]`, et: runtime.Bool, shape: []int64{1}, wantErr: "BOOL data must be JSON true or false"},
		{name: "leading plus", data: `[+1]`, et: runtime.Float32, shape: []int64{1}, wantErr: "where a value should be"},
		{name: "leading zero", data: `[01]`, et: runtime.Float32, shape: []int64{1}, wantErr: "not a valid JSON number"},
		{name: "trailing comma", data: `[1,]`, et: runtime.Float32, shape: []int64{1}, wantErr: "trailing comma"},
		{name: "missing comma", data: `[1 2]`, et: runtime.Float32, shape: []int64{2}, wantErr: "where ',' or ']' should be"},
		{name: "object", data: `{"a":1}`, et: runtime.Float32, shape: []int64{1}, wantErr: "not a JSON array"},
		{name: "unclosed", data: `[[1,2]`, et: runtime.Float32, shape: []int64{2}, wantErr: "ends inside an array"},
		{name: "after array", data: `[1] [2]`, et: runtime.Float32, shape: []int64{1}, wantErr: "after the array"},
		{name: "empty", data: `[]`, et: runtime.Float32, shape: []int64{1}, wantErr: "no values"},
		{name: "zero dim", data: `[1]`, et: runtime.Float32, shape: []int64{0}, wantErr: "at least 1"},
		{name: "no dims", data: `[1]`, et: runtime.Float32, shape: []int64{}, wantErr: "scalars are not supported"},
		{name: "hostile shape", data: `[1]`, et: runtime.Float32, shape: []int64{1 << 40, 1 << 40}, wantErr: "holds more than 1099511627776 values"},
		{name: "shape promising more than the data", data: `[1]`, et: runtime.Float32, shape: []int64{1 << 30, 1 << 10}, wantErr: "1 values, shape [1073741824,1024] needs 1099511627776"},
		{name: "deep", data: strings.Repeat("[", 40) + "1" + strings.Repeat("]", 40), et: runtime.Float32, shape: []int64{1}, wantErr: "nested more than 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeData([]byte(tc.data), tc.et, tc.shape)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeData: %v", err)
			}
			if !slices.Equal(got.Shape(), tc.shape) || got.ElemType() != tc.et {
				t.Errorf("tensor = %s, want %s %v", got, tc.et, tc.shape)
			}
			var data any
			switch tc.et {
			case runtime.Float32:
				data = got.Float32()
			case runtime.Float64:
				data = got.Float64()
			case runtime.Int64:
				data = got.Int64()
			case runtime.Int32:
				data = got.Int32()
			case runtime.Uint8:
				data = got.Uint8()
			case runtime.Bool:
				data = got.Bool()
			}
			if a, b := string(mustJSON(t, data)), string(mustJSON(t, tc.want)); a != b {
				t.Errorf("data = %s, want %s", a, b)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := appendData(nil, anyTensor(v))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func anyTensor(v any) runtime.Tensor {
	switch d := v.(type) {
	case []float32:
		return runtime.NewTensor([]int64{int64(len(d))}, d)
	case []float64:
		return runtime.NewTensor([]int64{int64(len(d))}, d)
	case []int64:
		return runtime.NewTensor([]int64{int64(len(d))}, d)
	case []int32:
		return runtime.NewTensor([]int64{int64(len(d))}, d)
	case []uint8:
		return runtime.NewTensor([]int64{int64(len(d))}, d)
	case []bool:
		return runtime.NewTensor([]int64{int64(len(d))}, d)
	}
	return runtime.Tensor{}
}

func TestDecodeLoose(t *testing.T) {
	batch := runtime.TensorSpec{Name: "window", ElemType: runtime.Float32, Shape: []int64{-1, 4}}
	fixed := runtime.TensorSpec{Name: "window", ElemType: runtime.Float32, Shape: []int64{1, 4}}
	two := runtime.TensorSpec{Name: "m", ElemType: runtime.Float32, Shape: []int64{-1, -1}}
	for _, tc := range []struct {
		name      string
		data      string
		spec      runtime.TensorSpec
		wantShape []int64
		wantErr   string
	}{
		{name: "flat fixed", data: `[1,2,3,4]`, spec: fixed, wantShape: []int64{1, 4}},
		{name: "flat batch inferred", data: `[1,2,3,4,5,6,7,8]`, spec: batch, wantShape: []int64{2, 4}},
		{name: "nested batch", data: `[[1,2,3,4],[5,6,7,8],[9,10,11,12]]`, spec: batch, wantShape: []int64{3, 4}},
		{name: "nested several dynamic", data: `[[1,2],[3,4],[5,6]]`, spec: two, wantShape: []int64{3, 2}},
		{name: "flat wrong count", data: `[1,2,3]`, spec: fixed, wantErr: "takes 4 values"},
		{name: "flat not a multiple", data: `[1,2,3,4,5]`, spec: batch, wantErr: "multiple of 4"},
		{name: "flat several dynamic", data: `[1,2]`, spec: two, wantErr: "more than one dimension"},
		{name: "too deep", data: `[[[1]]]`, spec: batch, wantErr: "rank 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeLoose([]byte(tc.data), tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Shape(), tc.wantShape) {
				t.Errorf("shape = %v, want %v", got.Shape(), tc.wantShape)
			}
		})
	}
}

func TestDecodeF32LE(t *testing.T) {
	spec := runtime.TensorSpec{Name: "window", ElemType: runtime.Float32, Shape: []int64{-1, 2}}
	raw := binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.5))
	raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(-2))
	got, err := decodeF32LE(raw, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Float32(), []float32{1.5, -2}) || !slices.Equal(got.Shape(), []int64{1, 2}) {
		t.Errorf("got %v %v", got.Shape(), got.Float32())
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		spec runtime.TensorSpec
		want string
	}{
		{"odd length", raw[:5], spec, "4 bytes per float32"},
		{"empty", nil, spec, "has 0 bytes"},
		{"NaN", binary.LittleEndian.AppendUint32(raw[:4:4], math.Float32bits(float32(math.NaN()))), spec, "finite numbers"},
		{"not float32", raw, runtime.TensorSpec{Name: "i", ElemType: runtime.Int64, Shape: []int64{2}}, "FP32 values only"},
	} {
		if _, err := decodeF32LE(tc.raw, tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestDecodeInferRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		wantErr string
	}{
		{name: "all types", body: `{"id":"x","parameters":{"a":1},"inputs":[
			{"name":"f","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},
			{"name":"d","shape":[2],"datatype":"FP64","data":[[1],[2]]},
			{"name":"i","shape":[2],"datatype":"INT64","data":[1,2],"parameters":{"content_type":"np"}},
			{"name":"j","shape":[3],"datatype":"INT32","data":[1,2,3]},
			{"name":"u","shape":[1,2],"datatype":"UINT8","data":[[1,2]]},
			{"name":"b","shape":[1],"datatype":"BOOL","data":[true]}],
			"outputs":[{"name":"y"}]}`, wantErr: "nested as [2,1]"},
		{name: "all types valid", body: `{"inputs":[
			{"name":"f","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},
			{"name":"d","shape":[2],"datatype":"FP64","data":[1,2]},
			{"name":"i","shape":[2],"datatype":"INT64","data":[1,2]},
			{"name":"j","shape":[3],"datatype":"INT32","data":[1,2,3]},
			{"name":"u","shape":[1,2],"datatype":"UINT8","data":[[1,2]]},
			{"name":"b","shape":[1],"datatype":"BOOL","data":[true]}]}`},
		{name: "valid", body: `{"inputs":[{"name":"f","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8]]}],"outputs":[{"name":"y","parameters":{"binary_data":false}}]}`},
		{name: "unknown field", body: `{"inputs":[],"extra":1}`, wantErr: `unknown field "extra"`},
		{name: "unknown input field", body: `{"inputs":[{"name":"f","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"contents":{}}]}`, wantErr: `unknown field "contents"`},
		{name: "not an object", body: `[1,2]`, wantErr: "must be a JSON object"},
		{name: "garbage", body: `{"inputs": [}`, wantErr: "not valid JSON"},
		{name: "empty", body: ``, wantErr: "empty"},
		{name: "cut short", body: `{"inputs": [`, wantErr: "cut short"},
		{name: "trailing", body: `{"inputs":[]} {}`, wantErr: "more after the JSON object"},
		{name: "shape of strings", body: `{"inputs":[{"name":"f","shape":["1"],"datatype":"FP32","data":[1]}]}`, wantErr: `field "inputs.shape" must be an integer, got a JSON string`},
		{name: "no inputs", body: `{"inputs":[]}`, wantErr: "no inputs"},
		{name: "unknown input", body: `{"inputs":[{"name":"zz","shape":[1],"datatype":"FP32","data":[1]}]}`, wantErr: `unknown input "zz"`},
		{name: "wrong datatype", body: `{"inputs":[{"name":"f","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}`, wantErr: `input "f" is INT64, the model takes FP32`},
		{name: "unsupported datatype", body: `{"inputs":[{"name":"f","shape":[1,4],"datatype":"FP16","data":[1,2,3,4]}]}`, wantErr: `"FP16", which is not supported`},
		{name: "lower-case datatype", body: `{"inputs":[{"name":"f","shape":[1,4],"datatype":"fp32","data":[1,2,3,4]}]}`, wantErr: `"fp32", which is not supported`},
		{name: "no data", body: `{"inputs":[{"name":"f","shape":[1,4],"datatype":"FP32"}]}`, wantErr: "has no data"},
		{name: "no shape", body: `{"inputs":[{"name":"f","datatype":"FP32","data":[1,2,3,4]}]}`, wantErr: "has no shape"},
		{name: "duplicate", body: `{"inputs":[{"name":"i","shape":[1],"datatype":"INT64","data":[1]},{"name":"i","shape":[1],"datatype":"INT64","data":[1]}]}`, wantErr: "given twice"},
		{name: "binary input", body: `{"inputs":[{"name":"i","shape":[1],"datatype":"INT64","parameters":{"binary_data_size":8}}]}`, wantErr: "binary tensor data"},
		{name: "binary output", body: `{"inputs":[{"name":"i","shape":[1],"datatype":"INT64","data":[1]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`, wantErr: "binary tensor data"},
		{name: "unknown output", body: `{"inputs":[{"name":"i","shape":[1],"datatype":"INT64","data":[1]}],"outputs":[{"name":"nope"}]}`, wantErr: `unknown output "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeInferRequest(fuzzModel, []byte(tc.body))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if !errors.Is(err, runtime.ErrInvalidInput) || statusOf(err) != http.StatusBadRequest {
				t.Errorf("error %v does not map to 400", err)
			}
		})
	}
}

// decodeInferRequest is what the HTTP front end does with a body.
func decodeInferRequest(info ModelInfo, body []byte) (map[string]runtime.Tensor, []string, error) {
	var req inferRequest
	if err := decodeStrict(body, &req); err != nil {
		return nil, nil, err
	}
	inputs, err := decodeInputs(info, req.Inputs)
	if err != nil {
		return nil, nil, err
	}
	names, err := outputNames(info, req.Outputs)
	return inputs, names, err
}

// checkDecoded verifies what a successful decode must guarantee: tensors of
// the spec's element type whose data fills their shape, which survive an
// encode/decode round trip.
func checkDecoded(t *testing.T, info ModelInfo, inputs map[string]runtime.Tensor) {
	for name, tensor := range inputs {
		spec, ok := info.input(name)
		if !ok {
			t.Fatalf("decoded unknown input %q", name)
		}
		if tensor.ElemType() != spec.ElemType {
			t.Fatalf("input %q decoded as %s, spec %s", name, tensor.ElemType(), spec.ElemType)
		}
		n := int64(1)
		for _, d := range tensor.Shape() {
			if d < 1 {
				t.Fatalf("input %q has shape %v", name, tensor.Shape())
			}
			n *= d
		}
		if int64(tensor.Len()) != n {
			t.Fatalf("input %q has %d values for shape %v", name, tensor.Len(), tensor.Shape())
		}
		enc, err := appendData(nil, tensor)
		if err != nil {
			t.Fatalf("input %q does not encode: %v", name, err)
		}
		again, err := decodeData(enc, tensor.ElemType(), tensor.Shape())
		if err != nil {
			t.Fatalf("input %q: re-decoding %s: %v", name, enc, err)
		}
		if enc2, _ := appendData(nil, again); !bytes.Equal(enc, enc2) {
			t.Fatalf("input %q: round trip changed %s to %s", name, enc, enc2)
		}
	}
}

func FuzzDecodeInferRequest(f *testing.F) {
	for _, seed := range []string{
		`{"id":"1","inputs":[{"name":"f","shape":[1,4],"datatype":"FP32","data":[0.5,1,2,3]}]}`,
		`{"inputs":[{"name":"f","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8]]}],"outputs":[{"name":"y"}]}`,
		`{"inputs":[{"name":"u","shape":[1,2],"datatype":"UINT8","data":[[0,255]]},{"name":"b","shape":[2],"datatype":"BOOL","data":[true,false]}]}`,
		`{"inputs":[{"name":"i","shape":[3],"datatype":"INT64","data":[-9223372036854775808,0,9223372036854775807]}]}`,
		`{"inputs":[{"name":"d","shape":[2],"datatype":"FP64","data":[1e308,-1e-308]}]}`,
		`{"inputs":[{"name":"f","shape":[1,4],"datatype":"FP32","data":["NaN",1,2,3]}]}`,
		`{"inputs":[{"name":"f","shape":[1099511627776,4],"datatype":"FP32","data":[1]}]}`,
		`{"inputs":[{"name":"f","shape":[1,4],"datatype":"FP32","data":[[[[[[1]]]]]]}]}`,
		`{"inputs":[{"name":"f","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]}`,
		`{"inputs":[{"name":"j","shape":[3],"datatype":"INT32","data":[1,2,"3"]}]}`,
		``, `{}`, `null`, `[`, `{"inputs":null}`, `{"inputs":[{}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		inputs, names, err := decodeInferRequest(fuzzModel, body)
		if err != nil {
			if !errors.Is(err, runtime.ErrInvalidInput) {
				t.Fatalf("error %v is not an invalid-input error", err)
			}
			if statusOf(err) != http.StatusBadRequest {
				t.Fatalf("error %v maps to %d", err, statusOf(err))
			}
			return
		}
		checkDecoded(t, fuzzModel, inputs)
		for _, n := range names {
			if !fuzzModel.hasOutput(n) {
				t.Fatalf("unknown output %q accepted", n)
			}
		}
	})
}

func FuzzDecodePayload(f *testing.F) {
	single := ModelInfo{Name: "vib", Inputs: []runtime.TensorSpec{{Name: "window", ElemType: runtime.Float32, Shape: []int64{-1, 4}}}}
	for _, seed := range []string{
		`[1,2,3,4]`, `[[1,2,3,4],[5,6,7,8]]`, `{"window":[1,2,3,4]}`, `{"nope":[1]}`, `hello`, ``, `[`, `{"window":"x"}`,
		"\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40",
	} {
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, payload []byte, raw bool) {
		format := FormatJSON
		if raw {
			format = FormatF32LE
		}
		for _, info := range []ModelInfo{single, fuzzModel} {
			inputs, err := decodePayload(format, payload, info)
			if err != nil {
				if !errors.Is(err, runtime.ErrInvalidInput) {
					t.Fatalf("error %v is not an invalid-input error", err)
				}
				continue
			}
			checkDecoded(t, info, inputs)
		}
	})
}

func TestAppendData(t *testing.T) {
	b, err := appendData(nil, runtime.NewTensor([]int64{3}, []float32{0.1, 1e-7, 3}))
	if err != nil || string(b) != "[0.1,1e-07,3]" {
		t.Errorf("appendData = %s, %v", b, err)
	}
	b, err = appendData(nil, runtime.NewTensor([]int64{2}, []uint8{7, 255}))
	if err != nil || string(b) != "[7,255]" {
		t.Errorf("appendData uint8 = %s, %v", b, err)
	}
	if _, err := appendData(nil, runtime.NewTensor([]int64{1}, []float32{float32(math.Inf(1))})); err == nil {
		t.Error("an infinite output encoded without error")
	}
}

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{invalid("x"), 400},
		{ErrUnknownModel, 404},
		{runtime.ErrNotLoaded, 404},
		{ErrOverloaded, 503},
		{runtime.ErrBusy, 503},
		{runtime.ErrClosed, 503},
		{context.Canceled, 503},
		{context.DeadlineExceeded, 504},
		{runtime.ErrRun, 500},
		{errors.New("anything"), 500},
	} {
		if got := statusOf(tc.err); got != tc.want {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	msg := clientMessage("vib", errors.New("run /var/lib/modelfleet/blobs/sha256/abc: ORT said boom"))
	if strings.Contains(msg, "/var/lib") || !strings.Contains(msg, "log") {
		t.Errorf("run failure message for the client = %q: leaks internals or lacks the pointer to the log", msg)
	}
}
