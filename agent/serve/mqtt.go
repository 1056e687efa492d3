package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelfleet/modelfleet/internal/bus"
)

// MQTTClient is what the MQTT front end needs from a broker connection;
// *bus.Client satisfies it. Subscribe must deliver a filter's messages to
// its handler in order on a goroutine that may block briefly (bus.Client
// does), never on the network goroutine.
type MQTTClient interface {
	Subscribe(ctx context.Context, filter string, qos byte, handler bus.Handler) error
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

// Unsubscriber is implemented by an [MQTTClient] that can end a
// subscription. Without it, the front end keeps the subscriptions of
// bindings that were removed and ignores their messages (counted in
// [Stats].Ignored), and subscribes to each filter at most once in its
// lifetime.
type Unsubscriber interface {
	Unsubscribe(ctx context.Context, filters ...string) error
}

// MQTTOptions tune the MQTT front end. The zero value is ready to use.
type MQTTOptions struct {
	// Workers is the number of requests and readings run at once, across
	// models; 0 means 4.
	Workers int
	// ModelConcurrency caps the workers one model may hold, so that a slow
	// model leaves workers to the others; 0 means Workers-1 (at least 1).
	// 1 keeps each model's results in arrival order.
	ModelConcurrency int
	// QueueLength is the number of messages that may wait per model; past
	// it, requests are answered 503 and readings dropped (and counted).
	// 0 means 64.
	QueueLength int
	// RequestTimeout bounds one run, from the moment a worker takes it; a
	// request over it is answered 504. 0 means 30 seconds.
	RequestTimeout time.Duration
	// MaxPayloadBytes caps a request or reading; larger ones are dropped
	// unread. 0 means 4 MiB.
	MaxPayloadBytes int
	// Logger receives dropped messages (rate-limited) and run failures;
	// nil discards.
	Logger *slog.Logger
}

func (o MQTTOptions) withDefaults() MQTTOptions {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.ModelConcurrency <= 0 {
		o.ModelConcurrency = max(o.Workers-1, 1)
	}
	o.ModelConcurrency = min(o.ModelConcurrency, o.Workers)
	if o.QueueLength <= 0 {
		o.QueueLength = 64
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = 4 << 20
	}
	return o
}

// replyQoS is the QoS of request replies: a client waiting for an answer
// should get it once the broker has it.
const replyQoS = 1

// publishTimeout bounds one publish (a reply, a result, an error report).
const publishTimeout = 10 * time.Second

// MQTT is the MQTT front end of one device: request/reply inference on
// {prefix}/devices/{device}/infer/{model}, and factory [Binding]s. Create
// it with [NewMQTT], start it with [MQTT.Run]; its methods are safe for
// concurrent use.
//
// # Request/reply
//
// A client publishes to {prefix}/devices/{device}/infer/{model}:
//
//	{"id": "r-17", "reply_to": "factory/line1/replies/r-17",
//	 "inputs": [{"name": "window", "shape": [1, 64], "datatype": "FP32", "data": [0.1, …]}],
//	 "outputs": [{"name": "score"}]}
//
// with inputs and the optional outputs as in an OIP inference request, and
// the agent answers on reply_to (QoS 1, not retained) with
//
//	{"model_name": "vibration", "model_version": "1.2.0", "id": "r-17",
//	 "outputs": [{"name": "score", "datatype": "FP32", "shape": [1, 1], "data": [0.93]}]}
//
// or {"id": "r-17", "model_name": "vibration", "error": "…", "code": 400}, with
// the status codes of the HTTP front end (400, 404, 500, 503, 504).
//
// A request without reply_to has nowhere to be answered and is dropped
// with a log line, and so is one whose reply_to is under the modelfleet
// prefix: the hub's topics carry only aggregates, never inference inputs
// or outputs (data residency), so the agent refuses to publish there
// whatever a client asks. reply_to must also be a plain topic: no
// wildcards, not a $ system topic.
//
// Requests and readings run on a bounded pool of workers, queued per model
// and taken in turn across models; see [MQTTOptions].
type MQTT struct {
	client MQTTClient
	topics bus.Topics
	device string
	inf    Inferer
	opts   MQTTOptions
	log    *slog.Logger
	pool   *pool
	warns  rateLimit

	routes atomic.Pointer[routeTable]
	stats  stats
	ready  chan struct{} // closed once Run has subscribed

	mu         sync.Mutex // guards all following fields; held across SetBindings' subscriptions
	bindings   []Binding
	subscribed map[string]bool // filters subscribed on client
	running    bool
	started    bool
}

// NewMQTT returns the MQTT front end of device on client, serving inf. It
// has no side effects; [MQTT.Run] subscribes.
func NewMQTT(client MQTTClient, topics bus.Topics, device string, inf Inferer, opts MQTTOptions) *MQTT {
	opts = opts.withDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &MQTT{
		client:     client,
		topics:     topics,
		device:     device,
		inf:        inf,
		opts:       opts,
		log:        log.With("component", "serve-mqtt"),
		pool:       newPool(opts.Workers, opts.ModelConcurrency, opts.QueueLength),
		subscribed: map[string]bool{},
		ready:      make(chan struct{}),
	}
	m.routes.Store(&routeTable{byFilter: map[string][]*route{}})
	return m
}

// Run subscribes to the device's request topic and to the inputs of the
// bindings set so far, serves them until ctx ends, and returns nil then, or
// the error that kept it from starting. Runs in progress when ctx ends are
// cancelled, queued ones dropped. Run may be called once.
//
// Without an [Unsubscriber], the subscriptions outlive Run: the client
// must not be given to another MQTT front end afterwards.
func (m *MQTT) Run(ctx context.Context) error {
	if err := bus.ValidateName(m.device); err != nil {
		return fmt.Errorf("mqtt front end: device ID: %w", err)
	}
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errors.New("mqtt front end: Run was already called")
	}
	m.started = true
	m.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	poolDone := make(chan struct{})
	go func() {
		defer close(poolDone)
		m.pool.run(ctx)
	}()
	defer func() {
		cancel()
		<-poolDone
	}()

	filter := m.topics.Infer(m.device, "+")
	if err := m.client.Subscribe(ctx, filter, 1, m.onRequest); err != nil {
		return fmt.Errorf("mqtt front end: subscribe to requests: %w", err)
	}
	m.mu.Lock()
	m.subscribed[filter] = true
	m.running = true
	err := m.subscribeLocked(ctx, m.routes.Load())
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("mqtt front end: %w", err)
	}
	m.log.Info("serving inference over MQTT", "requests", filter, "bindings", len(m.Bindings()))
	close(m.ready)

	<-ctx.Done()
	m.mu.Lock()
	m.running = false
	var filters []string
	for f := range m.subscribed {
		filters = append(filters, f)
	}
	m.mu.Unlock()
	if u, ok := m.client.(Unsubscriber); ok && len(filters) > 0 {
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
		if err := u.Unsubscribe(uctx, filters...); err != nil {
			m.log.Warn("unsubscribe on stop", "err", err)
		}
		ucancel()
	}
	return nil
}

