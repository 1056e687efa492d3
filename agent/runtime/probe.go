package runtime

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// mf_api_base mirrors OrtApiBase, the one struct of the ONNX Runtime C API
// that is stable across all versions: two function pointers, GetApi and
// GetVersionString, returned by the exported function OrtGetApiBase.
typedef struct {
	const void *(*get_api)(uint32_t version);
	const char *(*get_version_string)(void);
} mf_api_base;

typedef const mf_api_base *(*mf_get_api_base_fn)(void);

enum {
	MF_OK = 0,
	MF_DLOPEN_FAILED = 1,
	MF_NOT_ORT = 2,
	MF_API_UNSUPPORTED = 3,
};

typedef struct {
	void *handle;      // open on MF_OK, for mf_close
	int status;
	char version[64];  // ONNX Runtime release string
	char file[4096];   // file the loader actually mapped
	char err[1024];    // dlerror text
} mf_probe_result;

static void mf_copy(char *dst, size_t n, const char *src) {
	if (src == NULL) src = "";
	strncpy(dst, src, n - 1);
	dst[n - 1] = 0;
}

static void mf_probe(const char *path, uint32_t api_version, mf_probe_result *r) {
	memset(r, 0, sizeof *r);
	dlerror();
	void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
	if (h == NULL) {
		mf_copy(r->err, sizeof r->err, dlerror());
		r->status = MF_DLOPEN_FAILED;
		return;
	}
	dlerror();
	void *sym = dlsym(h, "OrtGetApiBase");
	const mf_api_base *base = sym ? ((mf_get_api_base_fn)sym)() : NULL;
	if (base == NULL || base->get_api == NULL || base->get_version_string == NULL) {
		mf_copy(r->err, sizeof r->err, sym ? "OrtGetApiBase returned NULL" : dlerror());
		r->status = MF_NOT_ORT;
		dlclose(h);
		return;
	}
	Dl_info info;
	if (dladdr(sym, &info) != 0) mf_copy(r->file, sizeof r->file, info.dli_fname);
	mf_copy(r->version, sizeof r->version, base->get_version_string());
	if (base->get_api(api_version) == NULL) {
		r->status = MF_API_UNSUPPORTED;
		dlclose(h);
		return;
	}
	r->handle = h;
}

static void mf_close(void *h) {
	if (h != NULL) dlclose(h);
}
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// probed is a library that passed probe; its handle stays open until close.
type probed struct {
	handle   unsafe.Pointer
	path     string // as passed to dlopen
	resolved string // the file the loader mapped
	version  string // ONNX Runtime release
}

func (p *probed) close() { C.mf_close(p.handle) }

// notFoundError is a dlopen failure of a bare library name.
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }

// probe opens path with the dynamic loader and checks, without touching
// onnxruntime_go's global state, that it is ONNX Runtime and serves
// [RequiredAPIVersion]. onnxruntime_go's own check only says "Error setting
// ORT API base: 2" and leaves its version string pointing into the unloaded
// library; probing first gives the operator the version found.
func probe(path string) (*probed, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var r C.mf_probe_result
	C.mf_probe(cpath, C.uint32_t(RequiredAPIVersion), &r)
	errText := C.GoString(&r.err[0])
	version := C.GoString(&r.version[0])
	switch r.status {
	case C.MF_OK:
		resolved := C.GoString(&r.file[0])
		if resolved == "" {
			resolved = path
		}
		return &probed{handle: r.handle, path: path, resolved: resolved, version: version}, nil
	case C.MF_DLOPEN_FAILED:
		if !strings.ContainsRune(path, '/') {
			return nil, &notFoundError{msg: errText}
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrLibraryUnusable, path, errText)
	case C.MF_NOT_ORT:
		return nil, fmt.Errorf("%w: %s is not ONNX Runtime (no usable OrtGetApiBase: %s)", ErrLibraryUnusable, path, errText)
	case C.MF_API_UNSUPPORTED:
		return nil, fmt.Errorf("%w: %s is ONNX Runtime %s, which lacks C API version %d; "+
			"this agent needs ONNX Runtime 1.%d or newer: run \"make deps\", upgrade the modelfleet package, "+
			"or point --ort-lib or %s at a newer %s",
			ErrUnsupportedVersion, path, version, RequiredAPIVersion, RequiredAPIVersion, EnvLibraryPath, LibraryName)
	}
	return nil, fmt.Errorf("%w: %s: probe status %d", ErrLibraryUnusable, path, int(r.status))
}
