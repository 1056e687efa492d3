package hub

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/internal/bus"
)

// Ingest outcomes of a device message that was not stored, the reason
// label of Metrics.Rejected.
const (
	// RejectOversized: the payload exceeded Config.MaxPayloadBytes.
	RejectOversized = "oversized"
	// RejectMalformed: the payload did not parse (bad JSON, an online flag
	// other than true/false).
	RejectMalformed = "malformed"
	// RejectStale: a state report older than one already ingested.
	RejectStale = "stale"
	// RejectStore: the store refused or failed the write.
	RejectStore = "store"
)

// IngestKinds are the device message kinds the hub ingests, the kind label
// of Metrics.Received and Metrics.Rejected.
var IngestKinds = []string{bus.KindState, bus.KindOnline, bus.KindTelemetry, bus.KindEvents}

// RejectReasons are the reasons of Metrics.Rejected, in a fixed order.
var RejectReasons = []string{RejectOversized, RejectMalformed, RejectStale, RejectStore}

// PublishLatencyBuckets are the upper bounds, in seconds, of the
// assignment-publish latency histogram: from a local broker's
// sub-millisecond acknowledgement to a congested one's ten seconds.
var PublishLatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// errMalformed marks an ingest error caused by the payload itself.
var errMalformed = errors.New("malformed payload")

// Histogram is a snapshot of a cumulative histogram in Prometheus terms.
type Histogram struct {
	// Bounds are the buckets' upper bounds, ascending (the +Inf bucket is
	// implicit: it holds Count).
	Bounds []float64
	// Cumulative[i] counts the observations ≤ Bounds[i].
	Cumulative []uint64
	// Count is the number of observations, Sum their total.
	Count uint64
	Sum   float64
}

// Metrics is a snapshot of the hub's counters since it was created, read by
// the API's /metrics endpoint. Counters only grow.
type Metrics struct {
	// Ready reports whether Run got as far as serving (store open, broker
	// connected, subscriptions in place).
	Ready bool
	// BrokerConnected reports whether the MQTT connection is up now.
	BrokerConnected bool
	// Received counts the device messages received, by kind (IngestKinds),
	// whether stored or not.
	Received map[string]uint64
	// Rejected counts the received messages that were not stored, by kind
	// and then by reason (RejectReasons).
	Rejected map[string]map[string]uint64
	// PublishLatency is, for each successful publication, the time in
	// seconds it took to sign the assignment plus the time from handing it
	// to the MQTT client until the broker acknowledged it (QoS 1). A wave's
	// assignments are published concurrently, so the latter includes any
	// wait behind the others in flight.
	PublishLatency Histogram
	// PublishFailures counts the assignments that could not be signed or
	// published.
	PublishFailures uint64
}

// counters are the hub's live metrics; the zero value is ready to use.
type counters struct {
	mu       sync.Mutex // guards all following fields
	received map[string]uint64
	rejected map[string]map[string]uint64
	buckets  []uint64 // per bound, not cumulative
	count    uint64
	sum      float64
	failures uint64
}

func (c *counters) receive(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.received == nil {
		c.received = map[string]uint64{}
	}
	c.received[kind]++
}

func (c *counters) reject(kind, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rejected == nil {
		c.rejected = map[string]map[string]uint64{}
	}
	if c.rejected[kind] == nil {
		c.rejected[kind] = map[string]uint64{}
	}
	c.rejected[kind][reason]++
}

// published records a successful publication that took d.
func (c *counters) published(d time.Duration) {
	s := d.Seconds()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buckets == nil {
		c.buckets = make([]uint64, len(PublishLatencyBuckets))
	}
	if i, _ := slices.BinarySearch(PublishLatencyBuckets, s); i < len(c.buckets) {
		c.buckets[i]++
	}
	c.count++
	c.sum += s
}

func (c *counters) publishFailed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures++
}

// Metrics returns a snapshot of the hub's counters and connection state.
// It is safe to call at any time, before Run and after Close included.
func (h *Hub) Metrics() Metrics {
	m := Metrics{
		Received: map[string]uint64{},
		Rejected: map[string]map[string]uint64{},
		PublishLatency: Histogram{
			Bounds:     slices.Clone(PublishLatencyBuckets),
			Cumulative: make([]uint64, len(PublishLatencyBuckets)),
		},
	}
	select {
	case <-h.ready:
		m.Ready = true
	default:
	}
	h.mu.Lock()
	if h.client != nil {
		m.BrokerConnected = h.client.IsConnected()
	}
	h.mu.Unlock()

	c := &h.counters
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range IngestKinds {
		m.Received[k] = c.received[k]
		m.Rejected[k] = map[string]uint64{}
		for _, r := range RejectReasons {
			m.Rejected[k][r] = c.rejected[k][r]
		}
	}
	var cum uint64
	for i := range m.PublishLatency.Cumulative {
		if i < len(c.buckets) {
			cum += c.buckets[i]
		}
		m.PublishLatency.Cumulative[i] = cum
	}
	m.PublishLatency.Count, m.PublishLatency.Sum = c.count, c.sum
	m.PublishFailures = c.failures
	return m
}
