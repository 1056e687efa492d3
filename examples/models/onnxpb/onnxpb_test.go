package onnxpb

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// field is one decoded protobuf field: varint and fixed32 values in v,
// length-delimited ones in b.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   string
}

func (f field) String() string {
	if f.typ == protowire.BytesType {
		return fmt.Sprintf("%d:%q", f.num, f.b)
	}
	return fmt.Sprintf("%d/%d:%d", f.num, f.typ, f.v)
}

// decode splits b into fields with protowire.ConsumeField, one level deep.
func decode(t *testing.T, b []byte) []field {
	t.Helper()
	var fs []field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			t.Fatalf("ConsumeField: %v", protowire.ParseError(n))
		}
		_, _, tagLen := protowire.ConsumeTag(b)
		val := b[tagLen:n]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, _ = protowire.ConsumeVarint(val)
		case protowire.Fixed32Type:
			v, _ := protowire.ConsumeFixed32(val)
			f.v = uint64(v)
		case protowire.BytesType:
			v, _ := protowire.ConsumeBytes(val)
			f.b = string(v)
		default:
			t.Fatalf("unexpected wire type %d", typ)
		}
		fs = append(fs, f)
		b = b[n:]
	}
	return fs
}

func varint(num protowire.Number, v uint64) field {
	return field{num: num, typ: protowire.VarintType, v: v}
}

func fixed32(num protowire.Number, v uint32) field {
	return field{num: num, typ: protowire.Fixed32Type, v: uint64(v)}
}

func bytesField(num protowire.Number, b []byte) field {
	return field{num: num, typ: protowire.BytesType, b: string(b)}
}

func str(num protowire.Number, s string) field {
	return field{num: num, typ: protowire.BytesType, b: s}
}

func packedFloats(fs ...float32) []byte {
	var b []byte
	for _, f := range fs {
		b = protowire.AppendFixed32(b, math.Float32bits(f))
	}
	return b
}

func TestEncodeFields(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []field
	}{
		{
			name: "default-domain opset omits domain",
			got:  OpsetID{Version: 13}.marshal(),
			want: []field{varint(opsetVersion, 13)},
		},
		{
			name: "opset with domain",
			got:  OpsetID{Domain: "ai.onnx.ml", Version: 3}.marshal(),
			want: []field{str(opsetDomain, "ai.onnx.ml"), varint(opsetVersion, 3)},
		},
		{
			name: "fixed dimension, zero included",
			got:  Dim{Value: 0}.marshal(),
			want: []field{varint(dimValue, 0)},
		},
		{
			name: "symbolic dimension",
			got:  Dim{Param: "batch"}.marshal(),
			want: []field{str(dimParam, "batch")},
		},
		{
			name: "float tensor: unpacked dims, packed data",
			got:  (&Tensor{Name: "w", DataType: Float, Dims: []int64{2, 1}, FloatData: []float32{1.5, -2}}).marshal(),
			want: []field{
				varint(tensorDims, 2), varint(tensorDims, 1),
				varint(tensorDataType, uint64(Float)),
				bytesField(tensorFloatData, packedFloats(1.5, -2)),
				str(tensorName, "w"),
			},
		},
		{
			name: "int32 data is sign-extended",
			got:  (&Tensor{DataType: Int32, Dims: []int64{1}, Int32Data: []int32{-1}}).marshal(),
			want: []field{
				varint(tensorDims, 1),
				varint(tensorDataType, uint64(Int32)),
				bytesField(tensorInt32Data, protowire.AppendVarint(nil, math.MaxUint64)),
			},
		},
		{
			name: "node keeps empty optional inputs",
			got:  (&Node{Name: "n", OpType: "Clip", Inputs: []string{"x", "", "max"}, Outputs: []string{"y"}}).marshal(),
			want: []field{
				str(nodeInput, "x"), str(nodeInput, ""), str(nodeInput, "max"),
				str(nodeOutput, "y"), str(nodeName, "n"), str(nodeOpType, "Clip"),
			},
		},
		{
			name: "int attribute",
			got:  (&Attribute{Name: "axis", Type: AttrInt, I: -1}).marshal(),
			want: []field{str(attrName, "axis"), varint(attrI, math.MaxUint64), varint(attrType, uint64(AttrInt))},
		},
		{
			name: "float attribute",
			got:  (&Attribute{Name: "alpha", Type: AttrFloat, F: 0.5, I: 9}).marshal(),
			want: []field{str(attrName, "alpha"), fixed32(attrF, math.Float32bits(0.5)), varint(attrType, uint64(AttrFloat))},
		},
		{
			name: "ints attribute is unpacked",
			got:  (&Attribute{Name: "perm", Type: AttrInts, Ints: []int64{1, 0}}).marshal(),
			want: []field{str(attrName, "perm"), varint(attrInts, 1), varint(attrInts, 0), varint(attrType, uint64(AttrInts))},
		},
		{
			name: "metadata entry",
			got:  StringEntry{Key: "k", Value: "v"}.marshal(),
			want: []field{str(entryKey, "k"), str(entryValue, "v")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decode(t, tt.got); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("fields = %v\nwant     %v", got, tt.want)
			}
		})
	}
}

