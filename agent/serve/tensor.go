package serve

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/modelfleet/modelfleet/agent/runtime"
)

// This file converts tensors between JSON and runtime.Tensor: the OIP
// datatype names, the "data" arrays of the Open Inference Protocol (flat or
// nested, row-major), and raw little-endian float32 payloads. The parser is
// written for hostile input: it never panics, allocates in proportion to the
// bytes it was given, and says in its errors which value is wrong and why.

// OIP datatype names of the element types the runtime supports.
const (
	DatatypeFP32  = "FP32"
	DatatypeFP64  = "FP64"
	DatatypeINT64 = "INT64"
	DatatypeINT32 = "INT32"
	DatatypeUINT8 = "UINT8"
	DatatypeBOOL  = "BOOL"
)

// Datatype returns the OIP datatype name of an element type ("FP32" for
// float32), or "" for an element type the protocol front ends do not carry.
func Datatype(t runtime.ElemType) string {
	switch t {
	case runtime.Float32:
		return DatatypeFP32
	case runtime.Float64:
		return DatatypeFP64
	case runtime.Int64:
		return DatatypeINT64
	case runtime.Int32:
		return DatatypeINT32
	case runtime.Uint8:
		return DatatypeUINT8
	case runtime.Bool:
		return DatatypeBOOL
	}
	return ""
}

// ElemType returns the element type of an OIP datatype name, and false for
// names the runtime does not support (FP16, BYTES, INT8, …). Names are
// case-sensitive, as the protocol says.
func ElemType(datatype string) (runtime.ElemType, bool) {
	switch datatype {
	case DatatypeFP32:
		return runtime.Float32, true
	case DatatypeFP64:
		return runtime.Float64, true
	case DatatypeINT64:
		return runtime.Int64, true
	case DatatypeINT32:
		return runtime.Int32, true
	case DatatypeUINT8:
		return runtime.Uint8, true
	case DatatypeBOOL:
		return runtime.Bool, true
	}
	return "", false
}

// supportedDatatypes lists the OIP datatypes for messages.
const supportedDatatypes = "FP32, FP64, INT64, INT32, UINT8, BOOL"

// maxValues bounds the values of one tensor, as the runtime does (2^40),
// so that shape arithmetic cannot overflow.
const maxValues = 1 << 40

// maxRank bounds the nesting of a data array, so that "[[[[…" cannot make
// the parser keep per-level state for millions of levels.
const maxRank = 32

// tensorValues is what the array parser returns: the values, flat and
// row-major, in a slice of the element type, and the dimensions the nesting
// showed ([n] for a flat array).
type tensorValues struct {
	data any // []float32, []float64, []int64, []int32, []uint8 or []bool
	n    int
	dims []int64
}

// parseArray parses raw, a JSON array of et values, flat or nested. Nested
// arrays must be rectangular: every array at one depth has the same length,
// and values appear only at the deepest level. limit, when positive, is the
// number of values expected, and parsing stops with an error past it, so a
// declared shape bounds the allocation; without it the slice grows with the
// input, which bounds it too.
func parseArray(raw []byte, et runtime.ElemType, limit int) (tensorValues, error) {
	p := arrayParser{buf: raw, et: et, limit: limit, leaf: -1}
	// Every value takes at least one byte and a separator: the bytes bound
	// the allocation whatever a hostile shape claims.
	if limit > 0 {
		p.alloc(min(limit, len(raw)/2+1))
	} else {
		p.alloc(min(len(raw)/2+1, 1024))
	}
	if err := p.parse(); err != nil {
		return tensorValues{}, err
	}
	return tensorValues{data: p.slice(), n: p.count, dims: p.dims}, nil
}

// arrayParser is the state of parseArray.
type arrayParser struct {
	buf   []byte
	pos   int
	et    runtime.ElemType
	limit int

	dims   []int64 // length of the arrays at each depth, -1 until the first one closes
	counts []int64 // elements seen so far in the open array at each depth
	leaf   int     // depth at which values appear, -1 until the first value
	count  int     // values parsed

	f32 []float32
	f64 []float64
	i64 []int64
	i32 []int32
	u8  []uint8
	b   []bool
}