// Ready returns a channel that is closed once Run has subscribed to the
// request topic and the bindings' inputs: from then on, messages published
// there are served.
func (m *MQTT) Ready() <-chan struct{} { return m.ready }

// SetBindings replaces the bindings. It checks all of them first and
// changes nothing if any is invalid ([ErrInvalidBinding], naming each
// problem). While Run runs, it subscribes to new input filters before
// switching (an error there also changes nothing) and, with an
// [Unsubscriber], unsubscribes from the filters no binding uses any more.
// Readings already queued finish under the bindings they arrived for.
func (m *MQTT) SetBindings(ctx context.Context, bindings []Binding) error {
	rt, err := compileBindings(bindings, m.topics.Prefix())
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		if err := m.subscribeLocked(ctx, rt); err != nil {
			return err
		}
	}
	old := m.routes.Swap(rt)
	m.bindings = slices.Clone(bindings)
	if m.running {
		m.unsubscribeLocked(ctx, old, rt)
	}
	return nil
}

// Bindings returns the bindings in force.
func (m *MQTT) Bindings() []Binding {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.bindings)
}

// subscribeLocked subscribes to the filters of rt not yet subscribed.
func (m *MQTT) subscribeLocked(ctx context.Context, rt *routeTable) error {
	for _, f := range rt.filters() {
		if m.subscribed[f] {
			continue
		}
		filter := f
		if err := m.client.Subscribe(ctx, filter, 1, func(msg bus.Message) { m.onReading(filter, msg) }); err != nil {
			return fmt.Errorf("subscribe to binding input %q: %w", filter, err)
		}
		m.subscribed[filter] = true
	}
	return nil
}

