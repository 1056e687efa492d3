package manifest

import (
	"fmt"
	"strconv"
	"time"
)

// The decoders below fill the document types from the parsed tree of the
// canonical signed bytes. They are strict by construction: member names
// match exactly (encoding/json would match "DEVICE" to "device"), unknown
// members and wrong types are errors, and nothing is parsed twice.
// TestDecodeRoundTrip keeps them in step with the json tags used by Sign.

// objReader reads the members of one JSON object.
type objReader struct {
	n *node
	// The object's path for messages is prefix, or prefix[index] when
	// index ≥ 0; formatted only on error.
	prefix  string
	index   int
	used    []string
	usedBuf [12]string
	err     error
}

func readObject(n *node, path string) (*objReader, error) { return readElem(n, path, -1) }

// readElem reads element index of the array at path.
func readElem(n *node, prefix string, index int) (*objReader, error) {
	o := &objReader{n: n, prefix: prefix, index: index}
	if n == nil || n.kind != kindObject {
		return nil, malformed(fmt.Sprintf("%s must be an object", o.path()))
	}
	o.used = o.usedBuf[:0]
	return o, nil
}

func (o *objReader) path() string {
	if o.index < 0 {
		return o.prefix
	}
	return fmt.Sprintf("%s[%d]", o.prefix, o.index)
}

func (o *objReader) fail(key, want string) {
	if o.err == nil {
		o.err = malformed(fmt.Sprintf("%s.%s must be %s", o.path(), key, want))
	}
}

// get returns the member, or nil when it is absent or null; a missing
// required member records an error.
func (o *objReader) get(key string, required bool) *node {
	if o.err != nil {
		return nil
	}
	v := o.n.get(key)
	if v != nil {
		o.used = append(o.used, key)
		if v.kind == kindNull {
			v = nil
		}
	}
	if v == nil && required {
		o.err = malformed(fmt.Sprintf("%s.%s is missing", o.path(), key))
	}
	return v
}

func (o *objReader) str(key string, dst *string, required bool) {
	if v := o.get(key, required); v != nil {
		if v.kind != kindString {
			o.fail(key, "a string")
			return
		}
		*dst = v.str
	}
}

func (o *objReader) boolean(key string, dst *bool) {
	if v := o.get(key, false); v != nil {
		if v.kind != kindBool {
			o.fail(key, "true or false")
			return
		}
		*dst = v.boolean
	}
}

func (o *objReader) uint(key string, bits int, required bool) uint64 {
	v := o.get(key, required)
	if v == nil {
		return 0
	}
	if v.kind != kindNumber {
		o.fail(key, "an integer")
		return 0
	}
	n, err := strconv.ParseUint(v.str, 10, bits)
	if err != nil {
		o.fail(key, fmt.Sprintf("an unsigned %d-bit integer", bits))
	}
	return n
}

func (o *objReader) int(key string, bits int, required bool) int64 {
	v := o.get(key, required)
	if v == nil {
		return 0
	}
	if v.kind != kindNumber {
		o.fail(key, "an integer")
		return 0
	}
	n, err := strconv.ParseInt(v.str, 10, bits)
	if err != nil {
		o.fail(key, fmt.Sprintf("a %d-bit integer", bits))
	}
	return n
}

func (o *objReader) time(key string, dst *time.Time, required bool) {
	var s string
	o.str(key, &s, required)
	if s == "" || o.err != nil {
		return
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		o.fail(key, "an RFC 3339 time")
		return
	}
	*dst = t
}

// array returns the elements of an array member (nil when absent or null).
func (o *objReader) array(key string, required bool) []*node {
	v := o.get(key, required)
	if v == nil {
		return nil
	}
	if v.kind != kindArray {
		o.fail(key, "an array")
		return nil
	}
	return v.elems
}

