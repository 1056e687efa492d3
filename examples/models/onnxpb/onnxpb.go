// Package onnxpb encodes ONNX models: the ModelProto message of the ONNX
// IR spec (onnx.proto), written with protowire and no generated code, so
// that examples and tests can build small, real models without Python.
//
// The types cover the subset of the spec that small inference graphs need:
// a model with opset imports and one graph of nodes, attributes, tensor
// initializers and tensor-typed inputs and outputs. Marshal encodes what it
// is given without validating it, so tests can also build models that ONNX
// Runtime must reject; ONNX Runtime is the validator.
package onnxpb

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// DataType is TensorProto.DataType, the element type of a tensor.
type DataType int32

// Tensor element types (TensorProto.DataType values).
const (
	Float   DataType = 1
	Uint8   DataType = 2
	Int8    DataType = 3
	Uint16  DataType = 4
	Int16   DataType = 5
	Int32   DataType = 6
	Int64   DataType = 7
	String  DataType = 8
	Bool    DataType = 9
	Float16 DataType = 10
	Double  DataType = 11
	Uint32  DataType = 12
	Uint64  DataType = 13
)

// AttributeType is AttributeProto.AttributeType, the kind of value an
// attribute holds.
type AttributeType int32

// Attribute kinds supported by [Attribute].
const (
	AttrFloat   AttributeType = 1
	AttrInt     AttributeType = 2
	AttrString  AttributeType = 3
	AttrTensor  AttributeType = 4
	AttrFloats  AttributeType = 6
	AttrInts    AttributeType = 7
	AttrStrings AttributeType = 8
)

// Field numbers from onnx.proto. The spec is proto2: repeated scalars are
// unpacked unless declared [packed = true] (the TensorProto data fields).
const (
	modelIRVersion       = 1
	modelProducerName    = 2
	modelProducerVersion = 3
	modelDomain          = 4
	modelModelVersion    = 5
	modelDocString       = 6
	modelGraph           = 7
	modelOpsetImport     = 8
	modelMetadataProps   = 14

	opsetDomain  = 1
	opsetVersion = 2

	entryKey   = 1
	entryValue = 2

	graphNode        = 1
	graphName        = 2
	graphInitializer = 5
	graphDocString   = 10
	graphInput       = 11
	graphOutput      = 12
	graphValueInfo   = 13

	nodeInput     = 1
	nodeOutput    = 2
	nodeName      = 3
	nodeOpType    = 4
	nodeAttribute = 5
	nodeDocString = 6
	nodeDomain    = 7

	attrName    = 1
	attrF       = 2
	attrI       = 3
	attrS       = 4
	attrT       = 5
	attrFloats  = 7
	attrInts    = 8
	attrStrings = 9
	attrType    = 20

	tensorDims      = 1
	tensorDataType  = 2
	tensorFloatData = 4 // packed
	tensorInt32Data = 5 // packed
	tensorInt64Data = 7 // packed
	tensorName      = 8
	tensorRawData   = 9
	tensorDocString = 12

	valueInfoName      = 1
	valueInfoType      = 2
	valueInfoDocString = 3

	typeTensorType     = 1 // TypeProto.tensor_type
	tensorTypeElemType = 1 // TypeProto.Tensor.elem_type
	tensorTypeShape    = 2 // TypeProto.Tensor.shape
	shapeDim           = 1 // TensorShapeProto.dim
	dimValue           = 1 // TensorShapeProto.Dimension.dim_value
	dimParam           = 2 // TensorShapeProto.Dimension.dim_param
)

// Model is an ONNX ModelProto.
type Model struct {
	// IRVersion is the ONNX IR version the model follows (e.g. 8).
	IRVersion int64
	// OpsetImports lists the operator sets the graph uses; an empty domain
	// is the default "ai.onnx" set.
	OpsetImports    []OpsetID
	ProducerName    string // tool that wrote the model
	ProducerVersion string // version of that tool
	Domain          string // reverse-DNS namespace of the model
	ModelVersion    int64  // the model's own version number
	DocString       string // human-readable description
	Graph           Graph
	// Metadata is ModelProto.metadata_props, in order.
	Metadata []StringEntry
}

// OpsetID is an OperatorSetIdProto: an operator set and its version.
type OpsetID struct {
	Domain  string // "" for the default ai.onnx domain
	Version int64
}

// StringEntry is a StringStringEntryProto, a metadata key and value.
type StringEntry struct {
	Key, Value string
}

