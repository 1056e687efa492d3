package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/internal/bus"
)

// Payload formats of a [Binding].
const (
	// FormatJSON (the default) takes a JSON array of numbers for a model
	// with one input — flat, shaped to the input's declared shape with its
	// one dynamic dimension (if any) inferred, or nested as that shape — or
	// a JSON object mapping input names to such arrays.
	FormatJSON = "json"
	// FormatF32LE takes the raw bytes of little-endian float32 values for
	// a model with one float32 input, shaped as a flat JSON array is.
	FormatF32LE = "f32le"
)

// ErrInvalidBinding means a binding given to [MQTT.SetBindings] is unusable.
// The error names every problem, binding by binding.
var ErrInvalidBinding = errors.New("invalid binding")

// Binding runs a model on the messages of factory topics and publishes the
// results: the way machines that cannot make requests feed a model.
//
// A message on a topic matching Input is decoded as Format, run on Model,
// and the result is published to Output as JSON:
//
//	{"model": "vibration", "version": "1.2.0", "source_topic": "factory/line1/vibration/s7",
//	 "outputs": {"score": [0.93]}, "shapes": {"score": [1, 1]}}
//
// always an object, also for one output, so that consumers can rely on one
// form and see which version scored the reading. Values are flat,
// row-major; "shapes" gives each output's shape.
//
// A payload that cannot be decoded, or that the model refuses or fails on,
// is counted ([Stats]) and, when ErrorTopic is set, reported there:
//
//	{"model": "vibration", "source_topic": "…", "error": "…", "code": 400}
//
// with the codes of the HTTP front end (400 bad payload, 404 model not
// serving, 500 run failure, 504 timed out). Readings refused because the
// model's queue is full (503) are counted but not reported on ErrorTopic,
// which would add load where there is too much already.
//
// Output and ErrorTopic are templates: {N} is replaced by level N
// (1-based) of the topic the message came on, as in manifest.Binding;
// "factory/line1/vibration/+" → "factory/line1/anomaly/{4}" sends the
// result of factory/line1/vibration/s7 to factory/line1/anomaly/s7. A
// template naming a level the topic lacks makes that message fail.
//
// Neither may name a topic under the modelfleet prefix, and Input may not
// read there: inference data never enters hub topics. Neither may match
// the Input of any binding, which would feed results back as readings.
type Binding struct {
	// Model is the name of the model to run.
	Model string
	// Input is an MQTT topic filter; + and # wildcards allowed.
	Input string
	// Output is the topic template for results; "" runs the model without
	// publishing (the run is still counted and metered).
	Output string
	// Format is FormatJSON ("" too) or FormatF32LE.
	Format string
	// ErrorTopic is the topic template for errors; "" only counts them.
	ErrorTopic string
	// QoS is the MQTT QoS of the results and errors published (0 or 1).
	// Inputs are subscribed at QoS 1, so each reading arrives at the QoS
	// it was published with.
	QoS byte
}

// route is a checked binding, ready to serve.
type route struct {
	b      Binding
	output *template
	errors *template
}

// routeTable maps each subscribed input filter to its routes.
type routeTable struct {
	byFilter map[string][]*route
}

// compileBindings checks bindings against each other and the hub prefix,
// and returns the routing table. The error lists every problem.
func compileBindings(bindings []Binding, prefix string) (*routeTable, error) {
	var problems []error
	hub := append(strings.Split(prefix, "/"), "#")
	inputs := make([][]string, len(bindings))
	for i, b := range bindings {
		if checkFilter(b.Input) == nil {
			inputs[i] = strings.Split(b.Input, "/")
		}
	}
	rt := &routeTable{byFilter: map[string][]*route{}}
	for i, b := range bindings {
		var errs []string
		bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
		if err := bus.ValidateName(b.Model); err != nil {
			bad("model: %v", err)
		}
		if err := checkFilter(b.Input); err != nil {
			bad("input: %v", err)
		} else if filtersOverlap(inputs[i], hub) {
			bad("input %q can match topics under the modelfleet prefix %q, which carry the hub's messages, not readings", b.Input, prefix)
		}
		switch b.Format {
		case "", FormatJSON, FormatF32LE:
		default:
			bad("format %q: want %q or %q", b.Format, FormatJSON, FormatF32LE)
		}
		if b.QoS > 1 {
			bad("qos %d: want 0 or 1", b.QoS)
		}
		r := &route{b: b}
		r.output = compileTemplate("output", b.Output, b.Input, inputs, hub, prefix, bad)
		r.errors = compileTemplate("error_topic", b.ErrorTopic, b.Input, inputs, hub, prefix, bad)
		for j := range i {
			if bindings[j].Model == b.Model && bindings[j].Input == b.Input {
				bad("it runs model %q on %q like bindings[%d]", b.Model, b.Input, j)
			}
		}
		if len(errs) > 0 {
			problems = append(problems, fmt.Errorf("bindings[%d] (model %q, input %q): %s", i, b.Model, b.Input, strings.Join(errs, "; ")))
			continue
		}
		rt.byFilter[b.Input] = append(rt.byFilter[b.Input], r)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w:\n%w", ErrInvalidBinding, errors.Join(problems...))
	}
	return rt, nil
}