func (p *arrayParser) alloc(n int) {
	switch p.et {
	case runtime.Float32:
		p.f32 = make([]float32, 0, n)
	case runtime.Float64:
		p.f64 = make([]float64, 0, n)
	case runtime.Int64:
		p.i64 = make([]int64, 0, n)
	case runtime.Int32:
		p.i32 = make([]int32, 0, n)
	case runtime.Uint8:
		p.u8 = make([]uint8, 0, n)
	case runtime.Bool:
		p.b = make([]bool, 0, n)
	}
}

func (p *arrayParser) slice() any {
	switch p.et {
	case runtime.Float32:
		return p.f32
	case runtime.Float64:
		return p.f64
	case runtime.Int64:
		return p.i64
	case runtime.Int32:
		return p.i32
	case runtime.Uint8:
		return p.u8
	case runtime.Bool:
		return p.b
	}
	return nil
}

func (p *arrayParser) skipSpace() {
	for p.pos < len(p.buf) {
		switch p.buf[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// parse reads one array and then nothing but white space.
func (p *arrayParser) parse() error {
	p.skipSpace()
	if p.pos >= len(p.buf) {
		return fmt.Errorf("no data: want a JSON array of %s values", Datatype(p.et))
	}
	if p.buf[p.pos] != '[' {
		return fmt.Errorf("data is not a JSON array (it starts with %q); send the values as an array, flat or nested", preview(p.buf[p.pos:]))
	}
	// depth is the number of open arrays; expectValue is true right after
	// '[' or ',' (a value or, after '[', a ']' must come next).
	depth := 0
	for {
		p.skipSpace()
		if p.pos >= len(p.buf) {
			return fmt.Errorf("data ends inside an array")
		}
		c := p.buf[p.pos]
		switch {
		case c == '[':
			if p.leaf >= 0 && depth >= p.leaf {
				return p.notRectangular()
			}
			if depth == maxRank {
				return fmt.Errorf("data is nested more than %d levels deep", maxRank)
			}
			if depth > 0 {
				p.counts[depth-1]++
			}
			if depth == len(p.dims) {
				p.dims = append(p.dims, -1)
				p.counts = append(p.counts, 0)
			}
			p.counts[depth] = 0
			depth++
			p.pos++
			continue // a value, an array or ']' comes next
		case c == ']':
			depth--
			n := p.counts[depth]
			if p.dims[depth] == -1 {
				p.dims[depth] = n
			} else if p.dims[depth] != n {
				return fmt.Errorf("data is not rectangular: an array at depth %d has %d elements, an earlier one %d; nested arrays must match the shape (or send the values flat)",
					depth+1, n, p.dims[depth])
			}
			p.pos++
			if depth == 0 {
				return p.finish()
			}
		default:
			if depth != len(p.dims) || (p.leaf >= 0 && depth != p.leaf) {
				return p.notRectangular()
			}
			p.leaf = depth
			if err := p.value(); err != nil {
				return err
			}
			p.counts[depth-1]++
		}
		// After a value or a closing ']': a ',' and another element, or the
		// ']' of the enclosing array.
		p.skipSpace()
		if p.pos >= len(p.buf) {
			return fmt.Errorf("data ends inside an array")
		}
		switch p.buf[p.pos] {
		case ',':
			p.pos++
			p.skipSpace()
			if p.pos < len(p.buf) && p.buf[p.pos] == ']' {
				return fmt.Errorf("data has a trailing comma before ']'")
			}
		case ']':
		default:
			return fmt.Errorf("data has %q where ',' or ']' should be", preview(p.buf[p.pos:]))
		}
	}
}

func (p *arrayParser) notRectangular() error {
	return fmt.Errorf("data mixes values and arrays at the same depth; nested arrays must be rectangular, with values only at the deepest level")
}

// finish checks what follows the array and the overall structure.
func (p *arrayParser) finish() error {
	p.skipSpace()
	if p.pos != len(p.buf) {
		return fmt.Errorf("data has %q after the array", preview(p.buf[p.pos:]))
	}
	if p.count == 0 {
		return fmt.Errorf("data holds no values")
	}
	// Values sit at depth leaf; deeper dims can only come from empty arrays,
	// which count == 0 already rules out.
	p.dims = p.dims[:p.leaf]
	return nil
}

// value parses one scalar at p.pos and appends it.
func (p *arrayParser) value() error {
	if p.limit > 0 && p.count >= p.limit {
		return fmt.Errorf("data has more than the %d values its shape holds", p.limit)
	}
	idx := p.count
	start := p.pos
	c := p.buf[p.pos]
	switch {
	case c == '"':
		s := p.scanString()
		return fmt.Errorf("value #%d is a string (%s); %s data must be JSON %s%s", idx, preview(s), Datatype(p.et), kindOfValues(p.et), nanHint(p.et))
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		word := p.scanWord()
		switch {
		case p.et == runtime.Bool && string(word) == "true":
			p.b = append(p.b, true)
		case p.et == runtime.Bool && string(word) == "false":
			p.b = append(p.b, false)
		case string(word) == "null":
			return fmt.Errorf("value #%d is null; %s data must be JSON %s", idx, Datatype(p.et), kindOfValues(p.et))
		default:
			return fmt.Errorf("value #%d is %s; %s data must be JSON %s", idx, preview(word), Datatype(p.et), kindOfValues(p.et))
		}
	case c == '-' || (c >= '0' && c <= '9'):
		tok := p.scanNumber()
		if !validJSONNumber(tok) {
			return fmt.Errorf("value #%d (%s) is not a valid JSON number%s", idx, preview(p.buf[start:]), nanHint(p.et))
		}
		if err := p.appendNumber(idx, tok); err != nil {
			return err
		}
	case c == '{':
		return fmt.Errorf("value #%d is an object; %s data must be JSON %s", idx, Datatype(p.et), kindOfValues(p.et))
	default:
		return fmt.Errorf("data has %q where a value should be", preview(p.buf[start:]))
	}
	p.count++
	return nil
}

func (p *arrayParser) appendNumber(idx int, tok []byte) error {
	s := string(tok)
	switch p.et {
	case runtime.Float32:
		v, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return fmt.Errorf("value #%d (%s) is out of the FP32 range", idx, preview(tok))
		}
		p.f32 = append(p.f32, float32(v))
	case runtime.Float64:
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("value #%d (%s) is out of the FP64 range", idx, preview(tok))
		}
		p.f64 = append(p.f64, v)
	case runtime.Int64:
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return intError(idx, tok, "INT64")
		}
		p.i64 = append(p.i64, v)
	case runtime.Int32:
		v, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return intError(idx, tok, "INT32")
		}
		p.i32 = append(p.i32, int32(v))
	case runtime.Uint8:
		v, err := strconv.ParseUint(s, 10, 8)
		if err != nil {
			return intError(idx, tok, "UINT8 (0 to 255)")
		}
		p.u8 = append(p.u8, uint8(v))
	case runtime.Bool:
		return fmt.Errorf("value #%d is the number %s; BOOL data must be JSON true or false", idx, preview(tok))
	default:
		return fmt.Errorf("unsupported element type %q", p.et)
	}
	return nil
}

