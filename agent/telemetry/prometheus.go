package telemetry

import (
	"bytes"
	"cmp"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// PrometheusContentType is the Content-Type of the text exposition format
// version 0.0.4 that [Recorder.WritePrometheus] writes.
const PrometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

// Handler returns an http.Handler serving the Recorder's metrics to
// Prometheus (mount it at /metrics).
func (r *Recorder) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var buf bytes.Buffer
		r.writePrometheus(&buf)
		w.Header().Set("Content-Type", PrometheusContentType)
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		if req.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(buf.Bytes()) // the client went away; nothing to do
	})
}

// WritePrometheus writes the cumulative counters and the latest device
// stats in the Prometheus text exposition format 0.0.4:
//
//	modelfleet_requests_total{model,version}                  counter
//	modelfleet_request_errors_total{model,version,kind}       counter
//	modelfleet_request_duration_seconds{model,version}        histogram (successful requests)
//	modelfleet_compute_seconds_total{model,version,provider}  counter, provider "cpu" or "gpu"
//	modelfleet_cold_starts_total{model,version}               counter
//	modelfleet_cold_start_seconds_total{model,version}        counter
//	modelfleet_queue_rejections_total{model}                  counter
//	modelfleet_shadow_comparisons_total{model,version}        counter, version = candidate
//	modelfleet_shadow_agreements_total{model,version}         counter
//	modelfleet_shadow_max_abs_diff{model,version}             gauge, largest since the start
//	modelfleet_shadow_duration_seconds{model,version}         histogram
//	modelfleet_device_cpu_percent, modelfleet_device_memory_total_bytes,
//	modelfleet_device_memory_available_bytes, modelfleet_process_resident_memory_bytes,
//	modelfleet_goroutines, modelfleet_uptime_seconds           gauges
//	modelfleet_gpu_utilization_percent{gpu}, modelfleet_gpu_memory_used_bytes{gpu},
//	modelfleet_gpu_memory_total_bytes{gpu}                     gauges
//
// Series are sorted by labels. It returns the error of w.
func (r *Recorder) WritePrometheus(w io.Writer) error {
	var buf bytes.Buffer
	r.writePrometheus(&buf)
	_, err := w.Write(buf.Bytes())
	return err
}

// promSeries is a copy of one version's cumulative counters.
type promSeries struct {
	model, version string
	c              counters
}

// promShadow is a copy of one candidate's cumulative shadow counters.
type promShadow struct {
	model, version string
	c              shadowCounters
}

// promModel is a copy of one model's cumulative per-model counters.
type promModel struct {
	model    string
	rejected uint64
}

// collectProm copies the cumulative counters, sorted by model and version.
func (r *Recorder) collectProm() ([]promModel, []promSeries, []promShadow) {
	r.mu.RLock()
	names := make([]string, 0, len(r.models))
	models := make([]*model, 0, len(r.models))
	for name, m := range r.models {
		names = append(names, name)
		models = append(models, m)
	}
	r.mu.RUnlock()

	var (
		pm []promModel
		ps []promSeries
		sh []promShadow
	)
	for i, m := range models {
		m.mu.Lock()
		pm = append(pm, promModel{model: names[i], rejected: m.rejected[total]})
		for v, s := range m.series {
			ps = append(ps, promSeries{model: names[i], version: v, c: s.c[total]})
		}
		for v, ss := range m.shadow {
			sh = append(sh, promShadow{model: names[i], version: v, c: ss.c[total]})
		}
		m.mu.Unlock()
	}
	slices.SortFunc(pm, func(a, b promModel) int { return cmp.Compare(a.model, b.model) })
	slices.SortFunc(ps, func(a, b promSeries) int {
		return cmp.Or(cmp.Compare(a.model, b.model), cmp.Compare(a.version, b.version))
	})
	slices.SortFunc(sh, func(a, b promShadow) int {
		return cmp.Or(cmp.Compare(a.model, b.model), cmp.Compare(a.version, b.version))
	})
	return pm, ps, sh
}

