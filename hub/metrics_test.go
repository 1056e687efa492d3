package hub

import (
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/bus"
)

// TestMetricsCounters: the snapshot's histogram is cumulative with
// inclusive upper bounds, observations above the last bound count only in
// +Inf, and every kind and reason is present even at zero.
func TestMetricsCounters(t *testing.T) {
	h := New(DefaultConfig(), Deps{})
	for _, d := range []time.Duration{
		200 * time.Microsecond, // ≤ 0.0005
		time.Millisecond,       // exactly the 0.001 bound
		30 * time.Millisecond,  // ≤ 0.05
		time.Minute,            // above every bound
	} {
		h.counters.published(d)
	}
	h.counters.publishFailed()
	h.counters.receive(bus.KindState)
	h.counters.receive(bus.KindState)
	h.counters.reject(bus.KindState, RejectMalformed)

	m := h.Metrics()
	if m.Ready || m.BrokerConnected {
		t.Errorf("a hub never run: Ready %t, BrokerConnected %t", m.Ready, m.BrokerConnected)
	}
	want := map[float64]uint64{0.0005: 1, 0.001: 2, 0.0025: 2, 0.025: 2, 0.05: 3, 10: 3}
	for i, le := range m.PublishLatency.Bounds {
		if w, ok := want[le]; ok && m.PublishLatency.Cumulative[i] != w {
			t.Errorf("bucket le=%g: %d, want %d", le, m.PublishLatency.Cumulative[i], w)
		}
	}
	if m.PublishLatency.Count != 4 || m.PublishLatency.Sum < 60 || m.PublishFailures != 1 {
		t.Errorf("count %d, sum %g, failures %d", m.PublishLatency.Count, m.PublishLatency.Sum, m.PublishFailures)
	}
	if m.Received[bus.KindState] != 2 || m.Rejected[bus.KindState][RejectMalformed] != 1 {
		t.Errorf("received %v, rejected %v", m.Received, m.Rejected)
	}
	for _, k := range IngestKinds {
		if _, ok := m.Received[k]; !ok {
			t.Errorf("kind %s missing from Received", k)
		}
		for _, r := range RejectReasons {
			if _, ok := m.Rejected[k][r]; !ok {
				t.Errorf("%s/%s missing from Rejected", k, r)
			}
		}
	}
	// The snapshot is a copy.
	m.Received[bus.KindState] = 99
	if h.Metrics().Received[bus.KindState] != 2 {
		t.Error("changing a snapshot changed the hub's counters")
	}
}