// unsubscribeLocked ends the subscriptions old had and rt has not, when
// the client can.
func (m *MQTT) unsubscribeLocked(ctx context.Context, old, rt *routeTable) {
	u, ok := m.client.(Unsubscriber)
	if !ok {
		return
	}
	var gone []string
	for _, f := range old.filters() {
		if _, keep := rt.byFilter[f]; !keep && m.subscribed[f] {
			gone = append(gone, f)
		}
	}
	if len(gone) == 0 {
		return
	}
	if err := u.Unsubscribe(ctx, gone...); err != nil {
		m.log.Warn("unsubscribe from removed binding inputs", "filters", gone, "err", err)
		return
	}
	for _, f := range gone {
		delete(m.subscribed, f)
	}
}

// mqttRequest is a request on the infer topic: an OIP inference request
// with the topic to answer on.
type mqttRequest struct {
	ID         string          `json:"id,omitempty"`
	ReplyTo    string          `json:"reply_to"`
	Parameters parameters      `json:"parameters,omitempty"`
	Inputs     []requestInput  `json:"inputs"`
	Outputs    []requestOutput `json:"outputs,omitempty"`
}

// replyTarget is the part of a request needed to answer it, read leniently
// from requests that cannot be read strictly.
type replyTarget struct {
	ID      any    `json:"id"`
	ReplyTo string `json:"reply_to"`
}

// mqttError is an error reply.
type mqttError struct {
	ID        string `json:"id,omitempty"`
	ModelName string `json:"model_name"`
	Error     string `json:"error"`
	Code      int    `json:"code"`
}

// onRequest takes a request off the subscription: it is queued for its
// model, or answered at once when it cannot be.
func (m *MQTT) onRequest(msg bus.Message) {
	m.stats.requests.received.Add(1)
	device, kind, model, ok := m.topics.ParseDevice(msg.Topic)
	if !ok || kind != bus.KindInfer || device != m.device {
		m.stats.requests.dropped.Add(1)
		return
	}
	if len(msg.Payload) > m.opts.MaxPayloadBytes {
		m.stats.requests.dropped.Add(1)
		m.warn("request dropped: payload too large", "model", model, "bytes", len(msg.Payload), "limit", m.opts.MaxPayloadBytes)
		return
	}
	if _, ok := m.inf.Model(model); !ok {
		m.replyEarly(model, msg, unknownModel(model))
		return
	}
	err := m.pool.submit(model, job{
		run:  func(ctx context.Context) { m.serveRequest(ctx, model, msg) },
		drop: func() { m.stats.requests.dropped.Add(1) },
	})
	if err != nil {
		m.replyEarly(model, msg, err)
	}
}

// replyEarly answers a request that was not queued, from the subscription
// goroutine.
func (m *MQTT) replyEarly(model string, msg bus.Message, err error) {
	if errors.Is(err, errPoolClosed) {
		m.stats.requests.dropped.Add(1)
		return
	}
	var t replyTarget
	_ = json.Unmarshal(msg.Payload, &t)
	id, _ := t.ID.(string)
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	m.replyError(ctx, model, id, t.ReplyTo, err)
}

