// Package runtimetest gives tests of other packages a loaded ONNX Runtime.
//
// Tests find the library through $MODELFLEET_ORT_LIB or, in a source
// checkout, at .deps/lib/libonnxruntime.so.1 in the module root, where
// `make deps` puts it. Without a library the tests are skipped on a
// developer's machine and fail in CI (CI=true), so that a missing install
// step cannot turn the ONNX Runtime tests silently green.
package runtimetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
)

// RepoLibraryPath is where `make deps` installs the ONNX Runtime library,
// relative to the module root.
const RepoLibraryPath = ".deps/lib/" + runtime.LibraryName

// LibraryPath returns the ONNX Runtime library for tests: $MODELFLEET_ORT_LIB
// when set (it must exist), else RepoLibraryPath in the module root found by
// walking up from the working directory. When there is none it skips tb, or
// fails it when the environment variable CI is "true".
func LibraryPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(runtime.EnvLibraryPath); p != "" {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("%s=%s: %v", runtime.EnvLibraryPath, p, err)
		}
		return p
	}
	p, err := findRepoLibrary()
	if err != nil {
		msg := fmt.Sprintf("ONNX Runtime library not available (%v): run \"make deps\" or set %s", err, runtime.EnvLibraryPath)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return p
}

// Init loads the library from [LibraryPath] with [runtime.Init] and returns
// it. The library stays loaded for the rest of the test binary: ONNX Runtime
// is process-global, and other tests may be using it, so Init registers no
// cleanup. A library that exists but does not load fails tb.
func Init(tb testing.TB) runtime.Library {
	tb.Helper()
	lib, err := runtime.Init(runtime.LibraryConfig{Path: LibraryPath(tb)})
	if err != nil {
		tb.Fatalf("load ONNX Runtime: %v", err)
	}
	return lib
}

// findRepoLibrary walks up from the working directory to the module root
// (the first directory with a go.mod) and returns RepoLibraryPath there.
func findRepoLibrary() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, RepoLibraryPath)
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("no %s in module root %s", RepoLibraryPath, dir)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