func intError(idx int, tok []byte, what string) error {
	if bytes.ContainsAny(tok, ".eE") {
		return fmt.Errorf("value #%d (%s) is not an integer; %s data must be JSON integers", idx, preview(tok), what)
	}
	return fmt.Errorf("value #%d (%s) is out of the %s range", idx, preview(tok), what)
}

func kindOfValues(et runtime.ElemType) string {
	switch et {
	case runtime.Bool:
		return "true or false"
	case runtime.Float32, runtime.Float64:
		return "numbers"
	}
	return "integers"
}

func nanHint(et runtime.ElemType) string {
	if et == runtime.Float32 || et == runtime.Float64 {
		return " (JSON has no NaN or infinity)"
	}
	return ""
}

// scanString returns the JSON string at p.pos, quotes included, and moves
// past it (to the end of the input when it is not closed).
func (p *arrayParser) scanString() []byte {
	start := p.pos
	p.pos++
	for p.pos < len(p.buf) {
		switch p.buf[p.pos] {
		case '\\':
			p.pos += 2
			continue
		case '"':
			p.pos++
			return p.buf[start:p.pos]
		}
		p.pos++
	}
	p.pos = len(p.buf)
	return p.buf[start:]
}

// scanWord returns the run of ASCII letters at p.pos.
func (p *arrayParser) scanWord() []byte {
	start := p.pos
	for p.pos < len(p.buf) && (p.buf[p.pos] >= 'a' && p.buf[p.pos] <= 'z' || p.buf[p.pos] >= 'A' && p.buf[p.pos] <= 'Z') {
		p.pos++
	}
	return p.buf[start:p.pos]
}

