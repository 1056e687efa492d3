package release

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/modelfleet/modelfleet/manifest"
)

// Limits of InspectONNX. They bound what is held in memory, not the model
// file: initializer data, however large, is skipped without being kept.
const (
	// MaxONNXBytes caps the model file InspectONNX walks (8 GiB, the
	// agent's default artifact cap, manifest.DefaultMaxArtifactBytes).
	MaxONNXBytes int64 = manifest.DefaultMaxArtifactBytes
	// MaxValueInfoBytes caps one graph input or output description
	// (ValueInfoProto, 1 MiB); real ones are a few dozen bytes.
	MaxValueInfoBytes = 1 << 20
	// MaxTensors caps the graph inputs plus outputs read (4096).
	MaxTensors = 4096
	// maxNameBytes caps an initializer name kept to recognise inputs that
	// are initializers.
	maxNameBytes = 64 << 10
	// maxRank is the highest tensor rank a manifest can describe.
	maxRank = 16
	// maxInitializers caps the initializer names kept.
	maxInitializers = 1 << 20
)

// ONNX protobuf field numbers (onnx.proto, proto2), of the fields read.
const (
	fieldModelGraph         = 7  // ModelProto.graph
	fieldGraphInitializer   = 5  // GraphProto.initializer
	fieldGraphInput         = 11 // GraphProto.input
	fieldGraphOutput        = 12 // GraphProto.output
	fieldTensorName         = 8  // TensorProto.name
	fieldValueInfoName      = 1  // ValueInfoProto.name
	fieldValueInfoType      = 2  // ValueInfoProto.type
	fieldTypeTensor         = 1  // TypeProto.tensor_type
	fieldTypeSequence       = 4  // TypeProto.sequence_type
	fieldTypeMap            = 5  // TypeProto.map_type
	fieldTypeSparse         = 8  // TypeProto.sparse_tensor_type
	fieldTypeOptional       = 9  // TypeProto.optional_type
	fieldTensorTypeElemType = 1  // TypeProto.Tensor.elem_type
	fieldTensorTypeShape    = 2  // TypeProto.Tensor.shape
	fieldShapeDim           = 1  // TensorShapeProto.dim
	fieldDimValue           = 1  // TensorShapeProto.Dimension.dim_value
	fieldDimParam           = 2  // TensorShapeProto.Dimension.dim_param
)

// onnxElementTypes maps ONNX TensorProto.DataType values to manifest
// element types (see manifest.ElementTypes).
var onnxElementTypes = map[uint64]string{
	1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
	7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32",
	13: "uint64", 16: "bfloat16",
}

// onnxTypeNames names the ONNX data types a manifest cannot describe, for
// error messages.
var onnxTypeNames = map[uint64]string{
	0: "UNDEFINED", 8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128",
	17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ",
	21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1",
}