// leLabels are the bucket bounds in seconds, formatted for the le label.
var leLabels = func() (l [numBuckets - 1]string) {
	for i, ns := range boundsNs {
		l[i] = formatFloat(seconds(ns))
	}
	return l
}()

// seconds converts nanoseconds to seconds.
func seconds(ns int64) float64 { return float64(ns) / 1e9 }

// formatFloat formats v as Prometheus expects: shortest representation,
// with +Inf, -Inf and NaN spelled out.
func formatFloat(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64) // FormatFloat already writes +Inf, -Inf, NaN
}

// promWriter writes metric families to a buffer.
type promWriter struct{ b *bytes.Buffer }

// family writes the HELP and TYPE lines of a metric family.
func (p promWriter) family(name, typ, help string) {
	p.b.WriteString("# HELP " + name + " " + escapeHelp(help) + "\n")
	p.b.WriteString("# TYPE " + name + " " + typ + "\n")
}

// sample writes one sample line; labels are alternating names and values.
func (p promWriter) sample(name, value string, labels ...string) {
	p.b.WriteString(name)
	if len(labels) > 0 {
		p.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				p.b.WriteByte(',')
			}
			p.b.WriteString(labels[i])
			p.b.WriteString(`="`)
			p.b.WriteString(escapeLabel(labels[i+1]))
			p.b.WriteByte('"')
		}
		p.b.WriteByte('}')
	}
	p.b.WriteByte(' ')
	p.b.WriteString(value)
	p.b.WriteByte('\n')
}

