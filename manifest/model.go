package manifest

import (
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// ModelManifest describes one released model version (role release). Its
// JSON form is the "signed" member of a model manifest envelope.
type ModelManifest struct {
	// Schema is SchemaV1; Sign fills it in.
	Schema string `json:"schema"`
	// Type is KindModel; Sign fills it in.
	Type string `json:"type"`
	// Name is the model name: 1–64 of [a-z0-9._-], starting with a letter or
	// digit. It appears in MQTT topics and file names.
	Name string `json:"name"`
	// Version is a semantic version (see ParseSemver).
	Version string `json:"version"`
	// Created is when the release was built (RFC 3339).
	Created time.Time `json:"created"`
	// Artifacts holds one model file per variant ("cpu", "cuda", …).
	Artifacts []Artifact `json:"artifacts"`
	// Inputs describes the model's input tensors.
	Inputs []TensorSpec `json:"inputs"`
	// Outputs describes the model's output tensors.
	Outputs []TensorSpec `json:"outputs"`
	// WarmUp is an optional input run once after loading.
	WarmUp *WarmUp `json:"warmup,omitempty"`
	// Runtime holds optional runtime hints.
	Runtime *RuntimeHints `json:"runtime,omitempty"`
}

// Artifact is one downloadable model file.
type Artifact struct {
	// Variant names the hardware class: 1–32 of [a-z0-9_-], e.g. "cpu", "cuda".
	Variant string `json:"variant"`
	// Key is the object location "bucket/object/path".
	Key string `json:"key"`
	// SHA256 is the lower-case hex sha256 of the file.
	SHA256 string `json:"sha256"`
	// Size is the exact file size in bytes, at least 1.
	Size int64 `json:"size"`
	// Format is the file format; schema v1 knows "onnx".
	Format string `json:"format"`
}

// Bucket returns the bucket part of Key.
func (a Artifact) Bucket() string { b, _, _ := strings.Cut(a.Key, "/"); return b }

// Object returns the object part of Key (after the bucket).
func (a Artifact) Object() string { _, o, _ := strings.Cut(a.Key, "/"); return o }

// TensorSpec describes one input or output tensor.
type TensorSpec struct {
	// Name is the tensor name in the model graph.
	Name string `json:"name"`
	// ElementType is one of ElementTypes, e.g. "float32".
	ElementType string `json:"element_type"`
	// Shape lists dimensions; -1 marks a dynamic one. Empty means a scalar.
	Shape []int64 `json:"shape"`
}

// WarmUp is the input fed to a freshly loaded model before it serves.
type WarmUp struct {
	// Inputs holds one tensor per model input to feed.
	Inputs []WarmUpTensor `json:"inputs"`
}

// WarmUpTensor is one warm-up input tensor.
type WarmUpTensor struct {
	// Name is the input tensor name; it must be one of the manifest's inputs.
	Name string `json:"name"`
	// Shape is the concrete shape (no -1), compatible with the input's spec.
	Shape []int64 `json:"shape"`
	// Data is the tensor's raw little-endian element bytes, base64
	// (standard). Empty means all zeros. Floats cannot appear as JSON numbers
	// in signed data, so tensors travel as bytes.
	Data string `json:"data,omitempty"`
}

// RuntimeHints are optional tuning values for the runtime; zero means the
// agent's default.
type RuntimeHints struct {
	// IntraOpThreads is ONNX Runtime's intra-op thread count.
	IntraOpThreads int `json:"intra_op_threads,omitempty"`
	// InterOpThreads is ONNX Runtime's inter-op thread count.
	InterOpThreads int `json:"inter_op_threads,omitempty"`
	// GPUMemLimitBytes caps the CUDA memory arena.
	GPUMemLimitBytes int64 `json:"gpu_mem_limit_bytes,omitempty"`
}

// ElementTypes maps the tensor element types of schema v1 to their size in bytes.
var ElementTypes = map[string]int{
	"bool": 1, "int8": 1, "uint8": 1,
	"int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
	"int32": 4, "uint32": 4, "float32": 4,
	"int64": 8, "uint64": 8, "float64": 8,
}

// FormatONNX is the artifact format of ONNX models.
const FormatONNX = "onnx"

// maxRank bounds tensor ranks.
const maxRank = 16

// Kind implements Document.
func (m *ModelManifest) Kind() string { return KindModel }

func (m *ModelManifest) setHeader() { m.Schema, m.Type = SchemaV1, KindModel }

// Ref returns "name@version" for messages.
func (m *ModelManifest) Ref() string { return m.Name + "@" + m.Version }

// Clone returns a deep copy of m.
func (m *ModelManifest) Clone() *ModelManifest {
	c := *m
	c.Artifacts = slices.Clone(m.Artifacts)
	c.Inputs = cloneTensors(m.Inputs)
	c.Outputs = cloneTensors(m.Outputs)
	if m.WarmUp != nil {
		w := WarmUp{Inputs: slices.Clone(m.WarmUp.Inputs)}
		for i := range w.Inputs {
			w.Inputs[i].Shape = slices.Clone(w.Inputs[i].Shape)
		}
		c.WarmUp = &w
	}
	if m.Runtime != nil {
		r := *m.Runtime
		c.Runtime = &r
	}
	return &c
}

func cloneTensors(ts []TensorSpec) []TensorSpec {
	ts = slices.Clone(ts)
	for i := range ts {
		ts[i].Shape = slices.Clone(ts[i].Shape)
	}
	return ts
}

// Artifact returns the artifact of the first variant in prefs the manifest
// has, or false.
func (m *ModelManifest) Artifact(prefs []string) (Artifact, bool) {
	for _, v := range prefs {
		for _, a := range m.Artifacts {
			if a.Variant == v {
				return a, true
			}
		}
	}
	return Artifact{}, false
}

// Validate checks the format rules of a model manifest. It returns an error
// wrapping ErrUnknownSchema or ErrMalformed.
func (m *ModelManifest) Validate() error {
	if err := checkHeader(m.Schema, m.Type, KindModel); err != nil {
		return err
	}
	if err := ValidateName(m.Name); err != nil {
		return err
	}
	if _, err := ParseSemver(m.Version); err != nil {
		return err
	}
	if m.Created.IsZero() {
		return malformed("model manifest has no created time")
	}
	if len(m.Artifacts) == 0 {
		return malformed("model manifest lists no artifacts")
	}
	variants := map[string]bool{}
	for i, a := range m.Artifacts {
		if err := a.validate(); err != nil {
			return fmt.Errorf("artifacts[%d]: %w", i, err)
		}
		if variants[a.Variant] {
			return malformed(fmt.Sprintf("artifact variant %q listed twice", a.Variant))
		}
		variants[a.Variant] = true
	}
	if len(m.Inputs) == 0 || len(m.Outputs) == 0 {
		return malformed("model manifest needs at least one input and one output tensor")
	}
	inputs, err := validateTensors("inputs", m.Inputs)
	if err != nil {
		return err
	}
	if _, err := validateTensors("outputs", m.Outputs); err != nil {
		return err
	}
	if m.WarmUp != nil {
		if err := m.WarmUp.validate(inputs); err != nil {
			return err
		}
	}
	if h := m.Runtime; h != nil {
		if h.IntraOpThreads < 0 || h.IntraOpThreads > 1024 || h.InterOpThreads < 0 || h.InterOpThreads > 1024 {
			return malformed("runtime thread counts must be between 0 and 1024")
		}
		if h.GPUMemLimitBytes < 0 {
			return malformed("runtime gpu_mem_limit_bytes must not be negative")
		}
	}
	return nil
}

// ValidateName checks a model name: 1–64 of [a-z0-9._-], starting with a
// letter or digit, not containing "..". It returns an error wrapping ErrMalformed.
func ValidateName(name string) error {
	if !validIdent(name, 64, "._-", false) || strings.Contains(name, "..") {
		return malformed(fmt.Sprintf("model name %q: want 1-64 of [a-z0-9._-] starting with a letter or digit", name))
	}
	return nil
}

// validIdent reports whether s is 1..maxLen bytes of lower-case letters,
// digits (upper-case too when upper) and the extra bytes, starting with a
// letter or digit.
func validIdent(s string, maxLen int, extra string, upper bool) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || upper && c >= 'A' && c <= 'Z'
		if alnum {
			continue
		}
		if i == 0 || strings.IndexByte(extra, c) < 0 {
			return false
		}
	}
	return true
}

