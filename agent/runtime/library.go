package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// EnvLibraryPath is the environment variable naming the ONNX Runtime shared
// library when no path is configured explicitly.
const EnvLibraryPath = "MODELFLEET_ORT_LIB"

// LibraryName is the file name (soname) of the ONNX Runtime shared library.
const LibraryName = "libonnxruntime.so.1"

// RequiredAPIVersion is the ONNX Runtime C API version that onnxruntime_go
// v1.27.0 was compiled against (ORT_API_VERSION in its onnxruntime_c_api.h).
// A library serves every API version up to its own, and the API version of
// ONNX Runtime 1.N is N, so this build works with ONNX Runtime 1.24 or newer.
// A test checks this constant against the header in the module cache.
const RequiredAPIVersion = 24

// Errors returned by [Init], matched with errors.Is. The error text adds the
// paths tried and what the operator can do about it.
var (
	// ErrLibraryNotFound means no ONNX Runtime library exists at the
	// configured path, or none was found in the default locations.
	ErrLibraryNotFound = errors.New("ONNX Runtime library not found")
	// ErrLibraryUnusable means the file exists but cannot be loaded as ONNX
	// Runtime: wrong architecture, missing dependencies, or another library.
	ErrLibraryUnusable = errors.New("ONNX Runtime library cannot be loaded")
	// ErrUnsupportedVersion means the library is ONNX Runtime, but too old
	// for this build (it lacks C API version [RequiredAPIVersion]).
	ErrUnsupportedVersion = errors.New("ONNX Runtime library version not supported")
	// ErrAlreadyLoaded means a library is already loaded in this process
	// and a later [Init] asked for a different one.
	ErrAlreadyLoaded = errors.New("another ONNX Runtime library is already loaded")
)

// DefaultLibraryPaths returns the locations [Init] tries, in order, when
// neither [LibraryConfig.Path] nor [EnvLibraryPath] is set. The last entry is
// the bare library name, which the dynamic loader looks up in the system
// library path (ld.so.conf, LD_LIBRARY_PATH).
func DefaultLibraryPaths() []string {
	return []string{
		"/usr/lib/modelfleet/" + LibraryName, // where the modelfleet .deb/.rpm installs it
		"/usr/local/lib/" + LibraryName,      // a manual install
		LibraryName,
	}
}

// LibraryConfig says where to find the ONNX Runtime library.
type LibraryConfig struct {
	// Path is the shared library to load, typically from the agent's
	// --ort-lib flag or config file. When empty, $MODELFLEET_ORT_LIB is used,
	// and when that is empty too, [DefaultLibraryPaths]. An explicit path
	// (from either source) is the only one tried: a missing file is an error,
	// not a reason to load some other library.
	Path string
	// Logger receives one line when the library is loaded. Nil discards.
	Logger *slog.Logger
}

// Library describes the loaded ONNX Runtime library.
type Library struct {
	// Path is the file the library was loaded from, resolved by the dynamic
	// loader when the configured name had no directory.
	Path string
	// Version is the ONNX Runtime release, e.g. "1.30.0".
	Version string
}

// candidate is one place to look for the library, with where it came from
// for error messages.
type candidate struct {
	path   string
	source string
}

// candidates lists the paths Init tries for cfgPath, in order.
func candidates(cfgPath string, getenv func(string) string) []candidate {
	if cfgPath != "" {
		return []candidate{{cfgPath, "from --ort-lib"}}
	}
	if p := getenv(EnvLibraryPath); p != "" {
		return []candidate{{p, "from " + EnvLibraryPath}}
	}
	var cs []candidate
	for _, p := range DefaultLibraryPaths() {
		cs = append(cs, candidate{p, "default location"})
	}
	return cs
}

// state is the process-wide outcome of Init.
var state struct {
	mu        sync.Mutex // guards all following fields
	done      bool       // Init ran (and Shutdown did not reset it)
	requested string     // LibraryConfig.Path of the first Init
	lib       Library    // valid when done and err == nil
	err       error      // the remembered failure of the first Init
}

