package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/modelfleet/modelfleet/agent/runtime"
)

// This file holds the Open Inference Protocol (KServe v2) request and
// response bodies shared by the HTTP and MQTT front ends.

// inferRequest is an OIP inference request body.
type inferRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters parameters      `json:"parameters,omitempty"`
	Inputs     []requestInput  `json:"inputs"`
	Outputs    []requestOutput `json:"outputs,omitempty"`
}

// requestInput is one input tensor of a request. Data stays raw until the
// model's spec says how to read it.
type requestInput struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters parameters      `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data"`
}

// requestOutput names an output the client wants.
type requestOutput struct {
	Name       string     `json:"name"`
	Parameters parameters `json:"parameters,omitempty"`
}

// parameters are the free-form "parameters" objects of the protocol. They
// are accepted and ignored, except the ones asking for Triton's binary
// tensor extension, which is refused rather than silently answered in JSON.
type parameters map[string]json.RawMessage

// binaryAsked reports whether p asks for binary tensor data.
func (p parameters) binaryAsked() bool {
	for _, k := range []string{"binary_data_size", "binary_data", "binary_data_output"} {
		if v, ok := p[k]; ok && !bytes.Equal(bytes.TrimSpace(v), []byte("false")) {
			return true
		}
	}
	return false
}

// decodeStrict decodes one JSON value from body into v, refusing unknown
// fields and anything after the value, with messages that name the field
// in the client's terms rather than Go's.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("%s", jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("request body has more after the JSON object")
	}
	return nil
}

// jsonProblem rewrites an encoding/json error for the client.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "request body is empty; send a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "request body is cut short: the JSON is incomplete"
	case errors.As(err, &syn):
		return fmt.Sprintf("request body is not valid JSON (at byte %d): %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return fmt.Sprintf("request body must be a JSON object, got a JSON %s", typ.Value)
		}
		return fmt.Sprintf("field %q must be %s, got a JSON %s", field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	return "request body: " + strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind describes a Go kind as the JSON the client should send.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int64", "int", "int32", "uint8":
		return "an integer"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	case "bool":
		return "true or false"
	}
	return "another type"
}

// decodeInputs turns the inputs of a request into tensors for the model,
// checking names and datatypes against its specs. Shapes are checked here
// only against the data; the runtime checks them against the model.
// Errors wrap runtime.ErrInvalidInput.
func decodeInputs(info ModelInfo, ins []requestInput) (map[string]runtime.Tensor, error) {
	if len(ins) == 0 {
		return nil, invalid("the request has no inputs; model %q takes %s", info.Name, describeSpecs(info.Inputs))
	}
	tensors := make(map[string]runtime.Tensor, len(ins))
	for i, in := range ins {
		if in.Name == "" {
			return nil, invalid("inputs[%d] has no name", i)
		}
		if _, dup := tensors[in.Name]; dup {
			return nil, invalid("input %q is given twice", in.Name)
		}
		spec, ok := info.input(in.Name)
		if !ok {
			return nil, invalid("unknown input %q: model %q takes %s", in.Name, info.Name, describeSpecs(info.Inputs))
		}
		if in.Parameters.binaryAsked() {
			return nil, invalid("input %q asks for binary tensor data, which this server does not support; send \"data\" as a JSON array", in.Name)
		}
		et, ok := ElemType(in.Datatype)
		switch {
		case in.Datatype == "":
			return nil, invalid("input %q has no datatype; the model takes %s", in.Name, Datatype(spec.ElemType))
		case !ok:
			return nil, invalid("input %q has datatype %q, which is not supported (supported: %s); the model takes %s",
				in.Name, in.Datatype, supportedDatatypes, Datatype(spec.ElemType))
		case et != spec.ElemType:
			return nil, invalid("input %q is %s, the model takes %s", in.Name, in.Datatype, Datatype(spec.ElemType))
		case in.Shape == nil:
			return nil, invalid("input %q has no shape; the model takes %s", in.Name, formatShape(spec.Shape))
		case len(bytes.TrimSpace(in.Data)) == 0 || bytes.Equal(bytes.TrimSpace(in.Data), []byte("null")):
			return nil, invalid("input %q has no data", in.Name)
		}
		t, err := decodeData(in.Data, et, in.Shape)
		if err != nil {
			return nil, invalid("input %q: %v", in.Name, err)
		}
		tensors[in.Name] = t
	}
	return tensors, nil
}

