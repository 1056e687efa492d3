// Package agent is the modelfleet edge agent: the reconcile loop that turns
// a verified assignment into running models.
//
// An assignment arrives over MQTT (retained, so an agent that was offline
// converges when it reconnects). The agent verifies it against its trusted
// root (package manifest), records it as the desired state, then for each
// model whose version changed: downloads the artifact into the
// content-addressed blob store (package fetch: resumable, size-capped,
// sha256-checked), loads it into ONNX Runtime, warms it up, and swaps the
// serving pointer atomically; in-flight requests finish on the old session.
// Every step is persisted atomically (package state) before it is reported,
// so a kill -9 at any instant restarts into a consistent state that serves
// the last active models without the hub. Any failure before the swap
// leaves the old model serving and is reported with its reason; a new
// version that fails to load or warm up is rolled back. An assignment that
// asks for exactly the version serving (the hub rolling back the same
// release) makes the model active again and clears that failure.
package agent
