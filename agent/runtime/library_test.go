package runtime_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
)

// The tests in this file change the process-wide ONNX Runtime state, so none
// of them is parallel and each ends with runtime.Shutdown.

func shutdownAtEnd(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if err := runtime.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}

// buildSharedLibrary compiles C source into a shared library with the C
// compiler cgo uses, to stand in for libraries we cannot ship.
func buildSharedLibrary(t *testing.T, name, src string) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s) to build a test library: %v", cc, err)
	}
	dir := t.TempDir()
	srcPath := filepath.Join(dir, name+".c")
	if err := os.WriteFile(srcPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, name+".so")
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", lib, srcPath).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cc, err, out)
	}
	return lib
}

// oldORT stands in for ONNX Runtime 1.20.1: it serves C API versions up to
// 20, as the real library does.
const oldORT = `
#include <stdint.h>
#include <stddef.h>
typedef struct {
	const void *(*get_api)(uint32_t version);
	const char *(*get_version_string)(void);
} api_base;
static int api;
static const void *get_api(uint32_t version) { return version >= 1 && version <= 20 ? &api : NULL; }
static const char *get_version_string(void) { return "1.20.1"; }
static const api_base base = { get_api, get_version_string };
const api_base *OrtGetApiBase(void) { return &base; }
`

func TestInitMissingLibrary(t *testing.T) {
	shutdownAtEnd(t)
	missing := filepath.Join(t.TempDir(), runtime.LibraryName)
	_, err := runtime.Init(runtime.LibraryConfig{Path: missing})
	if !errors.Is(err, runtime.ErrLibraryNotFound) {
		t.Fatalf("Init = %v, want ErrLibraryNotFound", err)
	}
	t.Log(err)
	for _, want := range []string{missing, "make deps", runtime.EnvLibraryPath} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, ok := runtime.Loaded(); ok {
		t.Error("Loaded after a failed Init")
	}
}

func TestInitEnvironmentVariable(t *testing.T) {
	shutdownAtEnd(t)
	missing := filepath.Join(t.TempDir(), "from-env.so")
	t.Setenv(runtime.EnvLibraryPath, missing)
	_, err := runtime.Init(runtime.LibraryConfig{})
	if !errors.Is(err, runtime.ErrLibraryNotFound) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Init = %v, want ErrLibraryNotFound naming %s", err, missing)
	}
}

func TestInitNotONNXRuntime(t *testing.T) {
	shutdownAtEnd(t)
	lib := buildSharedLibrary(t, "libnotort", "int modelfleet_not_ort(void) { return 1; }\n")
	_, err := runtime.Init(runtime.LibraryConfig{Path: lib})
	if !errors.Is(err, runtime.ErrLibraryUnusable) || !strings.Contains(err.Error(), "not ONNX Runtime") {
		t.Fatalf("Init = %v, want ErrLibraryUnusable saying it is not ONNX Runtime", err)
	}
	t.Log(err)
}

func TestInitRejectsOldLibrary(t *testing.T) {
	shutdownAtEnd(t)
	lib := buildSharedLibrary(t, "liboldort", oldORT)
	_, err := runtime.Init(runtime.LibraryConfig{Path: lib})
	if !errors.Is(err, runtime.ErrUnsupportedVersion) {
		t.Fatalf("Init = %v, want ErrUnsupportedVersion", err)
	}
	t.Log(err)
	for _, want := range []string{"1.20.1", "1.24 or newer", lib} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestInitRemembersError checks the sync.Once-like contract: the first
// failure stands until Shutdown, then Init starts afresh.
func TestInitRemembersError(t *testing.T) {
	good := runtimetest.LibraryPath(t)
	shutdownAtEnd(t)
	_, first := runtime.Init(runtime.LibraryConfig{Path: filepath.Join(t.TempDir(), "missing.so")})
	if first == nil {
		t.Fatal("Init of a missing library succeeded")
	}
	if _, err := runtime.Init(runtime.LibraryConfig{Path: good}); err != first {
		t.Fatalf("second Init = %v, want the remembered %v", err, first)
	}
	if err := runtime.Shutdown(); err != nil {
		t.Fatalf("Shutdown after failure: %v", err)
	}
	if _, err := runtime.Init(runtime.LibraryConfig{Path: good}); err != nil {
		t.Fatalf("Init after Shutdown: %v", err)
	}
}

func TestInitLoadsLibrary(t *testing.T) {
	path := runtimetest.LibraryPath(t)
	shutdownAtEnd(t)

	// Concurrent first calls: exactly one loads, all see the same result.
	var wg sync.WaitGroup
	libs := make([]runtime.Library, 8)
	errs := make([]error, len(libs))
	for i := range libs {
		wg.Go(func() { libs[i], errs[i] = runtime.Init(runtime.LibraryConfig{Path: path}) })
	}
	wg.Wait()
	for i := range libs {
		if errs[i] != nil || libs[i] != libs[0] {
			t.Fatalf("Init #%d = %+v, %v; want %+v, nil", i, libs[i], errs[i], libs[0])
		}
	}
	lib := libs[0]
	if !regexp.MustCompile(`^1\.\d+\.\d+`).MatchString(lib.Version) {
		t.Errorf("Version = %q, want an ONNX Runtime release like 1.30.0", lib.Version)
	}
	if !filepath.IsAbs(lib.Path) {
		t.Errorf("Path = %q, want absolute", lib.Path)
	}
	t.Logf("loaded ONNX Runtime %s from %s", lib.Version, lib.Path)

	if got, ok := runtime.Loaded(); !ok || got != lib {
		t.Errorf("Loaded = %+v, %v; want %+v, true", got, ok, lib)
	}
	if got, err := runtime.Init(runtime.LibraryConfig{}); err != nil || got != lib {
		t.Errorf("Init with empty path = %+v, %v; want the loaded library", got, err)
	}
	other := buildSharedLibrary(t, "libother", oldORT)
	if _, err := runtime.Init(runtime.LibraryConfig{Path: other}); !errors.Is(err, runtime.ErrAlreadyLoaded) {
		t.Errorf("Init of another library = %v, want ErrAlreadyLoaded", err)
	}

	// Shutdown, then load again: the daemon does not need this, but tests
	// that shut down must leave a usable process behind.
	if err := runtime.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, ok := runtime.Loaded(); ok {
		t.Error("Loaded after Shutdown")
	}
	if err := runtime.Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	again, err := runtime.Init(runtime.LibraryConfig{Path: path})
	if err != nil || again != lib {
		t.Fatalf("Init after Shutdown = %+v, %v; want %+v", again, err, lib)
	}
}

// TestRequiredAPIVersionMatchesDependency keeps RequiredAPIVersion in step
// with the onnxruntime_go in go.mod: its header's ORT_API_VERSION is the
// version it asks the library for.
func TestRequiredAPIVersionMatchesDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Skipf("cannot locate onnxruntime_go source: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	header, err := os.ReadFile(filepath.Join(dir, "onnxruntime_c_api.h"))
	if err != nil {
		t.Skipf("onnxruntime_go header not in the module cache: %v", err)
	}
	m := regexp.MustCompile(`(?m)^#define ORT_API_VERSION (\d+)`).FindSubmatch(header)
	if m == nil {
		t.Fatal("no ORT_API_VERSION in onnxruntime_c_api.h")
	}
	if v, _ := strconv.Atoi(string(m[1])); v != runtime.RequiredAPIVersion {
		t.Errorf("onnxruntime_go asks for C API version %d; RequiredAPIVersion is %d", v, runtime.RequiredAPIVersion)
	}
}
