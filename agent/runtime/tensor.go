package runtime

import (
	"fmt"
	"strconv"
	"strings"
)

// ElemType names the element type of a tensor, as model manifests spell it.
type ElemType string

// Element types a [Session] can take and return. Models whose inputs or
// outputs use any other type (float16, string, …) are refused by [Open].
const (
	Float32 ElemType = "float32"
	Float64 ElemType = "float64"
	Int64   ElemType = "int64"
	Int32   ElemType = "int32"
	Uint8   ElemType = "uint8"
	Bool    ElemType = "bool"
)

// ElemTypes returns the supported element types, in a fixed order.
func ElemTypes() []ElemType {
	return []ElemType{Float32, Float64, Int64, Int32, Uint8, Bool}
}

// supported reports whether t is one of [ElemTypes].
func (t ElemType) supported() bool {
	switch t {
	case Float32, Float64, Int64, Int32, Uint8, Bool:
		return true
	}
	return false
}

// Element is the set of Go types that hold tensor data, one per [ElemType].
type Element interface {
	float32 | float64 | int64 | int32 | uint8 | bool
}

// Dynamic marks a dimension of a [TensorSpec] whose size is chosen by each
// request (a batch dimension, for example), as ONNX Runtime reports it.
const Dynamic int64 = -1

// TensorSpec declares one input or output of a model: what the model
// manifest promises and what [Session.Run] checks requests against.
type TensorSpec struct {
	// Name is the tensor's name in the ONNX graph.
	Name string
	// ElemType is the element type; see [ElemTypes].
	ElemType ElemType
	// Shape lists the dimensions; [Dynamic] (-1) is any size of at least 1,
	// fixed per request. Rank 0 (scalars) is not supported.
	Shape []int64
}

// String formats the spec as `"window" float32 [1,64]`.
func (s TensorSpec) String() string {
	return fmt.Sprintf("%q %s %s", s.Name, s.ElemType, formatShape(s.Shape))
}

// hasDynamic reports whether any dimension is [Dynamic].
func (s TensorSpec) hasDynamic() bool {
	for _, d := range s.Shape {
		if d == Dynamic {
			return true
		}
	}
	return false
}

// Tensor is a dense tensor in row-major order: a shape and a Go slice of one
// [Element] type. Create tensors with [NewTensor] or [Zeros]; read the data
// with the typed accessors ([Tensor.Float32], …) or [TensorData].
//
// A Tensor does not copy the slice it is given: [Session.Run] hands it to
// ONNX Runtime as is, so it must not be modified while a Run that uses it is
// in progress. Tensors returned by Run own their data.
type Tensor struct {
	shape []int64
	data  any // nil or one of []float32, []float64, []int64, []int32, []uint8, []bool
}

// NewTensor returns a tensor of the given shape over data, which it does
// not copy. The element type follows from T. Shape and data length are
// checked when the tensor is used, by [Session.Run], so that a request
// with a bad shape gets an [ErrInvalidInput] naming the tensor.
func NewTensor[T Element](shape []int64, data []T) Tensor {
	return Tensor{shape: shape, data: data}
}

// Zeros returns a tensor of the given shape and type filled with zeros
// (false for [Bool]). Every dimension must be at least 1.
func Zeros(t ElemType, shape []int64) (Tensor, error) {
	n, err := elementCount(shape)
	if err != nil {
		return Tensor{}, err
	}
	var data any
	switch t {
	case Float32:
		data = make([]float32, n)
	case Float64:
		data = make([]float64, n)
	case Int64:
		data = make([]int64, n)
	case Int32:
		data = make([]int32, n)
	case Uint8:
		data = make([]uint8, n)
	case Bool:
		data = make([]bool, n)
	default:
		return Tensor{}, fmt.Errorf("unsupported element type %q (supported: %s)", t, supportedList())
	}
	return Tensor{shape: append([]int64(nil), shape...), data: data}, nil
}

// ElemType returns the element type, or "" for the zero Tensor.
func (t Tensor) ElemType() ElemType {
	switch t.data.(type) {
	case []float32:
		return Float32
	case []float64:
		return Float64
	case []int64:
		return Int64
	case []int32:
		return Int32
	case []uint8:
		return Uint8
	case []bool:
		return Bool
	}
	return ""
}

// Shape returns the dimensions. The slice is the tensor's own: do not
// modify it.
func (t Tensor) Shape() []int64 { return t.shape }

// Len returns the number of elements in the data slice.
func (t Tensor) Len() int {
	switch d := t.data.(type) {
	case []float32:
		return len(d)
	case []float64:
		return len(d)
	case []int64:
		return len(d)
	case []int32:
		return len(d)
	case []uint8:
		return len(d)
	case []bool:
		return len(d)
	}
	return 0
}

// Float32 returns the data of a [Float32] tensor, nil for other types.
func (t Tensor) Float32() []float32 { d, _ := t.data.([]float32); return d }

// Float64 returns the data of a [Float64] tensor, nil for other types.
func (t Tensor) Float64() []float64 { d, _ := t.data.([]float64); return d }

// Int64 returns the data of an [Int64] tensor, nil for other types.
func (t Tensor) Int64() []int64 { d, _ := t.data.([]int64); return d }

// Int32 returns the data of an [Int32] tensor, nil for other types.
func (t Tensor) Int32() []int32 { d, _ := t.data.([]int32); return d }

// Uint8 returns the data of a [Uint8] tensor, nil for other types.
func (t Tensor) Uint8() []uint8 { d, _ := t.data.([]uint8); return d }

// Bool returns the data of a [Bool] tensor, nil for other types.
func (t Tensor) Bool() []bool { d, _ := t.data.([]bool); return d }

// TensorData returns t's data as []T, and false when t holds another
// element type.
func TensorData[T Element](t Tensor) ([]T, bool) {
	d, ok := t.data.([]T)
	return d, ok
}

// String describes the tensor without its data, as `float32 [1,64]`.
func (t Tensor) String() string {
	et := t.ElemType()
	if et == "" {
		et = "(no data)"
	}
	return string(et) + " " + formatShape(t.shape)
}

// elementCount is the product of shape's dimensions, each of which must be
// at least 1, without overflowing int.
func elementCount(shape []int64) (int, error) {
	if len(shape) == 0 {
		return 0, fmt.Errorf("shape has no dimensions (scalars are not supported)")
	}
	n := int64(1)
	for i, d := range shape {
		if d < 1 {
			return 0, fmt.Errorf("dimension %d is %d; every dimension must be at least 1", i, d)
		}
		// maxElements keeps n*d far from overflow and from sizes no edge
		// device could allocate.
		if n > maxElements/d {
			return 0, fmt.Errorf("shape %s has more than %d elements", formatShape(shape), int64(maxElements))
		}
		n *= d
	}
	return int(n), nil
}

// maxElements bounds the element count of one tensor (2^40, a TiB of
// bytes), so that a hostile shape cannot overflow the arithmetic.
const maxElements = 1 << 40

// formatShape writes dims as [1,64], the notation of ONNX tools and KServe.
func formatShape(dims []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range dims {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// supportedList is the supported element types for messages.
func supportedList() string {
	var names []string
	for _, t := range ElemTypes() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}