// scanNumber returns the run of number characters at p.pos.
func (p *arrayParser) scanNumber() []byte {
	start := p.pos
	for p.pos < len(p.buf) {
		c := p.buf[p.pos]
		if c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			p.pos++
			continue
		}
		break
	}
	return p.buf[start:p.pos]
}

// validJSONNumber checks the JSON number grammar (RFC 8259 §6), which is
// stricter than strconv: no "+1", "01", ".5", "1." or "1e".
func validJSONNumber(s []byte) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	return i == len(s)
}

// preview quotes the start of b for an error message, at most 32 bytes.
func preview(b []byte) string {
	const max = 32
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "…"
	}
	return strconv.Quote(string(b))
}

// newTensor wraps parsed values in a tensor of the given shape.
func newTensor(v tensorValues, shape []int64) runtime.Tensor {
	switch d := v.data.(type) {
	case []float32:
		return runtime.NewTensor(shape, d)
	case []float64:
		return runtime.NewTensor(shape, d)
	case []int64:
		return runtime.NewTensor(shape, d)
	case []int32:
		return runtime.NewTensor(shape, d)
	case []uint8:
		return runtime.NewTensor(shape, d)
	case []bool:
		return runtime.NewTensor(shape, d)
	}
	return runtime.Tensor{}
}

// shapeCount returns the number of values a declared shape holds, checking
// every dimension is at least 1 and that the product stays at most
// maxValues.
func shapeCount(shape []int64) (int, error) {
	if len(shape) == 0 {
		return 0, fmt.Errorf("shape is empty; scalars are not supported, give at least one dimension")
	}
	if len(shape) > maxRank {
		return 0, fmt.Errorf("shape has %d dimensions, at most %d are supported", len(shape), maxRank)
	}
	n := int64(1)
	for i, d := range shape {
		if d < 1 {
			return 0, fmt.Errorf("shape %s: dimension %d is %d, every dimension must be at least 1", formatShape(shape), i, d)
		}
		if n > maxValues/d {
			return 0, fmt.Errorf("shape %s holds more than %d values", formatShape(shape), int64(maxValues))
		}
		n *= d
	}
	return int(n), nil
}

// decodeData parses an OIP "data" array against the declared shape and
// datatype: flat with exactly the shape's number of values, or nested
// exactly as the shape.
func decodeData(raw []byte, et runtime.ElemType, shape []int64) (runtime.Tensor, error) {
	n, err := shapeCount(shape)
	if err != nil {
		return runtime.Tensor{}, err
	}
	v, err := parseArray(raw, et, n)
	if err != nil {
		return runtime.Tensor{}, err
	}
	switch {
	case v.n != n:
		return runtime.Tensor{}, fmt.Errorf("data has %d values, shape %s needs %d", v.n, formatShape(shape), n)
	case len(v.dims) == 1:
		// Flat, any shape.
	case !slices.Equal(v.dims, shape):
		return runtime.Tensor{}, fmt.Errorf("data is nested as %s, which does not match shape %s; nest it as the shape or send it flat", formatShape(v.dims), formatShape(shape))
	}
	return newTensor(v, append([]int64(nil), shape...)), nil
}

// fitShape returns the shape for n flat values of an input declared with
// spec: the declared shape when it is fixed, or with its one dynamic
// dimension set to what n implies.
func fitShape(spec runtime.TensorSpec, n int) ([]int64, error) {
	fixed := int64(1)
	dynamic := -1
	for i, d := range spec.Shape {
		if d == runtime.Dynamic {
			if dynamic >= 0 {
				return nil, fmt.Errorf("input %q has shape %s with more than one dimension chosen per request; send it nested, as the shape", spec.Name, formatShape(spec.Shape))
			}
			dynamic = i
			continue
		}
		fixed *= d
	}
	shape := append([]int64(nil), spec.Shape...)
	switch {
	case fixed < 1:
		return nil, fmt.Errorf("input %q has an unusable shape %s", spec.Name, formatShape(spec.Shape))
	case dynamic < 0 && int64(n) != fixed:
		return nil, fmt.Errorf("input %q takes %d values (shape %s), got %d", spec.Name, fixed, formatShape(spec.Shape), n)
	case dynamic >= 0 && (int64(n)%fixed != 0 || n == 0):
		return nil, fmt.Errorf("input %q takes a multiple of %d values (shape %s), got %d", spec.Name, fixed, formatShape(spec.Shape), n)
	case dynamic >= 0:
		shape[dynamic] = int64(n) / fixed
	}
	return shape, nil
}

