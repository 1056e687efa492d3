package runtime

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// This file converts between this package's tensors and onnxruntime_go's.

// elemTypeFromORT names an ONNX Runtime element type. Unsupported types get
// their ONNX name too ("float16", "string", …), so that a spec mismatch can
// say what the model really wants.
func elemTypeFromORT(dt ort.TensorElementDataType) ElemType {
	switch dt {
	case ort.TensorElementDataTypeFloat:
		return Float32
	case ort.TensorElementDataTypeDouble:
		return Float64
	case ort.TensorElementDataTypeInt64:
		return Int64
	case ort.TensorElementDataTypeInt32:
		return Int32
	case ort.TensorElementDataTypeUint8:
		return Uint8
	case ort.TensorElementDataTypeBool:
		return Bool
	case ort.TensorElementDataTypeInt8:
		return "int8"
	case ort.TensorElementDataTypeUint16:
		return "uint16"
	case ort.TensorElementDataTypeInt16:
		return "int16"
	case ort.TensorElementDataTypeUint32:
		return "uint32"
	case ort.TensorElementDataTypeUint64:
		return "uint64"
	case ort.TensorElementDataTypeString:
		return "string"
	case ort.TensorElementDataTypeFloat16:
		return "float16"
	case ort.TensorElementDataTypeBFloat16:
		return "bfloat16"
	case ort.TensorElementDataTypeComplex64:
		return "complex64"
	case ort.TensorElementDataTypeComplex128:
		return "complex128"
	}
	return ElemType(fmt.Sprintf("onnx-type-%d", int(dt)))
}

// specFromORT turns ONNX Runtime's description of a model input or output
// into a TensorSpec. Values that are not tensors get an ElemType naming
// their kind ("sequence", "map", …), which no spec can match.
func specFromORT(info ort.InputOutputInfo) TensorSpec {
	s := TensorSpec{Name: info.Name, Shape: []int64(info.Dimensions.Clone())}
	switch info.OrtValueType {
	case ort.ONNXTypeTensor:
		s.ElemType = elemTypeFromORT(info.DataType)
	case ort.ONNXTypeSparseTensor:
		s.ElemType = "sparse-tensor"
	case ort.ONNXTypeSequence:
		s.ElemType = "sequence"
	case ort.ONNXTypeMap:
		s.ElemType = "map"
	case ort.ONNXTypeOptional:
		s.ElemType = "optional"
	default:
		s.ElemType = "opaque"
	}
	// ONNX Runtime reports symbolic and unknown dimensions as -1; older
	// exporters may leave them at 0. Either way the model takes any size.
	for i, d := range s.Shape {
		if d < 1 {
			s.Shape[i] = Dynamic
		}
	}
	return s
}

// toORT wraps t's data, without copying it, in an ONNX Runtime tensor that
// the caller must Destroy. t has been validated.
func (t Tensor) toORT() (ort.Value, error) {
	shape := ort.Shape(t.shape)
	switch d := t.data.(type) {
	case []float32:
		return ort.NewTensor(shape, d)
	case []float64:
		return ort.NewTensor(shape, d)
	case []int64:
		return ort.NewTensor(shape, d)
	case []int32:
		return ort.NewTensor(shape, d)
	case []uint8:
		return ort.NewTensor(shape, d)
	case []bool:
		return ort.NewTensor(shape, d)
	}
	return nil, fmt.Errorf("tensor has no data")
}

// fromORT takes the data of an ONNX Runtime tensor. onnxruntime_go backs
// every non-string tensor with a Go slice (it copies the outputs ONNX
// Runtime allocates), so the slice stays valid after v is destroyed and is
// returned without another copy.
func fromORT(v ort.Value) (Tensor, error) {
	shape := []int64(v.GetShape()) // GetShape returns a copy
	switch v := v.(type) {
	case *ort.Tensor[float32]:
		return Tensor{shape: shape, data: v.GetData()}, nil
	case *ort.Tensor[float64]:
		return Tensor{shape: shape, data: v.GetData()}, nil
	case *ort.Tensor[int64]:
		return Tensor{shape: shape, data: v.GetData()}, nil
	case *ort.Tensor[int32]:
		return Tensor{shape: shape, data: v.GetData()}, nil
	case *ort.Tensor[uint8]:
		return Tensor{shape: shape, data: v.GetData()}, nil
	case *ort.Tensor[bool]:
		return Tensor{shape: shape, data: v.GetData()}, nil
	}
	return Tensor{}, fmt.Errorf("ONNX Runtime returned a %T, which this agent does not support", v)
}

// destroyAll releases the ONNX Runtime values in vs, skipping nils.
func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v != nil {
			_ = v.Destroy() // always nil for tensors
		}
	}
}