// InspectONNXFile opens path and returns its graph's inputs and outputs (see
// InspectONNX).
func InspectONNXFile(path string) (inputs, outputs []manifest.TensorSpec, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	defer f.Close()
	inputs, outputs, err = InspectONNX(f)
	if err != nil {
		return nil, nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	return inputs, outputs, nil
}

// InspectONNX reads an ONNX model (a serialised ModelProto) and returns the
// tensor specs of its graph's inputs and outputs, in graph order, as a model
// manifest describes them. Inputs that are also initializers (constant
// weights, which older exporters list among the inputs) are left out. A
// dimension given by name (dim_param, e.g. "batch") or not given at all
// becomes -1 (dynamic).
//
// The decoder walks the protobuf as a stream: it keeps only names and the
// graph's input and output descriptions, and skips everything else (weights
// included) without holding it, seeking when r is an io.Seeker. It reads at
// most MaxONNXBytes.
//
// It returns an error wrapping ErrNotONNX when r is empty, is not a protobuf
// ModelProto with a graph that has outputs (a JPEG, random bytes, a text
// file) or is truncated (read without seeking, a truncated file may instead
// report the first other fault met before its end), and ErrUnsupported when the model is ONNX but a
// graph input or output cannot be described by a manifest: string, complex
// or 8-bit float tensors, sequences, maps, an unknown rank, a rank above 16,
// a zero-sized dimension. Other errors come from reading r.
func InspectONNX(r io.Reader) (inputs, outputs []manifest.TensorSpec, err error) {
	d := newDecoder(r)
	if err := d.init(); err != nil {
		return nil, nil, err
	}
	var g graphInfo
	haveGraph := false
	err = d.message(-1, func(num protowire.Number, typ protowire.Type) error {
		if num != fieldModelGraph {
			return d.skipValue(num, typ)
		}
		if typ != protowire.BytesType {
			return d.notONNX("ModelProto.graph has wire type %d, want a message", typ)
		}
		haveGraph = true
		n, err := d.length()
		if err != nil {
			return err
		}
		return d.message(d.off+n, func(num protowire.Number, typ protowire.Type) error {
			return d.graphField(&g, num, typ)
		})
	})
	if err != nil {
		return nil, nil, err
	}
	if d.off == 0 {
		return nil, nil, fmt.Errorf("%w: the file is empty", ErrNotONNX)
	}
	if !haveGraph {
		return nil, nil, fmt.Errorf("%w: no graph (ModelProto field 7) in %d bytes", ErrNotONNX, d.off)
	}
	if len(g.outputs) == 0 {
		return nil, nil, fmt.Errorf("%w: the graph declares no outputs", ErrNotONNX)
	}
	for _, in := range g.inputs {
		if !g.initializers[in.Name] {
			inputs = append(inputs, in)
		}
	}
	return inputs, g.outputs, nil
}

// graphInfo collects what InspectONNX keeps of a GraphProto.
type graphInfo struct {
	inputs, outputs []manifest.TensorSpec
	initializers    map[string]bool
}

// decoder walks a protobuf stream field by field.
type decoder struct {
	src    io.Reader
	br     *bufio.Reader
	seeker io.Seeker // src when it can seek, else nil
	size   int64     // bytes from the start position to the end, or -1
	off    int64     // bytes consumed
}

func newDecoder(r io.Reader) *decoder {
	d := &decoder{src: r, br: bufio.NewReaderSize(r, 64<<10), size: -1}
	if s, ok := r.(io.Seeker); ok {
		d.seeker = s
	}
	return d
}

// init learns the stream's size when it can seek, so lengths are checked
// against it and skipped data need not be read.
func (d *decoder) init() error {
	if d.seeker == nil {
		return nil
	}
	cur, err := d.seeker.Seek(0, io.SeekCurrent)
	if err != nil {
		d.seeker = nil // e.g. a pipe behind *os.File: read it instead
		return nil
	}
	end, err := d.seeker.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if _, err := d.seeker.Seek(cur, io.SeekStart); err != nil {
		return err
	}
	d.size = end - cur
	if d.size > MaxONNXBytes {
		return fmt.Errorf("%w: the file is %d bytes, above the %d-byte limit", ErrUnsupported, d.size, MaxONNXBytes)
	}
	return nil
}

func (d *decoder) notONNX(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrNotONNX, d.off, fmt.Sprintf(format, args...))
}

func (d *decoder) truncated() error {
	return fmt.Errorf("%w: truncated at byte %d (a field runs past the end of the file)", ErrNotONNX, d.off)
}

// readErr turns an early end of input into ErrNotONNX.
func (d *decoder) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return d.truncated()
	}
	return fmt.Errorf("read model at byte %d: %w", d.off, err)
}