// decodeLoose parses a JSON array for an input whose shape the sender does
// not state (factory bindings): nested as deep as the spec's rank, it keeps
// its own shape; flat, it is shaped with fitShape.
func decodeLoose(raw []byte, spec runtime.TensorSpec) (runtime.Tensor, error) {
	v, err := parseArray(raw, spec.ElemType, 0)
	if err != nil {
		return runtime.Tensor{}, err
	}
	switch {
	case len(v.dims) == len(spec.Shape):
		return newTensor(v, v.dims), nil
	case len(v.dims) == 1:
		shape, err := fitShape(spec, v.n)
		if err != nil {
			return runtime.Tensor{}, err
		}
		return newTensor(v, shape), nil
	}
	return runtime.Tensor{}, fmt.Errorf("data is nested as %s, the input %q has rank %d (shape %s); nest it as the shape or send it flat",
		formatShape(v.dims), spec.Name, len(spec.Shape), formatShape(spec.Shape))
}

// decodeF32LE reads raw little-endian float32 values for a float32 input.
func decodeF32LE(raw []byte, spec runtime.TensorSpec) (runtime.Tensor, error) {
	if spec.ElemType != runtime.Float32 {
		return runtime.Tensor{}, fmt.Errorf("input %q is %s; the f32le format carries FP32 values only", spec.Name, Datatype(spec.ElemType))
	}
	if len(raw) == 0 || len(raw)%4 != 0 {
		return runtime.Tensor{}, fmt.Errorf("payload has %d bytes; f32le payloads are 4 bytes per float32 value, little-endian", len(raw))
	}
	data := make([]float32, len(raw)/4)
	for i := range data {
		data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	for i, f := range data {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return runtime.Tensor{}, fmt.Errorf("value #%d is %v; the model takes finite numbers", i, f)
		}
	}
	shape, err := fitShape(spec, len(data))
	if err != nil {
		return runtime.Tensor{}, err
	}
	return runtime.NewTensor(shape, data), nil
}

// appendData appends t's values to b as a flat JSON array. NaN and
// infinities have no JSON form, so an output holding one is an error.
func appendData(b []byte, t runtime.Tensor) ([]byte, error) {
	b = append(b, '[')
	switch t.ElemType() {
	case runtime.Float32:
		for i, v := range t.Float32() {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return b, fmt.Errorf("value #%d is %v, which JSON cannot carry", i, v)
			}
			b = appendSep(b, i)
			b = strconv.AppendFloat(b, float64(v), 'g', -1, 32)
		}
	case runtime.Float64:
		for i, v := range t.Float64() {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return b, fmt.Errorf("value #%d is %v, which JSON cannot carry", i, v)
			}
			b = appendSep(b, i)
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		}
	case runtime.Int64:
		for i, v := range t.Int64() {
			b = strconv.AppendInt(appendSep(b, i), v, 10)
		}
	case runtime.Int32:
		for i, v := range t.Int32() {
			b = strconv.AppendInt(appendSep(b, i), int64(v), 10)
		}
	case runtime.Uint8:
		for i, v := range t.Uint8() {
			b = strconv.AppendUint(appendSep(b, i), uint64(v), 10)
		}
	case runtime.Bool:
		for i, v := range t.Bool() {
			b = strconv.AppendBool(appendSep(b, i), v)
		}
	default:
		return b, fmt.Errorf("tensor %s has no JSON form", t)
	}
	return append(b, ']'), nil
}

func appendSep(b []byte, i int) []byte {
	if i > 0 {
		return append(b, ',')
	}
	return b
}

// appendShape appends dims as a JSON array.
func appendShape(b []byte, dims []int64) []byte {
	b = append(b, '[')
	for i, d := range dims {
		b = strconv.AppendInt(appendSep(b, i), d, 10)
	}
	return append(b, ']')
}

// formatShape writes dims as [1,64], as KServe and the runtime do.
func formatShape(dims []int64) string {
	return string(appendShape(nil, dims))
}