// compileTemplate checks one output or error topic template of a binding
// and returns it, nil when text is empty.
func compileTemplate(field, text, input string, inputs [][]string, hub []string, prefix string, bad func(string, ...any)) *template {
	if text == "" {
		return nil
	}
	t, err := parseTemplate(text)
	if err != nil {
		bad("%s: %v", field, err)
		return nil
	}
	levels := t.asFilter()
	if filtersOverlap(levels, hub) {
		bad("%s %q can name a topic under the modelfleet prefix %q; results and errors must stay off the hub's topics", field, text, prefix)
	}
	if in := strings.Split(input, "/"); t.max > len(in) && in[len(in)-1] != "#" {
		bad("%s %q refers to level {%d}, but input %q has %d levels", field, text, t.max, input, len(in))
	}
	for j, in := range inputs {
		if in != nil && filtersOverlap(levels, in) {
			bad("%s %q can match the input %q of bindings[%d]: results would come back as readings", field, text, strings.Join(in, "/"), j)
			break
		}
	}
	return &t
}

// filters returns the input filters of the table, sorted.
func (rt *routeTable) filters() []string {
	fs := make([]string, 0, len(rt.byFilter))
	for f := range rt.byFilter {
		fs = append(fs, f)
	}
	slices.Sort(fs)
	return fs
}

// decodePayload decodes a binding's message into model inputs. Errors wrap
// runtime.ErrInvalidInput.
func decodePayload(format string, payload []byte, info ModelInfo) (map[string]runtime.Tensor, error) {
	single := func() (runtime.TensorSpec, error) {
		if len(info.Inputs) != 1 {
			return runtime.TensorSpec{}, invalid("model %q takes %d inputs (%s); send a JSON object mapping each input name to its values",
				info.Name, len(info.Inputs), describeSpecs(info.Inputs))
		}
		return info.Inputs[0], nil
	}
	if format == FormatF32LE {
		spec, err := single()
		if err != nil {
			return nil, err
		}
		t, err := decodeF32LE(payload, spec)
		if err != nil {
			return nil, invalid("%v", err)
		}
		return map[string]runtime.Tensor{spec.Name: t}, nil
	}
	trimmed := bytes.TrimLeft(payload, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return nil, invalid("payload is empty; send a JSON array of numbers or an object of input name to array")
	case trimmed[0] == '[':
		spec, err := single()
		if err != nil {
			return nil, err
		}
		t, err := decodeLoose(payload, spec)
		if err != nil {
			return nil, invalid("input %q: %v", spec.Name, err)
		}
		return map[string]runtime.Tensor{spec.Name: t}, nil
	case trimmed[0] == '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(payload, &obj); err != nil {
			return nil, invalid("payload is not a valid JSON object: %v", strings.TrimPrefix(err.Error(), "json: "))
		}
		if len(obj) == 0 {
			return nil, invalid("payload object has no inputs; model %q takes %s", info.Name, describeSpecs(info.Inputs))
		}
		inputs := make(map[string]runtime.Tensor, len(obj))
		for name, raw := range obj {
			spec, ok := info.input(name)
			if !ok {
				return nil, invalid("unknown input %q: model %q takes %s", name, info.Name, describeSpecs(info.Inputs))
			}
			t, err := decodeLoose(raw, spec)
			if err != nil {
				return nil, invalid("input %q: %v", name, err)
			}
			inputs[name] = t
		}
		return inputs, nil
	}
	return nil, invalid("payload starts with %s; send a JSON array of numbers or an object of input name to array (format %q)", preview(trimmed), FormatJSON)
}

