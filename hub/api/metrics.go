package api

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"

	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/store"
)

// metrics writes the Prometheus text exposition format (version 0.0.4) by
// hand: gauges computed from the store on each scrape, and the hub core's
// counters (MetricsSource) when the hub provides them.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	ds, err := s.st.ListDevices(r.Context(), nil)
	if err != nil {
		return err
	}
	rs, err := s.st.ListRollouts(r.Context())
	if err != nil {
		return err
	}
	online := 0
	for _, d := range ds {
		if d.Online {
			online++
		}
	}
	byStatus := map[store.RolloutStatus]int{}
	for _, ro := range rs {
		byStatus[ro.Status]++
	}
	var b bytes.Buffer
	header := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	gauge := func(name, help string) { header(name, "gauge", help) }
	gauge("modelfleet_devices", "Devices known to the hub.")
	fmt.Fprintf(&b, "modelfleet_devices %d\n", len(ds))
	gauge("modelfleet_devices_online", "Devices whose agent is connected to the broker.")
	fmt.Fprintf(&b, "modelfleet_devices_online %d\n", online)
	gauge("modelfleet_rollouts", "Rollouts by status.")
	for _, st := range store.RolloutStatuses {
		fmt.Fprintf(&b, "modelfleet_rollouts{status=%q} %d\n", string(st), byStatus[st])
	}
	if ms, ok := s.hub.(MetricsSource); ok {
		writeHubMetrics(&b, header, ms.Metrics())
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, err = w.Write(b.Bytes())
	return err
}

// writeHubMetrics writes the hub core's connection state, ingest counters
// and assignment-publish histogram.
func writeHubMetrics(b *bytes.Buffer, header func(name, typ, help string), m hub.Metrics) {
	header("modelfleet_hub_ready", "gauge", "1 once the hub core runs: store open, broker connected, subscriptions in place.")
	fmt.Fprintf(b, "modelfleet_hub_ready %d\n", b2i(m.Ready))
	header("modelfleet_broker_connected", "gauge", "1 while the hub's MQTT connection is up.")
	fmt.Fprintf(b, "modelfleet_broker_connected %d\n", b2i(m.BrokerConnected))

	header("modelfleet_ingest_messages_total", "counter", "Device messages received by the hub, by kind (stored or not); rate() is the ingest rate.")
	for _, k := range hub.IngestKinds {
		fmt.Fprintf(b, "modelfleet_ingest_messages_total{kind=%q} %d\n", k, m.Received[k])
	}
	header("modelfleet_ingest_rejected_total", "counter", "Device messages received but not stored, by kind and reason (oversized, malformed, stale, store).")
	for _, k := range hub.IngestKinds {
		for _, r := range hub.RejectReasons {
			fmt.Fprintf(b, "modelfleet_ingest_rejected_total{kind=%q,reason=%q} %d\n", k, r, m.Rejected[k][r])
		}
	}

	const h = "modelfleet_assignment_publish_seconds"
	header(h, "histogram", "Time from signing a device assignment until the broker acknowledged its publication (QoS 1).")
	for i, le := range m.PublishLatency.Bounds {
		fmt.Fprintf(b, "%s_bucket{le=%q} %d\n", h, strconv.FormatFloat(le, 'g', -1, 64), m.PublishLatency.Cumulative[i])
	}
	fmt.Fprintf(b, "%s_bucket{le=\"+Inf\"} %d\n", h, m.PublishLatency.Count)
	fmt.Fprintf(b, "%s_sum %s\n", h, strconv.FormatFloat(m.PublishLatency.Sum, 'g', -1, 64))
	fmt.Fprintf(b, "%s_count %d\n", h, m.PublishLatency.Count)
	header("modelfleet_assignment_publish_failures_total", "counter", "Device assignments that could not be signed or published.")
	fmt.Fprintf(b, "modelfleet_assignment_publish_failures_total %d\n", m.PublishFailures)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
