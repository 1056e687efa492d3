// Package runtime runs ONNX models on the edge device with ONNX Runtime
// (through github.com/yalue/onnxruntime_go).
//
// ONNX Runtime is a C++ shared library that the agent loads at start-up
// rather than links: the agent binary is built once, and the library
// (libonnxruntime.so.1, CPU or CUDA build) is installed beside it by the
// package, by `make deps` in a source checkout, or by the operator. [Init]
// finds and loads that library once per process; everything else in this
// package (sessions, warm-up, hot swap, idle unload) needs it loaded first.
//
// The library state is process-global in onnxruntime_go, so it is global
// here too: [Init], [Loaded] and [Shutdown] are package functions, safe for
// concurrent use, and the first successful or failed [Init] decides for the
// whole process until [Shutdown].
//
// # Sessions
//
// [Open] loads one model file into a [Session] and checks it against the
// [TensorSpec]s its manifest declares, refusing with [ErrSpecMismatch] a
// model whose inputs or outputs differ and with [ErrLoad] one ONNX Runtime
// refuses. [Session.Run] checks every request against the input specs
// ([ErrInvalidInput], with a message for the client) before ONNX Runtime
// sees it, so a bad request cannot crash the agent or reach the model.
// Sessions are safe for concurrent use, run single-threaded unless told
// otherwise, and fall back from CUDA to the CPU with a note
// ([Session.ProviderNote]) rather than fail.
//
// A [Slot] is the serving pointer of one model name. The reconcile loop
// installs a version like this, and requests that arrive meanwhile are
// served by the old version or the new one, never refused:
//
//	s, err := runtime.Open(ctx, blobPath, inputs, outputs, opts)
//	if err != nil {
//		return err // the old version keeps serving
//	}
//	if _, err := s.WarmUp(ctx, nil); err != nil {
//		s.Close()
//		return err
//	}
//	old, _ := slot.Swap(s, version)
//	if old != nil {
//		old.Close() // returns once the requests still on it are done
//	}
//
// Swapping in nil unloads the model (scale to zero); the next request sees
// [ErrNotLoaded] until a session is swapped in again.
//
// Closing a session hands the memory ONNX Runtime freed back to the
// operating system, which glibc would otherwise keep: without that, a
// daemon that reloads models grows with every reload (see TestReloadMemory).
package runtime