// Graph is a GraphProto: the computation of a model.
type Graph struct {
	Name         string
	Nodes        []Node   // in topological order
	Initializers []Tensor // constant tensors, referenced by name
	Inputs       []ValueInfo
	Outputs      []ValueInfo
	ValueInfo    []ValueInfo // optional types of intermediate values
	DocString    string
}

// Node is a NodeProto: one operator application.
type Node struct {
	Name   string
	OpType string // e.g. "MatMul"
	Domain string // "" for the default ai.onnx domain
	// Inputs and Outputs name values; an empty string is an omitted
	// optional input or output and is encoded as such.
	Inputs     []string
	Outputs    []string
	Attributes []Attribute
	DocString  string
}

// Attribute is an AttributeProto. Type selects the one value field that is
// encoded; the others are ignored.
type Attribute struct {
	Name    string
	Type    AttributeType
	F       float32
	I       int64
	S       []byte
	T       *Tensor
	Floats  []float32
	Ints    []int64
	Strings [][]byte
}

// Tensor is a TensorProto. Data goes in the field matching DataType
// (FloatData for Float, Int32Data for the small integer types and Bool,
// Int64Data for Int64), or little-endian in RawData.
type Tensor struct {
	Name      string
	DataType  DataType
	Dims      []int64
	FloatData []float32
	Int32Data []int32
	Int64Data []int64
	RawData   []byte
	DocString string
}

// ValueInfo is a ValueInfoProto for a tensor value: its name, element type
// and shape.
type ValueInfo struct {
	Name     string
	ElemType DataType
	// Shape lists the dimensions; empty means a scalar.
	Shape []Dim
	// UnknownRank omits the shape altogether: a tensor of any rank.
	UnknownRank bool
	DocString   string
}

// Dim is one TensorShapeProto.Dimension: a fixed size, or, when Param is
// set, a named symbolic size such as "batch" that is fixed at run time.
type Dim struct {
	Value int64
	Param string
}

// Dims returns fixed dimensions of the given sizes.
func Dims(sizes ...int64) []Dim {
	ds := make([]Dim, len(sizes))
	for i, s := range sizes {
		ds[i] = Dim{Value: s}
	}
	return ds
}

// TensorInfo returns the ValueInfo of a tensor named name.
func TensorInfo(name string, elem DataType, shape ...Dim) ValueInfo {
	return ValueInfo{Name: name, ElemType: elem, Shape: shape}
}

// FloatTensor returns a float32 tensor with the given dimensions and data,
// for initializers.
func FloatTensor(name string, dims []int64, data []float32) Tensor {
	return Tensor{Name: name, DataType: Float, Dims: dims, FloatData: data}
}

// Marshal returns the protobuf encoding of m, the content of a .onnx file.
// The output depends only on m: fields are written in a fixed order.
func (m *Model) Marshal() []byte {
	var b []byte
	b = appendVarintField(b, modelIRVersion, uint64(m.IRVersion))
	b = appendNonEmptyString(b, modelProducerName, m.ProducerName)
	b = appendNonEmptyString(b, modelProducerVersion, m.ProducerVersion)
	b = appendNonEmptyString(b, modelDomain, m.Domain)
	if m.ModelVersion != 0 {
		b = appendVarintField(b, modelModelVersion, uint64(m.ModelVersion))
	}
	b = appendNonEmptyString(b, modelDocString, m.DocString)
	b = appendMessage(b, modelGraph, m.Graph.marshal())
	for _, o := range m.OpsetImports {
		b = appendMessage(b, modelOpsetImport, o.marshal())
	}
	for _, e := range m.Metadata {
		b = appendMessage(b, modelMetadataProps, e.marshal())
	}
	return b
}

func (o OpsetID) marshal() []byte {
	var b []byte
	b = appendNonEmptyString(b, opsetDomain, o.Domain)
	return appendVarintField(b, opsetVersion, uint64(o.Version))
}

func (e StringEntry) marshal() []byte {
	var b []byte
	b = appendStringField(b, entryKey, e.Key)
	return appendStringField(b, entryValue, e.Value)
}

func (g *Graph) marshal() []byte {
	var b []byte
	for i := range g.Nodes {
		b = appendMessage(b, graphNode, g.Nodes[i].marshal())
	}
	b = appendNonEmptyString(b, graphName, g.Name)
	for i := range g.Initializers {
		b = appendMessage(b, graphInitializer, g.Initializers[i].marshal())
	}
	b = appendNonEmptyString(b, graphDocString, g.DocString)
	for i := range g.Inputs {
		b = appendMessage(b, graphInput, g.Inputs[i].marshal())
	}
	for i := range g.Outputs {
		b = appendMessage(b, graphOutput, g.Outputs[i].marshal())
	}
	for i := range g.ValueInfo {
		b = appendMessage(b, graphValueInfo, g.ValueInfo[i].marshal())
	}
	return b
}

