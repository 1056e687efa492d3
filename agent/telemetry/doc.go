// Package telemetry measures what the agent's models do and reports it: a
// [Recorder] counts requests, errors, latencies, compute time per execution
// provider, cold starts, queue rejections and shadow comparisons; a
// [Reporter] publishes them with the device's resource usage (from a
// [Sampler]) to the hub over MQTT every interval; and the Recorder serves
// the same counters to Prometheus.
//
// The two consumers want different things from one set of counters. The
// hub gets deltas: each report covers the window since the previous one, so
// it can sum and merge windows per minute without keeping per-device state
// and without averaging averages. Prometheus gets cumulative counters, so
// rates survive missed scrapes. The Recorder keeps both and updates them
// together on each observation, under one per-model mutex (tens of nanoseconds,
// no allocation).
//
// Data residency: only aggregates leave the device this way. The Recorder
// never sees a request's inputs or outputs, and it keeps only a closed set
// of error kinds, never error messages (which may quote the request).
//
// The package uses the standard library only; GPU usage comes from a
// function the caller provides, so it does not link NVML.
package telemetry
