package runtime

/*
#include <stdlib.h>
#if defined(__GLIBC__)
#include <malloc.h>
static void mf_malloc_trim(void) { malloc_trim(0); }
#else
static void mf_malloc_trim(void) {}
#endif
*/
import "C"

import "sync/atomic"

// trimOnClose makes Session.Close hand freed C heap memory back to the
// operating system; tests turn it off to measure what it saves.
var trimOnClose atomic.Bool

func init() { trimOnClose.Store(true) }

// releaseFreedMemory returns the free pages of the C heap to the operating
// system (glibc's malloc_trim; a no-op with other C libraries).
//
// Destroying an ONNX Runtime session frees its memory to glibc's malloc,
// which keeps most of it: the session's allocations are spread over the
// per-thread malloc arenas of whichever OS threads cgo used, and freed
// blocks amid live ones are never unmapped. Measured with onnxruntime_go
// 1.27 and ONNX Runtime 1.30, a reload of a model with a 256 KiB weight
// left about 40-90 KiB of resident memory behind, linearly, over 1,000
// reloads, CPU arena on or off; with a trim after each destroy, growth
// stayed within a few MiB in total. This is most of the "leak" reported in
// onnxruntime_go issues #48, #112 and #114. The trim walks the whole heap,
// which costs milliseconds at most and happens once per session close.
func releaseFreedMemory() {
	C.mf_malloc_trim()
}