// Init loads the ONNX Runtime shared library and creates the process-wide
// ONNX Runtime environment. It is safe to call from several goroutines and
// several times: the first call does the work and later calls return its
// result, including its error, until [Shutdown]. A later call whose
// cfg.Path names a different library than the loaded one returns
// [ErrAlreadyLoaded] (an empty cfg.Path accepts whatever is loaded).
//
// Errors match [ErrLibraryNotFound], [ErrLibraryUnusable],
// [ErrUnsupportedVersion] or [ErrAlreadyLoaded]; their text names the paths
// tried and the remedy.
func Init(cfg LibraryConfig) (Library, error) {
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.done {
		if state.err == nil && cfg.Path != "" && cfg.Path != state.requested && absPath(cfg.Path) != state.lib.Path {
			return Library{}, fmt.Errorf("%w: loaded %s, asked for %s; the library can be chosen only once per process",
				ErrAlreadyLoaded, state.lib.Path, cfg.Path)
		}
		return state.lib, state.err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lib, err := load(candidates(cfg.Path, os.Getenv))
	state.done, state.requested, state.lib, state.err = true, cfg.Path, lib, err
	if err != nil {
		return Library{}, err
	}
	logger.Info("ONNX Runtime loaded", "path", lib.Path, "ort_version", lib.Version)
	return lib, nil
}

// Loaded reports the loaded library, and false when [Init] has not
// succeeded (or [Shutdown] ran since). It is safe for concurrent use.
func Loaded() (Library, bool) {
	state.mu.Lock()
	defer state.mu.Unlock()
	if !state.done || state.err != nil {
		return Library{}, false
	}
	return state.lib, true
}

// Shutdown destroys the ONNX Runtime environment and unloads the library,
// for daemon exit and tests. Every session must be destroyed before. After
// Shutdown, [Init] starts afresh (and may pick another library). Shutdown
// without a successful Init does nothing but forget a remembered error. It
// is safe for concurrent use.
func Shutdown() error {
	state.mu.Lock()
	defer state.mu.Unlock()
	if !state.done {
		return nil
	}
	failed := state.err != nil
	state.done, state.requested, state.lib, state.err = false, "", Library{}, nil
	if failed {
		return nil
	}
	if err := ort.DestroyEnvironment(); err != nil {
		return fmt.Errorf("shut down ONNX Runtime: %w", err)
	}
	return nil
}

// remedy ends every "not found" error: what the operator can do.
const remedy = `run "make deps" in a source checkout, install the modelfleet package, ` +
	`or point --ort-lib or ` + EnvLibraryPath + ` at ` + LibraryName + ` (ONNX Runtime 1.24 or newer)`

// load tries the candidates in order. A candidate that does not exist is
// skipped; the first one that exists is loaded, and its failure is final:
// an operator with a broken or outdated install wants to hear about it, not
// to have another library picked silently.
func load(cs []candidate) (Library, error) {
	var tried []string
	for _, c := range cs {
		path := c.path
		if strings.ContainsRune(path, '/') {
			path = absPath(path)
			if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
				tried = append(tried, fmt.Sprintf("%s (%s): no such file", path, c.source))
				continue
			}
		}
		p, err := probe(path)
		if err != nil {
			var nf *notFoundError
			if errors.As(err, &nf) {
				// Only a bare name gets here: the loader searched the system
				// library path and found nothing.
				tried = append(tried, fmt.Sprintf("%s (%s): %s", path, c.source, nf.msg))
				continue
			}
			return Library{}, err
		}
		lib, err := initEnvironment(p)
		p.close()
		return lib, err
	}
	return Library{}, fmt.Errorf("%w (tried %s): %s", ErrLibraryNotFound, strings.Join(tried, "; "), remedy)
}

// initEnvironment hands the probed library to onnxruntime_go. The probe
// keeps its own handle open meanwhile, so the library is mapped only once.
func initEnvironment(p *probed) (Library, error) {
	ort.SetSharedLibraryPath(p.path)
	if err := ort.InitializeEnvironment(); err != nil {
		return Library{}, fmt.Errorf("%w: initialise ONNX Runtime %s from %s: %v",
			ErrLibraryUnusable, p.version, p.path, err)
	}
	return Library{Path: p.resolved, Version: ort.GetVersion()}, nil
}

// absPath makes a path with a directory absolute, so that messages and
// [Library.Path] do not depend on the working directory. Bare names are left
// to the dynamic loader.
func absPath(p string) string {
	if !strings.ContainsRune(p, '/') {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
