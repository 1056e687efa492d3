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
package runtime