// serveRequest runs one request on a worker and answers it.
func (m *MQTT) serveRequest(ctx context.Context, model string, msg bus.Message) {
	var req mqttRequest
	if err := decodeStrict(msg.Payload, &req); err != nil {
		var t replyTarget
		_ = json.Unmarshal(msg.Payload, &t)
		id, _ := t.ID.(string)
		m.replyError(ctx, model, id, t.ReplyTo, err)
		return
	}
	if !m.replyable(model, req.ID, req.ReplyTo) {
		return
	}
	info, ok := m.inf.Model(model)
	if !ok {
		m.replyError(ctx, model, req.ID, req.ReplyTo, unknownModel(model))
		return
	}
	inputs, err := decodeInputs(info, req.Inputs)
	if err != nil {
		m.replyError(ctx, model, req.ID, req.ReplyTo, err)
		return
	}
	names, err := outputNames(info, req.Outputs)
	if err != nil {
		m.replyError(ctx, model, req.ID, req.ReplyTo, err)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, m.opts.RequestTimeout)
	outs, version, err := m.inf.Infer(rctx, model, inputs)
	cancel()
	if err != nil {
		logFailure(m.log, model, version, err)
		m.replyError(ctx, model, req.ID, req.ReplyTo, err)
		return
	}
	b, err := appendInferResponse(make([]byte, 0, 256), req.ID, info, version, outs, names)
	if err != nil {
		m.log.Error("inference output cannot be encoded", "model", model, "version", version, "err", err)
		m.replyError(ctx, model, req.ID, req.ReplyTo, fmt.Errorf("model %q returned an output that cannot be sent as JSON: %w", model, err))
		return
	}
	if err := m.publish(ctx, req.ReplyTo, replyQoS, b); err != nil {
		m.stats.requests.dropped.Add(1)
		m.warn("reply not published", "model", model, "reply_to", req.ReplyTo, "err", err)
		return
	}
	m.stats.requests.ok.Add(1)
}

// replyable reports whether replyTo may be answered, and counts and logs
// the request as dropped when not.
func (m *MQTT) replyable(model, id, replyTo string) bool {
	var why string
	switch {
	case replyTo == "":
		why = "it has no reply_to, so there is nowhere to answer"
	case underPrefix(replyTo, m.topics.Prefix()):
		why = fmt.Sprintf("reply_to %q is under the modelfleet prefix %q; inference outputs never go to hub topics", replyTo, m.topics.Prefix())
	default:
		if err := checkTopicName(replyTo); err != nil {
			why = "reply_to is not a topic the agent can publish to: " + err.Error()
		}
	}
	if why == "" {
		return true
	}
	m.stats.requests.dropped.Add(1)
	m.warn("request dropped: "+why, "model", model, "id", id)
	return false
}

// replyError answers a request with an error, and counts it.
func (m *MQTT) replyError(ctx context.Context, model, id, replyTo string, err error) {
	if !m.replyable(model, id, replyTo) {
		return
	}
	code := statusOf(err)
	m.stats.requests.failure(code)
	payload, _ := json.Marshal(mqttError{ID: id, ModelName: model, Error: clientMessage(model, err), Code: code})
	if perr := m.publish(ctx, replyTo, replyQoS, payload); perr != nil {
		m.warn("error reply not published", "model", model, "reply_to", replyTo, "err", perr)
	}
}

// publish publishes a reply, result or error, not retained, within
// publishTimeout even when ctx is already done (the run ended; its answer
// should still go out).
func (m *MQTT) publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	return m.client.Publish(pctx, topic, qos, false, payload)
}