func (n *Node) marshal() []byte {
	var b []byte
	for _, in := range n.Inputs {
		b = appendStringField(b, nodeInput, in)
	}
	for _, out := range n.Outputs {
		b = appendStringField(b, nodeOutput, out)
	}
	b = appendNonEmptyString(b, nodeName, n.Name)
	b = appendStringField(b, nodeOpType, n.OpType)
	for i := range n.Attributes {
		b = appendMessage(b, nodeAttribute, n.Attributes[i].marshal())
	}
	b = appendNonEmptyString(b, nodeDocString, n.DocString)
	return appendNonEmptyString(b, nodeDomain, n.Domain)
}

func (a *Attribute) marshal() []byte {
	var b []byte
	b = appendStringField(b, attrName, a.Name)
	switch a.Type {
	case AttrFloat:
		b = appendFixed32Field(b, attrF, math.Float32bits(a.F))
	case AttrInt:
		b = appendVarintField(b, attrI, uint64(a.I))
	case AttrString:
		b = appendBytesField(b, attrS, a.S)
	case AttrTensor:
		if a.T != nil {
			b = appendMessage(b, attrT, a.T.marshal())
		}
	case AttrFloats:
		for _, f := range a.Floats {
			b = appendFixed32Field(b, attrFloats, math.Float32bits(f))
		}
	case AttrInts:
		for _, i := range a.Ints {
			b = appendVarintField(b, attrInts, uint64(i))
		}
	case AttrStrings:
		for _, s := range a.Strings {
			b = appendBytesField(b, attrStrings, s)
		}
	}
	return appendVarintField(b, attrType, uint64(a.Type))
}

func (t *Tensor) marshal() []byte {
	var b []byte
	for _, d := range t.Dims {
		b = appendVarintField(b, tensorDims, uint64(d))
	}
	b = appendVarintField(b, tensorDataType, uint64(t.DataType))
	if len(t.FloatData) > 0 {
		packed := make([]byte, 0, 4*len(t.FloatData))
		for _, f := range t.FloatData {
			packed = protowire.AppendFixed32(packed, math.Float32bits(f))
		}
		b = appendBytesField(b, tensorFloatData, packed)
	}
	if len(t.Int32Data) > 0 {
		var packed []byte
		for _, v := range t.Int32Data {
			// int32 is sign-extended to 64 bits on the wire.
			packed = protowire.AppendVarint(packed, uint64(int64(v)))
		}
		b = appendBytesField(b, tensorInt32Data, packed)
	}
	if len(t.Int64Data) > 0 {
		var packed []byte
		for _, v := range t.Int64Data {
			packed = protowire.AppendVarint(packed, uint64(v))
		}
		b = appendBytesField(b, tensorInt64Data, packed)
	}
	b = appendNonEmptyString(b, tensorName, t.Name)
	if t.RawData != nil {
		b = appendBytesField(b, tensorRawData, t.RawData)
	}
	return appendNonEmptyString(b, tensorDocString, t.DocString)
}

func (v *ValueInfo) marshal() []byte {
	var tensorType []byte
	tensorType = appendVarintField(tensorType, tensorTypeElemType, uint64(v.ElemType))
	if !v.UnknownRank {
		var shape []byte
		for _, d := range v.Shape {
			shape = appendMessage(shape, shapeDim, d.marshal())
		}
		tensorType = appendMessage(tensorType, tensorTypeShape, shape)
	}
	var typ []byte
	typ = appendMessage(typ, typeTensorType, tensorType)

	var b []byte
	b = appendStringField(b, valueInfoName, v.Name)
	b = appendMessage(b, valueInfoType, typ)
	return appendNonEmptyString(b, valueInfoDocString, v.DocString)
}

func (d Dim) marshal() []byte {
	if d.Param != "" {
		return appendStringField(nil, dimParam, d.Param)
	}
	return appendVarintField(nil, dimValue, uint64(d.Value))
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendFixed32Field(b []byte, num protowire.Number, v uint32) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, v)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendNonEmptyString writes an optional string field only when set.
func appendNonEmptyString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return appendStringField(b, num, s)
}

func appendMessage(b []byte, num protowire.Number, msg []byte) []byte {
	return appendBytesField(b, num, msg)
}