func (a Artifact) validate() error {
	if !validIdent(a.Variant, 32, "_-", false) {
		return malformed(fmt.Sprintf("variant %q: want 1-32 of [a-z0-9_-]", a.Variant))
	}
	if err := validateObjectKey(a.Key); err != nil {
		return err
	}
	if len(a.SHA256) != 64 || !isKeyID(a.SHA256) {
		return malformed(fmt.Sprintf("sha256 %q is not 64 lower-case hex digits", a.SHA256))
	}
	if a.Size < 1 {
		return malformed(fmt.Sprintf("artifact size %d must be at least 1 byte", a.Size))
	}
	if a.Format != FormatONNX {
		return malformed(fmt.Sprintf("artifact format %q not supported (want %q)", a.Format, FormatONNX))
	}
	return nil
}

// validateObjectKey checks "bucket/object": an S3-style bucket name and an
// object path without empty, "." or ".." segments or control characters.
func validateObjectKey(key string) error {
	bucket, object, ok := strings.Cut(key, "/")
	if !ok || object == "" {
		return malformed(fmt.Sprintf("artifact key %q: want bucket/object", key))
	}
	if len(bucket) < 3 || !validIdent(bucket, 63, ".-", false) {
		return malformed(fmt.Sprintf("artifact key %q: bucket must be 3-63 of [a-z0-9.-]", key))
	}
	if len(object) > 1024 {
		return malformed(fmt.Sprintf("artifact key %q: object longer than 1024 bytes", key))
	}
	for _, seg := range strings.Split(object, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return malformed(fmt.Sprintf("artifact key %q: empty, . or .. path segment", key))
		}
	}
	for _, r := range object {
		if r < 0x20 || r == 0x7f {
			return malformed(fmt.Sprintf("artifact key %q: control character", key))
		}
	}
	return nil
}

