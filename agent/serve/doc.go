// Package serve holds the agent's inference front ends: the ways clients on
// the device's network reach the models the agent runs. There are three,
// all over one [Inferer] (the agent), which owns the models, their versions
// and hot swaps; this package only decodes, routes and encodes:
//
//   - [NewHTTP]: the Open Inference Protocol (KServe v2) over HTTP, for
//     local clients and tools that speak it (Triton, KServe and MLServer
//     clients, curl); [Serve] runs it with a graceful shutdown.
//   - [MQTT] request/reply: a client publishes an OIP-style request with a
//     reply_to topic on {prefix}/devices/{device}/infer/{model} and gets the
//     answer there (MQTT 3.1.1 has no response topic of its own).
//   - [Binding]s: factory topics wired to a model, for machines that just
//     publish readings: each message is run and the result published on a
//     topic derived from the reading's.
//
// Tensors travel as OIP JSON ("datatype" FP32, FP64, INT64, INT32, UINT8 or
// BOOL; "data" flat or nested, row-major); bindings also take bare JSON
// arrays and raw little-endian float32. Decoding is strict, bounded in
// size, and written for hostile input (see FuzzDecodeInferRequest); every
// error is an answer in plain words with an HTTP status (400, 404, 413,
// 503, 504, 500), never a crash.
//
// # Data residency
//
// Inference inputs and outputs never go to the hub. The MQTT front end
// refuses to publish under the modelfleet topic prefix: a request whose
// reply_to is there is dropped, and a binding whose output, error topic or
// input is, or could be, there is refused by [MQTT.SetBindings]. Only the
// counters of [MQTT.Stats] (aggregates) are meant for the hub's telemetry.
package serve