// outputNames checks the outputs a request asks for and returns their
// names in order, or nil for all of them. Errors wrap
// runtime.ErrInvalidInput.
func outputNames(info ModelInfo, outs []requestOutput) ([]string, error) {
	if len(outs) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(outs))
	for _, o := range outs {
		if !info.hasOutput(o.Name) {
			return nil, invalid("unknown output %q: model %q returns %s", o.Name, info.Name, describeSpecs(info.Outputs))
		}
		if o.Parameters.binaryAsked() {
			return nil, invalid("output %q asks for binary tensor data, which this server does not support", o.Name)
		}
		if !slices.Contains(names, o.Name) {
			names = append(names, o.Name)
		}
	}
	return names, nil
}

// appendOutputs appends the OIP "outputs" array: the named outputs, or
// every output in the model's declared order (then any others by name).
func appendOutputs(b []byte, info ModelInfo, outs map[string]runtime.Tensor, names []string) ([]byte, error) {
	if names == nil {
		names = outputOrder(info, outs)
	}
	b = append(b, '[')
	for i, name := range names {
		t, ok := outs[name]
		if !ok {
			return b, fmt.Errorf("the model returned no output %q", name)
		}
		dt := Datatype(t.ElemType())
		if dt == "" {
			return b, fmt.Errorf("output %q is %s, which has no OIP datatype", name, t)
		}
		b = appendSep(b, i)
		b = append(b, `{"name":`...)
		b = appendString(b, name)
		b = append(b, `,"datatype":"`...)
		b = append(b, dt...)
		b = append(b, `","shape":`...)
		b = appendShape(b, t.Shape())
		b = append(b, `,"data":`...)
		var err error
		if b, err = appendData(b, t); err != nil {
			return b, fmt.Errorf("output %q: %w", name, err)
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// appendInferResponse appends an OIP inference response, as the HTTP
// front end sends it and MQTT replies carry it: model_name, model_version,
// id (when the request had one) and outputs.
func appendInferResponse(b []byte, id string, info ModelInfo, version string, outs map[string]runtime.Tensor, names []string) ([]byte, error) {
	b = append(b, `{"model_name":`...)
	b = appendString(b, info.Name)
	b = append(b, `,"model_version":`...)
	b = appendString(b, version)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, id)
	}
	b = append(b, `,"outputs":`...)
	b, err := appendOutputs(b, info, outs, names)
	if err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

// outputOrder lists the outputs in the model's declared order, then any
// undeclared ones by name.
func outputOrder(info ModelInfo, outs map[string]runtime.Tensor) []string {
	names := make([]string, 0, len(outs))
	for _, s := range info.Outputs {
		if _, ok := outs[s.Name]; ok {
			names = append(names, s.Name)
		}
	}
	var extra []string
	for name := range outs {
		if !info.hasOutput(name) {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	return append(names, extra...)
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// describeSpecs lists specs in OIP terms for messages: "window" FP32 [-1,64].
func describeSpecs(specs []runtime.TensorSpec) string {
	if len(specs) == 0 {
		return "nothing"
	}
	parts := make([]string, len(specs))
	for i, s := range specs {
		dt := Datatype(s.ElemType)
		if dt == "" {
			dt = string(s.ElemType)
		}
		parts[i] = fmt.Sprintf("%q %s %s", s.Name, dt, formatShape(s.Shape))
	}
	return strings.Join(parts, ", ")
}

// tensorMetadata is one input or output in OIP model metadata.
type tensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// modelMetadata is the OIP model metadata response.
type modelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []tensorMetadata `json:"inputs"`
	Outputs  []tensorMetadata `json:"outputs"`
}

func newModelMetadata(info ModelInfo) modelMetadata {
	md := modelMetadata{Name: info.Name, Platform: info.platform(), Inputs: tensorsMetadata(info.Inputs), Outputs: tensorsMetadata(info.Outputs)}
	if info.Version != "" {
		md.Versions = []string{info.Version}
	}
	return md
}

func tensorsMetadata(specs []runtime.TensorSpec) []tensorMetadata {
	out := make([]tensorMetadata, len(specs))
	for i, s := range specs {
		dt := Datatype(s.ElemType)
		if dt == "" {
			dt = strings.ToUpper(string(s.ElemType))
		}
		out[i] = tensorMetadata{Name: s.Name, Datatype: dt, Shape: append([]int64{}, s.Shape...)}
	}
	return out
}