// object returns a reader for an object member, or nil when absent or null.
func (o *objReader) object(key string, required bool) *objReader {
	v := o.get(key, required)
	if v == nil {
		return nil
	}
	r, err := readObject(v, o.path()+"."+key)
	if err != nil && o.err == nil {
		o.err = err
	}
	return r
}

// done reports the first error or unknown member.
func (o *objReader) done() error {
	if o.err != nil {
		return o.err
	}
	if len(o.used) == len(o.n.members) {
		return nil
	}
	used := make(map[string]bool, len(o.used))
	for _, k := range o.used {
		used[k] = true
	}
	for _, m := range o.n.members {
		if !used[m.key] {
			return malformed(fmt.Sprintf("%s has unknown member %q", o.path(), m.key))
		}
	}
	return nil
}

func decodeRoot(n *node) (*Root, error) {
	o, err := readObject(n, "root")
	if err != nil {
		return nil, err
	}
	r := &Root{}
	o.str("schema", &r.Schema, true)
	o.str("type", &r.Type, true)
	r.Version = o.uint("version", 64, true)
	o.time("expires", &r.Expires, true)
	if keys := o.object("keys", true); keys != nil {
		r.Keys = make(map[string]PublicKey, len(keys.n.members))
		for _, m := range keys.n.members {
			ko := keys.object(m.key, true)
			if ko == nil {
				break
			}
			var k PublicKey
			ko.str("keytype", &k.KeyType, true)
			ko.str("public", &k.Public, true)
			if err := ko.done(); err != nil {
				return nil, err
			}
			r.Keys[m.key] = k
		}
		if err := keys.done(); err != nil {
			return nil, err
		}
	}
	if roles := o.object("roles", true); roles != nil {
		for _, name := range Roles {
			ro := roles.object(name, true)
			if ro == nil {
				break
			}
			var role Role
			for i, e := range ro.array("keyids", true) {
				if e.kind != kindString {
					return nil, malformed(fmt.Sprintf("root.roles.%s.keyids[%d] must be a string", name, i))
				}
				role.KeyIDs = append(role.KeyIDs, e.str)
			}
			role.Threshold = int(ro.int("threshold", 32, true))
			if err := ro.done(); err != nil {
				return nil, err
			}
			_ = r.SetRole(name, role)
		}
		if err := roles.done(); err != nil {
			return nil, err
		}
	}
	if err := o.done(); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeModel decodes a model manifest; requireHeader is false for the
// unsigned input of ParseModelManifest.
func decodeModel(n *node, requireHeader bool) (*ModelManifest, error) {
	o, err := readObject(n, "model")
	if err != nil {
		return nil, err
	}
	m := &ModelManifest{}
	o.str("schema", &m.Schema, requireHeader)
	o.str("type", &m.Type, requireHeader)
	o.str("name", &m.Name, true)
	o.str("version", &m.Version, true)
	o.time("created", &m.Created, true)
	for i, e := range o.array("artifacts", true) {
		ao, err := readElem(e, "model.artifacts", i)
		if err != nil {
			return nil, err
		}
		var a Artifact
		ao.str("variant", &a.Variant, true)
		ao.str("key", &a.Key, true)
		ao.str("sha256", &a.SHA256, true)
		a.Size = ao.int("size", 64, true)
		ao.str("format", &a.Format, true)
		if err := ao.done(); err != nil {
			return nil, err
		}
		m.Artifacts = append(m.Artifacts, a)
	}
	if m.Inputs, err = decodeTensors(o.array("inputs", true), "model.inputs"); err != nil {
		return nil, err
	}
	if m.Outputs, err = decodeTensors(o.array("outputs", true), "model.outputs"); err != nil {
		return nil, err
	}
	if wo := o.object("warmup", false); wo != nil {
		m.WarmUp = &WarmUp{}
		for i, e := range wo.array("inputs", true) {
			to, err := readElem(e, "model.warmup.inputs", i)
			if err != nil {
				return nil, err
			}
			var t WarmUpTensor
			to.str("name", &t.Name, true)
			if t.Shape, err = decodeShape(to.array("shape", false), to); err != nil {
				return nil, err
			}
			to.str("data", &t.Data, false)
			if err := to.done(); err != nil {
				return nil, err
			}
			m.WarmUp.Inputs = append(m.WarmUp.Inputs, t)
		}
		if err := wo.done(); err != nil {
			return nil, err
		}
	}
	if ro := o.object("runtime", false); ro != nil {
		m.Runtime = &RuntimeHints{
			IntraOpThreads:   int(ro.int("intra_op_threads", 32, false)),
			InterOpThreads:   int(ro.int("inter_op_threads", 32, false)),
			GPUMemLimitBytes: ro.int("gpu_mem_limit_bytes", 64, false),
		}
		if err := ro.done(); err != nil {
			return nil, err
		}
	}
	if err := o.done(); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeTensors(elems []*node, path string) ([]TensorSpec, error) {
	var specs []TensorSpec
	for i, e := range elems {
		o, err := readElem(e, path, i)
		if err != nil {
			return nil, err
		}
		var t TensorSpec
		o.str("name", &t.Name, true)
		o.str("element_type", &t.ElementType, true)
		if t.Shape, err = decodeShape(o.array("shape", false), o); err != nil {
			return nil, err
		}
		if err := o.done(); err != nil {
			return nil, err
		}
		specs = append(specs, t)
	}
	return specs, nil
}

func decodeShape(elems []*node, o *objReader) ([]int64, error) {
	if elems == nil {
		return nil, nil
	}
	shape := make([]int64, len(elems))
	for i, e := range elems {
		if e.kind != kindNumber {
			return nil, malformed(fmt.Sprintf("%s.shape[%d] must be an integer", o.path(), i))
		}
		d, err := strconv.ParseInt(e.str, 10, 64)
		if err != nil {
			return nil, malformed(fmt.Sprintf("%s.shape[%d] must be a 64-bit integer", o.path(), i))
		}
		shape[i] = d
	}
	return shape, nil
}

// decodeAssignment decodes an assignment except the manifest members, which
// it returns as nodes: the caller parses them as envelopes and fills in
// ModelAssignment.Manifest with their canonical bytes.
func decodeAssignment(n *node) (*Assignment, []*node, error) {
	o, err := readObject(n, "assignment")
	if err != nil {
		return nil, nil, err
	}
	a := &Assignment{}
	o.str("schema", &a.Schema, true)
	o.str("type", &a.Type, true)
	o.str("device", &a.Device, true)
	a.Sequence = o.uint("sequence", 64, true)
	o.time("issued", &a.Issued, true)
	o.time("expires", &a.Expires, true)
	elems := o.array("models", false)
	manifests := make([]*node, 0, len(elems))
	for i, e := range elems {
		mo, err := readElem(e, "assignment.models", i)
		if err != nil {
			return nil, nil, err
		}
		var m ModelAssignment
		mn := mo.get("manifest", true)
		mo.str("mode", &m.Mode, true)
		m.ShadowSamplePPM = uint32(mo.uint("shadow_sample_ppm", 32, false))
		m.MaxErrorRatePPM = uint32(mo.uint("max_error_rate_ppm", 32, false))
		mo.boolean("allow_downgrade", &m.AllowDowngrade)
		for j, be := range mo.array("bindings", false) {
			bo, err := readElem(be, mo.path()+".bindings", j)
			if err != nil {
				return nil, nil, err
			}
			var b Binding
			bo.str("input", &b.Input, true)
			bo.str("output", &b.Output, false)
			if err := bo.done(); err != nil {
				return nil, nil, err
			}
			m.Bindings = append(m.Bindings, b)
		}
		if err := mo.done(); err != nil {
			return nil, nil, err
		}
		a.Models = append(a.Models, m)
		manifests = append(manifests, mn)
	}
	if err := o.done(); err != nil {
		return nil, nil, err
	}
	return a, manifests, nil
}