// uvarint reads a base-128 varint.
func (d *decoder) uvarint() (uint64, error) {
	var v uint64
	for i := 0; i < protowire.SizeVarint(1<<63); i++ {
		b, err := d.br.ReadByte()
		if err != nil {
			return 0, d.readErr(err)
		}
		d.off++
		if i == 9 && b > 1 {
			return 0, d.notONNX("varint overflows 64 bits")
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, d.notONNX("varint longer than 10 bytes")
}

// length reads the length of a bytes field and checks it fits the input.
func (d *decoder) length() (int64, error) {
	n, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if n > uint64(MaxONNXBytes) || d.size >= 0 && int64(n) > d.size-d.off {
		return 0, d.truncated()
	}
	return int64(n), nil
}

// message reads fields until end (a byte offset), or until the input ends
// at a field boundary when end is -1, passing each field's number and wire
// type to fn, which must consume the field's value.
func (d *decoder) message(end int64, fn func(protowire.Number, protowire.Type) error) error {
	for end < 0 || d.off < end {
		if d.off > MaxONNXBytes {
			return fmt.Errorf("%w: the file is above the %d-byte limit", ErrUnsupported, MaxONNXBytes)
		}
		if end < 0 {
			if _, err := d.br.Peek(1); errors.Is(err, io.EOF) {
				return nil
			}
		}
		tag, err := d.uvarint()
		if err != nil {
			return err
		}
		num, typ := protowire.DecodeTag(tag)
		if num < protowire.MinValidNumber || num > protowire.MaxValidNumber {
			return d.notONNX("invalid protobuf field number %d", num)
		}
		if err := fn(num, typ); err != nil {
			return err
		}
	}
	if d.off != end {
		return d.notONNX("a field runs past the end of its message")
	}
	return nil
}

// skipValue consumes the value of a field that is not read.
func (d *decoder) skipValue(num protowire.Number, typ protowire.Type) error {
	switch typ {
	case protowire.VarintType:
		_, err := d.uvarint()
		return err
	case protowire.Fixed32Type:
		return d.skip(4)
	case protowire.Fixed64Type:
		return d.skip(8)
	case protowire.BytesType:
		n, err := d.length()
		if err != nil {
			return err
		}
		return d.skip(n)
	default:
		// Groups (types 3 and 4) are not used by onnx.proto; 6 and 7 do not exist.
		return d.notONNX("field %d has wire type %d, which ONNX does not use", num, typ)
	}
}

// skip consumes n bytes, seeking over them when it can.
func (d *decoder) skip(n int64) error {
	if d.size >= 0 && n > d.size-d.off {
		return d.truncated()
	}
	if buffered := int64(d.br.Buffered()); d.seeker != nil && n > buffered+int64(d.br.Size()) {
		if _, err := d.br.Discard(int(buffered)); err != nil {
			return d.readErr(err)
		}
		if _, err := d.seeker.Seek(n-buffered, io.SeekCurrent); err != nil {
			return fmt.Errorf("read model at byte %d: %w", d.off, err)
		}
		d.br.Reset(d.src)
		d.off += n
		return nil
	}
	for n > 0 {
		chunk := int(min(n, 1<<30))
		got, err := d.br.Discard(chunk)
		d.off += int64(got)
		n -= int64(got)
		if err != nil {
			return d.readErr(err)
		}
	}
	return nil
}

// bytes reads a bytes field's value of at most max bytes; what says what
// it is for messages.
func (d *decoder) bytes(max int64, what string) ([]byte, error) {
	n, err := d.length()
	if err != nil {
		return nil, err
	}
	if n > max {
		// Without a known size, a truncated file shows only by reading on;
		// report that rather than the limit, as with a known size.
		if err := d.skip(n); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s is %d bytes, above the %d-byte limit", ErrUnsupported, what, n, max)
	}
	b := make([]byte, n)
	got, err := io.ReadFull(d.br, b)
	d.off += int64(got)
	if err != nil {
		return nil, d.readErr(err)
	}
	return b, nil
}

// graphField reads one field of a GraphProto.
func (d *decoder) graphField(g *graphInfo, num protowire.Number, typ protowire.Type) error {
	switch num {
	case fieldGraphInitializer, fieldGraphInput, fieldGraphOutput:
	default:
		return d.skipValue(num, typ)
	}
	if typ != protowire.BytesType {
		return d.notONNX("GraphProto field %d has wire type %d, want a message", num, typ)
	}
	if num == fieldGraphInitializer {
		n, err := d.length()
		if err != nil {
			return err
		}
		return d.message(d.off+n, func(num protowire.Number, typ protowire.Type) error {
			if num != fieldTensorName || typ != protowire.BytesType {
				return d.skipValue(num, typ)
			}
			name, err := d.bytes(maxNameBytes, "an initializer name")
			if err != nil {
				return err
			}
			if g.initializers == nil {
				g.initializers = map[string]bool{}
			}
			if len(g.initializers) >= maxInitializers {
				return fmt.Errorf("%w: more than %d initializers", ErrUnsupported, maxInitializers)
			}
			g.initializers[string(name)] = true
			return nil
		})
	}
	what := "input"
	if num == fieldGraphOutput {
		what = "output"
	}
	if len(g.inputs)+len(g.outputs) >= MaxTensors {
		return fmt.Errorf("%w: the graph has more than %d inputs and outputs", ErrUnsupported, MaxTensors)
	}
	idx := len(g.inputs)
	if num == fieldGraphOutput {
		idx = len(g.outputs)
	}
	b, err := d.bytes(MaxValueInfoBytes, fmt.Sprintf("graph %s %d", what, idx))
	if err != nil {
		return err
	}
	spec, err := decodeValueInfo(b)
	if err != nil {
		label := fmt.Sprintf("graph %s %d", what, idx)
		if spec.Name != "" {
			label = fmt.Sprintf("graph %s %q", what, spec.Name)
		}
		return fmt.Errorf("%s: %w", label, err)
	}
	if num == fieldGraphOutput {
		g.outputs = append(g.outputs, spec)
	} else {
		g.inputs = append(g.inputs, spec)
	}
	return nil
}

// walkBytes calls fn for each field of the in-memory message b, with the
// field's value: the varint for varint fields, the bytes for bytes fields.
// Other wire types are skipped.
func walkBytes(b []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrNotONNX, protowire.ParseError(n))
		}
		b = b[n:]
		var (
			v  uint64
			bs []byte
		)
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			bs, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", ErrNotONNX, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, bs); err != nil {
			return err
		}
	}
	return nil
}

