package release

import "errors"

// Errors callers branch on with errors.Is; the messages wrapping them say
// which file, variant or tensor is concerned.
var (
	// ErrNotONNX: the file is not an ONNX model (empty, truncated, another
	// format such as a JPEG, or random bytes).
	ErrNotONNX = errors.New("not an ONNX model")
	// ErrUnsupported: the file is ONNX, but a graph input or output cannot be
	// described by a model manifest (string tensors, sequences, unknown rank,
	// …), or it exceeds a size limit. Pass the tensor specs explicitly, or
	// export the model differently.
	ErrUnsupported = errors.New("unsupported ONNX model")
	// ErrInvalid: the push request is malformed (bad name, version, variant,
	// tensor spec, no release key without SignLater, …).
	ErrInvalid = errors.New("invalid push request")
	// ErrVariantMismatch: the variants' files declare different inputs or
	// outputs; one manifest describes them all, so they must agree.
	ErrVariantMismatch = errors.New("variants disagree")
	// ErrVersionExists: the model already has a release with this version;
	// releases never change, push a new version.
	ErrVersionExists = errors.New("version already exists")
	// ErrObjectExists: an object already exists at an artifact's key (left
	// by an earlier, failed push, or written by someone else); nothing was
	// uploaded. PushRequest.Force overwrites it.
	ErrObjectExists = errors.New("object already exists")
	// ErrUploadMismatch: the object store holds a different size than was
	// uploaded, or the file changed while it was being uploaded.
	ErrUploadMismatch = errors.New("uploaded object does not match the file")
	// ErrObjectStore: the object store could not be reached or failed a
	// request; the message names the object and the cause.
	ErrObjectStore = errors.New("object store")
	// ErrAlreadySigned: Attach was given a release that is already signed;
	// releases never change, push a new version.
	ErrAlreadySigned = errors.New("release is already signed")
	// ErrSignatureRejected: the envelope given to Attach does not verify
	// against the trust root's release role (bad or foreign signature, too
	// few distinct release keys for the threshold, not a model manifest).
	ErrSignatureRejected = errors.New("signature not accepted")
	// ErrManifestMismatch: the envelope given to Attach signs a manifest
	// other than the one registered for that name and version.
	ErrManifestMismatch = errors.New("signed manifest differs from the registered one")
)