func validateTensors(what string, specs []TensorSpec) (map[string]TensorSpec, error) {
	byName := make(map[string]TensorSpec, len(specs))
	for i, t := range specs {
		if t.Name == "" || len(t.Name) > 256 {
			return nil, malformed(fmt.Sprintf("%s[%d]: tensor name must be 1-256 bytes", what, i))
		}
		if _, dup := byName[t.Name]; dup {
			return nil, malformed(fmt.Sprintf("%s: tensor %q listed twice", what, t.Name))
		}
		byName[t.Name] = t
		if _, ok := ElementTypes[t.ElementType]; !ok {
			return nil, malformed(fmt.Sprintf("%s[%d]: element type %q not supported", what, i, t.ElementType))
		}
		if len(t.Shape) > maxRank {
			return nil, malformed(fmt.Sprintf("%s[%d]: rank %d above %d", what, i, len(t.Shape), maxRank))
		}
		for _, d := range t.Shape {
			if d < 1 && d != -1 {
				return nil, malformed(fmt.Sprintf("%s[%d]: dimension %d must be positive or -1 (dynamic)", what, i, d))
			}
		}
	}
	return byName, nil
}

func (w *WarmUp) validate(inputs map[string]TensorSpec) error {
	if len(w.Inputs) == 0 {
		return malformed("warmup lists no inputs")
	}
	seen := map[string]bool{}
	for i, t := range w.Inputs {
		spec, ok := inputs[t.Name]
		if !ok {
			return malformed(fmt.Sprintf("warmup.inputs[%d]: %q is not a model input", i, t.Name))
		}
		if seen[t.Name] {
			return malformed(fmt.Sprintf("warmup: input %q listed twice", t.Name))
		}
		seen[t.Name] = true
		if len(t.Shape) != len(spec.Shape) {
			return malformed(fmt.Sprintf("warmup input %q: rank %d, model input has rank %d", t.Name, len(t.Shape), len(spec.Shape)))
		}
		elems := int64(1)
		for j, d := range t.Shape {
			if d < 1 {
				return malformed(fmt.Sprintf("warmup input %q: dimension %d must be concrete and positive", t.Name, d))
			}
			if spec.Shape[j] != -1 && spec.Shape[j] != d {
				return malformed(fmt.Sprintf("warmup input %q: dimension %d is %d, model wants %d", t.Name, j, d, spec.Shape[j]))
			}
			if elems > math.MaxInt32/d {
				return malformed(fmt.Sprintf("warmup input %q: too many elements", t.Name))
			}
			elems *= d
		}
		if t.Data != "" {
			data, err := base64.StdEncoding.Strict().DecodeString(t.Data)
			if err != nil {
				return malformed(fmt.Sprintf("warmup input %q: data is not standard base64", t.Name))
			}
			if want := elems * int64(ElementTypes[spec.ElementType]); int64(len(data)) != want {
				return malformed(fmt.Sprintf("warmup input %q: data is %d bytes, shape and %s need %d", t.Name, len(data), spec.ElementType, want))
			}
		}
	}
	return nil
}