// onReading takes a message off a binding's subscription and queues it for
// each binding of the filter.
func (m *MQTT) onReading(filter string, msg bus.Message) {
	routes := m.routes.Load().byFilter[filter]
	if len(routes) == 0 {
		m.stats.ignored.Add(1) // a removed binding whose filter is still subscribed
		return
	}
	for _, r := range routes {
		m.stats.bindings.received.Add(1)
		if len(msg.Payload) > m.opts.MaxPayloadBytes {
			m.stats.bindings.dropped.Add(1)
			m.warn("reading dropped: payload too large", "model", r.b.Model, "source_topic", msg.Topic, "bytes", len(msg.Payload), "limit", m.opts.MaxPayloadBytes)
			continue
		}
		err := m.pool.submit(r.b.Model, job{
			run:  func(ctx context.Context) { m.runBinding(ctx, r, msg) },
			drop: func() { m.stats.bindings.dropped.Add(1) },
		})
		switch {
		case errors.Is(err, errPoolClosed):
			m.stats.bindings.dropped.Add(1)
		case err != nil:
			m.stats.bindings.busy.Add(1)
			m.warn("reading dropped: model busy", "model", r.b.Model, "source_topic", msg.Topic, "err", err)
		}
	}
}

// warn logs a dropped message, at most about once a second.
func (m *MQTT) warn(msg string, args ...any) {
	if n, ok := m.warns.allow(time.Now()); ok {
		if n > 0 {
			args = append(args, "suppressed_since_last", n)
		}
		m.log.Warn(msg, args...)
	}
}

// rateLimit lets one event through per second and counts the others.
type rateLimit struct {
	mu         sync.Mutex // guards all following fields
	last       time.Time
	suppressed int
}

func (r *rateLimit) allow(now time.Time) (suppressed int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.last) < time.Second {
		r.suppressed++
		return 0, false
	}
	r.last, suppressed, r.suppressed = now, r.suppressed, 0
	return suppressed, true
}

// Counts are the outcomes of the messages one part of the MQTT front end
// took in. Every message received ends in exactly one other count, once it
// is done.
type Counts struct {
	// Received is the number of messages taken in (for bindings, one per
	// binding the message matched).
	Received uint64
	// OK were answered with outputs, or their results published (or run,
	// for bindings without output).
	OK uint64
	// BadInput could not be decoded or were refused by the model (400).
	BadInput uint64
	// Failed named no model on the device, failed to run or timed out
	// (404, 500, 504).
	Failed uint64
	// Busy were refused because the model's queue was full (503).
	Busy uint64
	// Dropped could not be answered: no reply_to, a reply_to or output
	// topic refused, payload over the limit, publish failed, or the front
	// end stopped first.
	Dropped uint64
}

// Stats are the counters of the MQTT front end, for telemetry.
type Stats struct {
	// Requests counts request/reply inference.
	Requests Counts
	// Bindings counts readings of factory bindings.
	Bindings Counts
	// Ignored counts messages on the filters of removed bindings, still
	// subscribed because the client cannot unsubscribe.
	Ignored uint64
}

// stats holds the live counters.
type stats struct {
	requests, bindings counters
	ignored            atomic.Uint64
}

type counters struct {
	received, ok, badInput, failed, busy, dropped atomic.Uint64
}

// failure counts a message that failed with the HTTP-like status code, and
// reports whether the model failed (rather than the input being bad or the
// model busy).
func (c *counters) failure(code int) (modelFailed bool) {
	switch code {
	case 400:
		c.badInput.Add(1)
	case 503:
		c.busy.Add(1)
	default:
		c.failed.Add(1)
		return true
	}
	return false
}

func (c *counters) snapshot() Counts {
	return Counts{
		Received: c.received.Load(), OK: c.ok.Load(), BadInput: c.badInput.Load(),
		Failed: c.failed.Load(), Busy: c.busy.Load(), Dropped: c.dropped.Load(),
	}
}

// Stats returns the counters since NewMQTT.
func (m *MQTT) Stats() Stats {
	return Stats{Requests: m.stats.requests.snapshot(), Bindings: m.stats.bindings.snapshot(), Ignored: m.stats.ignored.Load()}
}
