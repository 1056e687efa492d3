package runtime_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
)

func TestZeros(t *testing.T) {
	for _, et := range runtime.ElemTypes() {
		z, err := runtime.Zeros(et, []int64{2, 3})
		if err != nil {
			t.Fatalf("Zeros(%s): %v", et, err)
		}
		if z.ElemType() != et || z.Len() != 6 || !slices.Equal(z.Shape(), []int64{2, 3}) {
			t.Errorf("Zeros(%s) = %s with %d values", et, z, z.Len())
		}
	}
	for _, tc := range []struct {
		et    runtime.ElemType
		shape []int64
		want  string
	}{
		{"float16", []int64{1}, `unsupported element type "float16"`},
		{runtime.Float32, nil, "scalars are not supported"},
		{runtime.Float32, []int64{2, 0}, "dimension 1 is 0"},
		{runtime.Int64, []int64{1 << 40, 2}, "more than"},
	} {
		if _, err := runtime.Zeros(tc.et, tc.shape); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Zeros(%s, %v) = %v, want an error mentioning %q", tc.et, tc.shape, err, tc.want)
		}
	}
}

func TestTensorAccessors(t *testing.T) {
	var zero runtime.Tensor
	if zero.ElemType() != "" || zero.Len() != 0 || zero.String() != "(no data) []" {
		t.Errorf("zero Tensor: %q, %d, %q", zero.ElemType(), zero.Len(), zero)
	}
	x := runtime.NewTensor([]int64{1, 2}, []int64{7, 8})
	if x.ElemType() != runtime.Int64 || x.String() != "int64 [1,2]" || !slices.Equal(x.Int64(), []int64{7, 8}) {
		t.Errorf("int64 tensor: %s %v", x, x.Int64())
	}
	if x.Float32() != nil || x.Float64() != nil || x.Int32() != nil || x.Uint8() != nil || x.Bool() != nil {
		t.Error("accessors of other types are not nil")
	}
	spec := runtime.TensorSpec{Name: "window", ElemType: runtime.Float32, Shape: []int64{runtime.Dynamic, 64}}
	if got := spec.String(); got != `"window" float32 [-1,64]` {
		t.Errorf("TensorSpec.String = %s", got)
	}
}
