// Package manifest defines the signed documents of modelfleet and the trust
// rules an edge agent applies to them. It is pure: standard library and
// crypto only, no network and no file I/O; everything works on []byte.
//
// # Parties and key hierarchy
//
// Three parties hold keys, modelled on TUF and Uptane:
//
//   - The root role (offline keys, threshold e.g. 2 of 3) signs the Root
//     document: the public keys of every role and how many distinct
//     signatures each role needs. Agents are enrolled with an initial root and
//     accept a new one only when a threshold of the old AND of the new root
//     keys signed it, with version = old + 1 (see [Verifier.UpdateRoot]).
//   - The release role (keys may be offline, held by whoever publishes model
//     versions) signs a ModelManifest: one model version, the sha256 and size
//     of each artifact variant, tensor specs and runtime hints.
//   - The director role (the hub's online key) signs an Assignment: which
//     models one device runs, with a strictly increasing sequence number and a
//     short expiry. Each model entry embeds a release-signed manifest
//     envelope, so a compromised director can choose among released models
//     but cannot invent one.
//
// Every document travels in an [Envelope]: {"signed": …, "signatures": […]}.
// Signatures are ed25519 over the canonical JSON of "signed" (see
// [Canonicalize]). The agent keeps its trust in a [Verifier], a state machine
// holding the trusted root and the last accepted assignment state; each
// refusal is a *[VerifyError] wrapping one of the exported sentinel errors
// (ErrBadSignature, ErrRollback, ErrExpired, …), matched with errors.Is.
//
// docs/trust.md describes the formats, the attacks and the tests that prove
// each one is stopped.
package manifest