// decodeValueInfo decodes a ValueInfoProto into a tensor spec. On error the
// returned spec holds the name when it was read.
func decodeValueInfo(b []byte) (manifest.TensorSpec, error) {
	var (
		spec    manifest.TensorSpec
		typ     []byte
		haveTyp bool
	)
	err := walkBytes(b, func(num protowire.Number, wt protowire.Type, _ uint64, bs []byte) error {
		switch {
		case num == fieldValueInfoName && wt == protowire.BytesType:
			spec.Name = string(bs)
		case num == fieldValueInfoType && wt == protowire.BytesType:
			typ, haveTyp = bs, true
		}
		return nil
	})
	if err != nil {
		return spec, err
	}
	if spec.Name == "" {
		return spec, fmt.Errorf("%w: a graph input or output has no name", ErrNotONNX)
	}
	if !haveTyp {
		return spec, fmt.Errorf("%w: no type", ErrUnsupported)
	}
	var (
		tensor     []byte
		haveTensor bool
		other      string
	)
	err = walkBytes(typ, func(num protowire.Number, wt protowire.Type, _ uint64, bs []byte) error {
		if wt != protowire.BytesType {
			return nil
		}
		switch num {
		case fieldTypeTensor:
			tensor, haveTensor = bs, true
		case fieldTypeSequence:
			other = "a sequence"
		case fieldTypeMap:
			other = "a map"
		case fieldTypeSparse:
			other = "a sparse tensor"
		case fieldTypeOptional:
			other = "an optional value"
		}
		return nil
	})
	if err != nil {
		return spec, err
	}
	if !haveTensor {
		if other == "" {
			other = "not a tensor"
		}
		return spec, fmt.Errorf("%w: the value is %s; a model manifest describes dense tensors only", ErrUnsupported, other)
	}
	var (
		elem      uint64
		shape     []byte
		haveShape bool
	)
	err = walkBytes(tensor, func(num protowire.Number, wt protowire.Type, v uint64, bs []byte) error {
		switch {
		case num == fieldTensorTypeElemType && wt == protowire.VarintType:
			elem = v
		case num == fieldTensorTypeShape && wt == protowire.BytesType:
			shape, haveShape = bs, true
		}
		return nil
	})
	if err != nil {
		return spec, err
	}
	et, ok := onnxElementTypes[elem]
	if !ok {
		name := onnxTypeNames[elem]
		if name == "" {
			name = "unknown"
		}
		return spec, fmt.Errorf("%w: element type %d (%s) is not supported; supported are %s",
			ErrUnsupported, elem, name, supportedTypes())
	}
	spec.ElementType = et
	if !haveShape {
		return spec, fmt.Errorf("%w: the shape is not declared (unknown rank); give the tensor specs explicitly", ErrUnsupported)
	}
	spec.Shape = []int64{}
	err = walkBytes(shape, func(num protowire.Number, wt protowire.Type, _ uint64, dim []byte) error {
		if num != fieldShapeDim || wt != protowire.BytesType {
			return nil
		}
		if len(spec.Shape) >= maxRank {
			return fmt.Errorf("%w: rank above %d", ErrUnsupported, maxRank)
		}
		size := int64(-1) // neither value nor name: unknown, so dynamic
		err := walkBytes(dim, func(num protowire.Number, wt protowire.Type, v uint64, _ []byte) error {
			switch {
			case num == fieldDimValue && wt == protowire.VarintType:
				size = int64(v)
				if size < 1 {
					return fmt.Errorf("%w: dimension %d has size %d; a manifest needs sizes of at least 1 or dynamic ones",
						ErrUnsupported, len(spec.Shape), size)
				}
			case num == fieldDimParam && wt == protowire.BytesType:
				size = -1
			}
			return nil
		})
		if err != nil {
			return err
		}
		spec.Shape = append(spec.Shape, size)
		return nil
	})
	return spec, err
}

func supportedTypes() string {
	var names []string
	for _, n := range onnxElementTypes {
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Sprint(names)
}
