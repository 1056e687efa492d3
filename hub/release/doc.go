// Package release publishes model releases: what `fleethub model push`
// does, as a library. Push takes one ONNX file per hardware variant ("cpu",
// "cuda", …), reads the tensor specs from the files (InspectONNX), uploads
// the files to S3 hashing them on the way, builds the model manifest,
// signs it with the release key(s) and registers it in the hub's store.
//
// The parties: the operator pushing holds the release keys, or not when
// they are kept offline; the hub's store holds the release; devices fetch
// the artifacts from S3 and trust them only through the manifest's sha256
// and size, signed by a threshold of release keys listed in the trusted
// root (see package manifest).
//
// Offline signing: Push with SignLater registers the release with an
// unsigned envelope (a manifest envelope with no signatures). Devices refuse
// it and rollouts cannot use it until it is signed. The operator copies the
// envelope (store.Release.Manifest) to the machine holding the release
// keys, signs it there with Sign (or manifest.SignModelManifest, which also
// adds further signatures for a release threshold above one), and hands
// the signed envelope back to the hub, which checks it with Attach (a
// threshold of the trust root's release keys, and exactly the registered
// manifest) before storing it with store.Store.SignRelease. The signed
// bytes cover exactly what Push registered: signing never changes the
// manifest. The CLI steps are fleethub model manifest, fleethub manifest
// sign and fleethub model attach-signature (docs/trust.md).
//
// Push is safe for concurrent use with different releases; two concurrent
// pushes of the same name and version are refused by the store (one wins).
package release