// appendResult appends the JSON result of a binding's run.
func appendResult(b []byte, info ModelInfo, version, source string, outs map[string]runtime.Tensor) ([]byte, error) {
	names := outputOrder(info, outs)
	b = append(b, `{"model":`...)
	b = appendString(b, info.Name)
	b = append(b, `,"version":`...)
	b = appendString(b, version)
	b = append(b, `,"source_topic":`...)
	b = appendString(b, source)
	b = append(b, `,"outputs":{`...)
	for i, name := range names {
		b = appendString(appendSep(b, i), name)
		b = append(b, ':')
		var err error
		if b, err = appendData(b, outs[name]); err != nil {
			return b, fmt.Errorf("output %q: %w", name, err)
		}
	}
	b = append(b, `},"shapes":{`...)
	for i, name := range names {
		b = appendString(appendSep(b, i), name)
		b = append(b, ':')
		b = appendShape(b, outs[name].Shape())
	}
	return append(b, "}}"...), nil
}

// bindingError is the JSON published on a binding's error topic.
type bindingError struct {
	Model       string `json:"model"`
	SourceTopic string `json:"source_topic"`
	Error       string `json:"error"`
	Code        int    `json:"code"`
}

// runBinding serves one message of route r: decode, run, publish.
func (m *MQTT) runBinding(ctx context.Context, r *route, msg bus.Message) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.RequestTimeout)
	defer cancel()
	info, ok := m.inf.Model(r.b.Model)
	if !ok {
		m.bindingFailed(ctx, r, msg, unknownModel(r.b.Model), "")
		return
	}
	inputs, err := decodePayload(r.b.Format, msg.Payload, info)
	if err != nil {
		m.bindingFailed(ctx, r, msg, err, "")
		return
	}
	outs, version, err := m.inf.Infer(ctx, info.Name, inputs)
	if err != nil {
		m.bindingFailed(ctx, r, msg, err, version)
		return
	}
	if r.output == nil {
		m.stats.bindings.ok.Add(1)
		return
	}
	topic, err := m.outputTopic(r.output, msg.Topic)
	if err != nil {
		m.stats.bindings.dropped.Add(1)
		m.warn("binding result dropped", "model", info.Name, "source_topic", msg.Topic, "err", err)
		return
	}
	payload, err := appendResult(nil, info, version, msg.Topic, outs)
	if err != nil {
		m.bindingFailed(ctx, r, msg, fmt.Errorf("model %q returned an output that cannot be sent as JSON: %w", info.Name, err), version)
		return
	}
	if err := m.publish(ctx, topic, r.b.QoS, payload); err != nil {
		m.stats.bindings.dropped.Add(1)
		m.warn("binding result not published", "model", info.Name, "topic", topic, "err", err)
		return
	}
	m.stats.bindings.ok.Add(1)
}

// bindingFailed counts a failed message and reports it on the error topic.
func (m *MQTT) bindingFailed(ctx context.Context, r *route, msg bus.Message, err error, version string) {
	code := statusOf(err)
	if m.stats.bindings.failure(code) {
		logFailure(m.log, r.b.Model, version, err)
	}
	if r.errors == nil || code == 503 {
		return
	}
	topic, terr := m.outputTopic(r.errors, msg.Topic)
	if terr != nil {
		m.warn("binding error not reported", "model", r.b.Model, "source_topic", msg.Topic, "err", terr)
		return
	}
	payload, _ := json.Marshal(bindingError{Model: r.b.Model, SourceTopic: msg.Topic, Error: clientMessage(r.b.Model, err), Code: code})
	if perr := m.publish(ctx, topic, r.b.QoS, payload); perr != nil {
		m.warn("binding error not reported", "model", r.b.Model, "topic", topic, "err", perr)
	}
}

// outputTopic renders a template for a message topic and checks the
// result; the check against the prefix repeats SetBindings' as a last
// line of defence.
func (m *MQTT) outputTopic(t *template, source string) (string, error) {
	topic, err := t.render(strings.Split(source, "/"))
	if err != nil {
		return "", err
	}
	if err := checkTopicName(topic); err != nil {
		return "", err
	}
	if underPrefix(topic, m.topics.Prefix()) {
		return "", fmt.Errorf("topic %q is under the modelfleet prefix; refused", topic)
	}
	return topic, nil
}