// TestEncodeValueInfo follows the nesting ValueInfoProto → TypeProto →
// TypeProto.Tensor → TensorShapeProto → Dimension.
func TestEncodeValueInfo(t *testing.T) {
	vi := TensorInfo("window", Float, Dim{Param: "batch"}, Dim{Value: 64})
	fs := decode(t, vi.marshal())
	if len(fs) != 2 || fs[0] != str(valueInfoName, "window") || fs[1].num != valueInfoType {
		t.Fatalf("ValueInfoProto fields = %v", fs)
	}
	typ := decode(t, []byte(fs[1].b))
	if len(typ) != 1 || typ[0].num != typeTensorType {
		t.Fatalf("TypeProto fields = %v", typ)
	}
	tensorType := decode(t, []byte(typ[0].b))
	if len(tensorType) != 2 || tensorType[0] != varint(tensorTypeElemType, uint64(Float)) || tensorType[1].num != tensorTypeShape {
		t.Fatalf("TypeProto.Tensor fields = %v", tensorType)
	}
	want := []field{
		bytesField(shapeDim, Dim{Param: "batch"}.marshal()),
		bytesField(shapeDim, Dim{Value: 64}.marshal()),
	}
	if got := decode(t, []byte(tensorType[1].b)); !reflect.DeepEqual(got, want) {
		t.Errorf("TensorShapeProto fields = %v, want %v", got, want)
	}

	// A scalar has an empty shape; an unknown rank has none.
	scalarInfo := TensorInfo("s", Float)
	scalar := decode(t, []byte(decode(t, []byte(decode(t, scalarInfo.marshal())[1].b))[0].b))
	if len(scalar) != 2 || scalar[1] != str(tensorTypeShape, "") {
		t.Errorf("scalar TypeProto.Tensor = %v, want an empty shape", scalar)
	}
	anyRank := ValueInfo{Name: "a", ElemType: Float, UnknownRank: true}
	if got := decode(t, []byte(decode(t, []byte(decode(t, anyRank.marshal())[1].b))[0].b)); len(got) != 1 {
		t.Errorf("unknown-rank TypeProto.Tensor = %v, want no shape", got)
	}
}

func TestModelMarshal(t *testing.T) {
	m := &Model{
		IRVersion:    8,
		OpsetImports: []OpsetID{{Version: 13}},
		ProducerName: "test",
		Graph: Graph{
			Name:    "g",
			Nodes:   []Node{{OpType: "Relu", Inputs: []string{"x"}, Outputs: []string{"y"}}},
			Inputs:  []ValueInfo{TensorInfo("x", Float, Dims(1, 4)...)},
			Outputs: []ValueInfo{TensorInfo("y", Float, Dims(1, 4)...)},
		},
		Metadata: []StringEntry{{"k", "v"}},
	}
	b := m.Marshal()
	if !bytes.Equal(b, m.Marshal()) {
		t.Fatal("Marshal is not deterministic")
	}
	fs := decode(t, b)
	var nums []protowire.Number
	for _, f := range fs {
		nums = append(nums, f.num)
	}
	wantNums := []protowire.Number{modelIRVersion, modelProducerName, modelGraph, modelOpsetImport, modelMetadataProps}
	if !reflect.DeepEqual(nums, wantNums) {
		t.Fatalf("ModelProto fields %v, want %v", nums, wantNums)
	}
	if fs[0].v != 8 {
		t.Errorf("ir_version = %d, want 8", fs[0].v)
	}
	graph := decode(t, []byte(fs[2].b))
	wantGraph := []protowire.Number{graphNode, graphName, graphInput, graphOutput}
	var got []protowire.Number
	for _, f := range graph {
		got = append(got, f.num)
	}
	if !reflect.DeepEqual(got, wantGraph) {
		t.Errorf("GraphProto fields %v, want %v", got, wantGraph)
	}
}