// histogram writes the cumulative buckets, sum and count of h.
func (p promWriter) histogram(name string, h *hist, labels ...string) {
	var cum uint64
	for i, le := range leLabels {
		cum += h.counts[i]
		p.sample(name+"_bucket", u64(cum), slices.Concat(labels, []string{"le", le})...)
	}
	p.sample(name+"_bucket", u64(h.n), slices.Concat(labels, []string{"le", "+Inf"})...)
	p.sample(name+"_sum", formatFloat(seconds(h.sumNs)), labels...)
	p.sample(name+"_count", u64(h.n), labels...)
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

// labelEscaper escapes label values as the text format requires.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// helpEscaper escapes HELP text as the text format requires.
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// escapeLabel escapes a label value; invalid UTF-8 becomes U+FFFD, since
// the format is UTF-8.
func escapeLabel(s string) string { return labelEscaper.Replace(strings.ToValidUTF8(s, "\uFFFD")) }

func escapeHelp(s string) string { return helpEscaper.Replace(s) }

// writePrometheus writes every metric family to b.
func (r *Recorder) writePrometheus(b *bytes.Buffer) {
	pm, ps, sh := r.collectProm()
	p := promWriter{b}

	p.family("modelfleet_requests_total", "counter", "Inference requests finished, failed ones included.")
	for _, s := range ps {
		p.sample("modelfleet_requests_total", u64(s.c.requests), "model", s.model, "version", s.version)
	}
	p.family("modelfleet_request_errors_total", "counter", "Failed inference requests by kind: invalid_input, busy, run, not_loaded, other.")
	for _, s := range ps {
		for k, n := range s.c.errors {
			p.sample("modelfleet_request_errors_total", u64(n), "model", s.model, "version", s.version, "kind", kindNames[k])
		}
	}
	p.family("modelfleet_request_duration_seconds", "histogram", "Latency of successful inference requests, from arrival to answer.")
	for _, s := range ps {
		p.histogram("modelfleet_request_duration_seconds", &s.c.latency, "model", s.model, "version", s.version)
	}
	p.family("modelfleet_compute_seconds_total", "counter", "Model session run time by execution device (cpu or gpu).")
	for _, s := range ps {
		p.sample("modelfleet_compute_seconds_total", formatFloat(seconds(s.c.computeNs[0])), "model", s.model, "version", s.version, "provider", "cpu")
		p.sample("modelfleet_compute_seconds_total", formatFloat(seconds(s.c.computeNs[1])), "model", s.model, "version", s.version, "provider", "gpu")
	}
	p.family("modelfleet_cold_starts_total", "counter", "Lazy reloads of models unloaded for idleness.")
	for _, s := range ps {
		p.sample("modelfleet_cold_starts_total", u64(s.c.coldStarts), "model", s.model, "version", s.version)
	}
	p.family("modelfleet_cold_start_seconds_total", "counter", "Time spent in lazy reloads of models unloaded for idleness.")
	for _, s := range ps {
		p.sample("modelfleet_cold_start_seconds_total", formatFloat(seconds(s.c.coldStartNs)), "model", s.model, "version", s.version)
	}
	p.family("modelfleet_queue_rejections_total", "counter", "Requests refused because the model's concurrency limit and queue were full.")
	for _, m := range pm {
		p.sample("modelfleet_queue_rejections_total", u64(m.rejected), "model", m.model)
	}
	p.family("modelfleet_shadow_comparisons_total", "counter", "Live requests also run on a shadow candidate version.")
	for _, s := range sh {
		p.sample("modelfleet_shadow_comparisons_total", u64(s.c.compared), "model", s.model, "version", s.version)
	}
	p.family("modelfleet_shadow_agreements_total", "counter", "Shadow comparisons whose outputs had the same argmax.")
	for _, s := range sh {
		p.sample("modelfleet_shadow_agreements_total", u64(s.c.agreed), "model", s.model, "version", s.version)
	}
	p.family("modelfleet_shadow_max_abs_diff", "gauge", "Largest absolute difference between shadow and serving outputs since the start.")
	for _, s := range sh {
		p.sample("modelfleet_shadow_max_abs_diff", formatFloat(s.c.maxAbsDiff), "model", s.model, "version", s.version)
	}
	p.family("modelfleet_shadow_duration_seconds", "histogram", "Latency of shadow candidate runs.")
	for _, s := range sh {
		p.histogram("modelfleet_shadow_duration_seconds", &s.c.latency, "model", s.model, "version", s.version)
	}

	d := r.deviceStats()
	if d == nil {
		return
	}
	gauges := []struct {
		name, help string
		v          float64
	}{
		{"modelfleet_device_cpu_percent", "Busy share of all CPUs over the last sampling interval, 0-100.", d.CPUPercent},
		{"modelfleet_device_memory_total_bytes", "Device RAM.", float64(d.MemoryTotalBytes)},
		{"modelfleet_device_memory_available_bytes", "Device RAM available without swapping.", float64(d.MemoryAvailableBytes)},
		{"modelfleet_process_resident_memory_bytes", "Resident memory of the agent process.", float64(d.ProcessRSSBytes)},
		{"modelfleet_goroutines", "Goroutines of the agent process.", float64(d.Goroutines)},
		{"modelfleet_uptime_seconds", "Time since the agent started.", d.UptimeSeconds},
	}
	for _, g := range gauges {
		p.family(g.name, "gauge", g.help)
		p.sample(g.name, formatFloat(g.v))
	}
	if len(d.GPUs) == 0 {
		return
	}
	gpu := func(name, help string, v func(i int) float64) {
		p.family(name, "gauge", help)
		for i, g := range d.GPUs {
			p.sample(name, formatFloat(v(i)), "gpu", strconv.Itoa(g.Index))
		}
	}
	gpu("modelfleet_gpu_utilization_percent", "Share of time a kernel ran on the GPU, 0-100.", func(i int) float64 { return d.GPUs[i].UtilizationPercent })
	gpu("modelfleet_gpu_memory_used_bytes", "GPU memory in use.", func(i int) float64 { return float64(d.GPUs[i].MemoryUsedBytes) })
	gpu("modelfleet_gpu_memory_total_bytes", "GPU memory.", func(i int) float64 { return float64(d.GPUs[i].MemoryTotalBytes) })
}
