package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// Errors returned by [Open], [Inspect], [Session] and [Slot] methods,
// matched with errors.Is. The error text adds the model file and the
// details: which tensor, which dimension, what ONNX Runtime said.
var (
	// ErrInvalidOptions means [Options] has a value out of range or an
	// unknown provider. Nothing was loaded.
	ErrInvalidOptions = errors.New("invalid runtime options")
	// ErrLoad means ONNX Runtime could not load the model: the file is
	// missing or unreadable, ONNX Runtime refuses it (a bad export, an
	// operator it lacks), or the library is not loaded ([Init]). The text
	// includes ONNX Runtime's own message. For the agent this is a failed
	// install: the previous version keeps serving.
	ErrLoad = errors.New("cannot load model")
	// ErrSpecMismatch means the declared input and output specs are
	// unusable (duplicate names, unsupported element types, bad
	// dimensions) or disagree with the model file: a missing or extra
	// tensor, another element type, rank or dimension. The text names every
	// mismatching tensor. For the agent this is a release error: the
	// manifest and the artifact do not belong together.
	ErrSpecMismatch = errors.New("model does not match its declared tensors")
	// ErrInvalidInput means a request does not fit the model's input specs:
	// a missing or unknown input, the wrong element type, rank or
	// dimension, or a data length that does not match the shape. The text
	// is written for the client that sent the request.
	ErrInvalidInput = errors.New("invalid inference request")
	// ErrRun means ONNX Runtime failed while running a valid request, for
	// example out of memory or a model whose output differs from its spec.
	ErrRun = errors.New("model run failed")
	// ErrClosed means the session was closed. Requests that go through a
	// [Slot] never see it: they are handed the session that replaced it.
	ErrClosed = errors.New("model session closed")
	// ErrNotLoaded means a [Slot] holds no session: the model was never
	// loaded, or was unloaded.
	ErrNotLoaded = errors.New("model not loaded")
)

// Provider names an ONNX Runtime execution provider.
type Provider string

// Execution providers a session can ask for.
const (
	// ProviderCPU is ONNX Runtime's default CPU provider, always available.
	ProviderCPU Provider = "cpu"
	// ProviderCUDA runs the model on an NVIDIA GPU. It needs the CUDA build
	// of ONNX Runtime and the CUDA and cuDNN libraries it was built with;
	// without them [Open] falls back to the CPU and says why.
	ProviderCUDA Provider = "cuda"
)

// Options tune how [Open] loads a model. The zero value is a single-threaded
// CPU session without the CPU memory arena, the right default for a device
// that runs several models and reloads them.
type Options struct {
	// IntraOpThreads is the number of threads one operator may use; 0 means
	// 1. It is always set explicitly: ONNX Runtime's own default is one
	// thread per core per session, which oversubscribes a device running
	// several models (onnxruntime_go issue #2).
	IntraOpThreads int
	// InterOpThreads is the number of operators that may run in parallel;
	// 0 means 1.
	InterOpThreads int
	// Provider is the execution provider to ask for; "" means [ProviderCPU].
	// Check [Session.Provider] for the one in use.
	Provider Provider
	// CUDADeviceID is the GPU to use with [ProviderCUDA]; ignored on the
	// CPU.
	CUDADeviceID int
	// GPUMemLimitBytes caps the memory the CUDA provider's arena may take
	// on the GPU; 0 leaves ONNX Runtime's default (no limit). Ignored on
	// the CPU.
	GPUMemLimitBytes int64
	// EnableCPUArena turns on ONNX Runtime's CPU memory arena, which keeps
	// the memory of past runs, grown in chunks up to the largest run's
	// need, for reuse until the session closes. It is off by default: on a
	// device that holds several models, each arena pins its peak, and with
	// the example models the arena made no measurable difference to run
	// time. It is not what makes memory grow over reloads (that is the C
	// heap keeping freed memory, which [Session.Close] hands back; see
	// TestReloadMemory). Turn it on for large models whose runs allocate
	// much, after measuring.
	EnableCPUArena bool
	// Logger receives load, fallback and close events, with the keys
	// "path" and "provider"; give it the model's name and version
	// (logger.With("model", …, "version", …)). Nil discards.
	Logger *slog.Logger
}

// normalize fills defaults and checks ranges.
func (o Options) normalize() (Options, error) {
	var problems []string
	if o.IntraOpThreads < 0 {
		problems = append(problems, fmt.Sprintf("IntraOpThreads is %d, must be 0 (default 1) or more", o.IntraOpThreads))
	}
	if o.InterOpThreads < 0 {
		problems = append(problems, fmt.Sprintf("InterOpThreads is %d, must be 0 (default 1) or more", o.InterOpThreads))
	}
	if o.GPUMemLimitBytes < 0 {
		problems = append(problems, fmt.Sprintf("GPUMemLimitBytes is %d, must be 0 (no limit) or more", o.GPUMemLimitBytes))
	}
	if o.CUDADeviceID < 0 {
		problems = append(problems, fmt.Sprintf("CUDADeviceID is %d, must be 0 or more", o.CUDADeviceID))
	}
	switch o.Provider {
	case "":
		o.Provider = ProviderCPU
	case ProviderCPU, ProviderCUDA:
	default:
		problems = append(problems, fmt.Sprintf("unknown provider %q (want %q or %q)", o.Provider, ProviderCPU, ProviderCUDA))
	}
	if len(problems) > 0 {
		return o, fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(problems, "; "))
	}
	o.IntraOpThreads = max(o.IntraOpThreads, 1)
	o.InterOpThreads = max(o.InterOpThreads, 1)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Session is one model loaded in ONNX Runtime, ready to run requests that
// match its input specs. It is safe for concurrent use: any number of
// goroutines may call [Session.Run] at once (it uses onnxruntime_go's
// DynamicAdvancedSession, which allows that; issue #79), and [Session.Close]
// waits for them.
//
// [Slot.Acquire] hands out further Session values for the same model, each
// holding it open until released; all of them share one ONNX Runtime
// session, and closing any closes it.
type Session struct {
	m     *model
	lease *lease // set on the handles Slot.Acquire returns
}

// lease is a Slot acquisition: while not released, it counts as a hold on
// the model, so Close waits and the holder's Runs need no hold of their own.
type lease struct {
	released atomic.Bool
}

// model is the ONNX Runtime session and what is needed to run it, shared by
// every Session handle of it.
type model struct {
	path         string
	sess         *ort.DynamicAdvancedSession
	inputs       []TensorSpec
	outputs      []TensorSpec
	static       []bool // output i has a fixed shape: Run allocates it in Go and ORT writes there
	pool         pool   // reusable tensors for runs with the static input shapes
	provider     Provider
	providerNote string
	logger       *slog.Logger

	// holds counts the Runs in progress and the Slot acquisitions not yet
	// released; closingBit is set once Close has begun, after which no hold
	// is granted.
	holds   atomic.Int64
	drained chan struct{} // closed by the last hold to leave after closingBit was set
	done    chan struct{} // closed when Close has destroyed the session
}

// closingBit marks model.holds once Close has begun; the low bits count.
const closingBit = int64(1) << 62

// Open loads the ONNX model at path and checks it against the declared
// inputs and outputs, which must describe every input of the model and the
// outputs the caller wants (a subset of the model's). ONNX Runtime must be
// loaded ([Init]).
//
// Open reads the model twice: once to list its real inputs and outputs,
// which onnxruntime_go offers only as a separate load, and once for the
// session. ctx is checked before each; a load in progress cannot be
// interrupted.
//
// With [ProviderCUDA], a failure to set up CUDA (no CUDA build, no driver,
// no GPU memory) is not an error: the session runs on the CPU, and
// [Session.Provider] and [Session.ProviderNote] say so.
//
// Errors match [ErrInvalidOptions], [ErrSpecMismatch], [ErrLoad], or ctx's
// error.
func Open(ctx context.Context, path string, inputs, outputs []TensorSpec, opts Options) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open model %s: %w", path, err)
	}
	opts, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	if problems := append(checkSpecs("input", inputs), checkSpecs("output", outputs)...); len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s: %s", ErrSpecMismatch, path, strings.Join(problems, "; "))
	}
	modelIn, modelOut, err := Inspect(ctx, path)
	if err != nil {
		return nil, err
	}
	if problems := append(matchSpecs("input", inputs, modelIn), matchSpecs("output", outputs, modelOut)...); len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s: %s", ErrSpecMismatch, path, strings.Join(problems, "; "))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open model %s: %w", path, err)
	}

	m := &model{
		path:     path,
		inputs:   cloneSpecs(inputs),
		outputs:  cloneSpecs(outputs),
		static:   make([]bool, len(outputs)),
		provider: ProviderCPU,
		drained:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	for i, o := range m.outputs {
		m.static[i] = !o.hasDynamic()
	}
	inNames, outNames := specNames(m.inputs), specNames(m.outputs)
	start := time.Now()
	if opts.Provider == ProviderCUDA {
		m.sess, err = newORTSession(path, inNames, outNames, opts, true)
		if err == nil {
			m.provider = ProviderCUDA
		} else {
			m.providerNote = "asked for CUDA, running on CPU: " + err.Error()
			opts.Logger.Warn("CUDA unavailable, falling back to CPU", "path", path, "reason", err.Error())
		}
	}
	if m.sess == nil {
		if m.sess, err = newORTSession(path, inNames, outNames, opts, false); err != nil {
			return nil, fmt.Errorf("%w %s: %v", ErrLoad, path, err)
		}
	}
	m.logger = opts.Logger.With("path", path, "provider", string(m.provider))
	m.logger.Info("model loaded", "load_ms", time.Since(start).Milliseconds(),
		"intra_op_threads", opts.IntraOpThreads, "inter_op_threads", opts.InterOpThreads, "cpu_arena", opts.EnableCPUArena)
	return &Session{m: m}, nil
}

// newORTSession creates the ONNX Runtime session, with the CUDA provider
// when cuda is set.
func newORTSession(path string, inNames, outNames []string, opts Options, cuda bool) (*ort.DynamicAdvancedSession, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, notLoadedHint(err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
		return nil, fmt.Errorf("set intra-op threads: %w", err)
	}
	if err := so.SetInterOpNumThreads(opts.InterOpThreads); err != nil {
		return nil, fmt.Errorf("set inter-op threads: %w", err)
	}
	if err := so.SetCpuMemArena(opts.EnableCPUArena); err != nil {
		return nil, fmt.Errorf("set CPU memory arena: %w", err)
	}
	if cuda {
		co, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return nil, fmt.Errorf("CUDA provider options: %w", err)
		}
		defer co.Destroy()
		settings := map[string]string{"device_id": strconv.Itoa(opts.CUDADeviceID)}
		if opts.GPUMemLimitBytes > 0 {
			settings["gpu_mem_limit"] = strconv.FormatInt(opts.GPUMemLimitBytes, 10)
		}
		if err := co.Update(settings); err != nil {
			return nil, fmt.Errorf("CUDA provider options: %w", err)
		}
		if err := so.AppendExecutionProviderCUDA(co); err != nil {
			return nil, fmt.Errorf("enable CUDA provider: %w", err)
		}
	}
	sess, err := ort.NewDynamicAdvancedSession(path, inNames, outNames, so)
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// Inspect returns the inputs and outputs of the ONNX model at path as ONNX
// Runtime sees them, with [Dynamic] for sizes chosen per request. Tensors of
// unsupported element types keep ONNX's name for the type ("float16");
// values that are not tensors get their kind ("sequence", "map"). Release
// tooling can use it to write a manifest's specs; [Open] uses it to check
// them. ctx is checked before the load, which cannot be interrupted.
// Errors match [ErrLoad] or ctx's error.
func Inspect(ctx context.Context, path string) (inputs, outputs []TensorSpec, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("inspect model %s: %w", path, err)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrLoad, err)
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, nil, fmt.Errorf("%w %s: %v", ErrLoad, path, notLoadedHint(err))
	}
	defer so.Destroy()
	// A throw-away session: one thread, no arena, no graph optimisation, as
	// cheap as ONNX Runtime allows. Graph inputs, outputs and shape
	// inference errors do not depend on optimisation.
	for _, set := range []func() error{
		func() error { return so.SetIntraOpNumThreads(1) },
		func() error { return so.SetInterOpNumThreads(1) },
		func() error { return so.SetCpuMemArena(false) },
		func() error { return so.SetGraphOptimizationLevel(ort.GraphOptimizationLevelDisableAll) },
	} {
		if err := set(); err != nil {
			return nil, nil, fmt.Errorf("%w %s: session options: %v", ErrLoad, path, err)
		}
	}
	in, out, err := ort.GetInputOutputInfoWithOptions(path, so)
	if err != nil {
		return nil, nil, fmt.Errorf("%w %s: %v", ErrLoad, path, err)
	}
	for _, i := range in {
		inputs = append(inputs, specFromORT(i))
	}
	for _, o := range out {
		outputs = append(outputs, specFromORT(o))
	}
	return inputs, outputs, nil
}

// notLoadedHint replaces onnxruntime_go's "not initialized" error with what
// the caller must do.
func notLoadedHint(err error) error {
	if errors.Is(err, ort.NotInitializedError) {
		return fmt.Errorf("the ONNX Runtime library is not loaded (runtime.Init was not called, failed, or was undone by Shutdown): %w", err)
	}
	return err
}

// Path returns the model file the session was loaded from.
func (s *Session) Path() string { return s.m.path }

// Inputs returns a copy of the input specs requests are checked against.
func (s *Session) Inputs() []TensorSpec { return cloneSpecs(s.m.inputs) }

// Outputs returns a copy of the output specs, in the order given to [Open].
func (s *Session) Outputs() []TensorSpec { return cloneSpecs(s.m.outputs) }

// Provider returns the execution provider the session was created with.
// It is [ProviderCPU] when CUDA was asked for but could not be set up; see
// [Session.ProviderNote].
//
// With [ProviderCUDA], ONNX Runtime may still place single operators that
// CUDA lacks on the CPU, and onnxruntime_go offers no way to list the
// placement; GPU utilisation (NVML) is the confirmation.
func (s *Session) Provider() Provider { return s.m.provider }

// ProviderNote explains a difference between the provider asked for and
// the one in use ("asked for CUDA, running on CPU: …"), for the agent to
// report as a warning. It is empty when the session got what it asked for.
func (s *Session) ProviderNote() string { return s.m.providerNote }

// Run checks inputs against the input specs, runs the model, and returns
// every declared output by name. The returned tensors own their data.
// Inputs are handed to ONNX Runtime without copying and must not change
// until Run returns.
//
// ctx is checked before the run. If it can be cancelled, a cancellation
// during the run asks ONNX Runtime to stop, which it does between two
// operators: a single long operator runs to its end. Run then returns ctx's
// error.
//
// Errors match [ErrInvalidInput] (nothing ran), [ErrClosed], [ErrRun], or
// ctx's error. Run never panics on bad input.
func (s *Session) Run(ctx context.Context, inputs map[string]Tensor) (map[string]Tensor, error) {
	if s.lease != nil && !s.lease.released.Load() {
		return s.m.run(ctx, inputs) // the lease holds the model
	}
	if !s.m.hold() {
		return nil, fmt.Errorf("%w: %s", ErrClosed, s.m.path)
	}
	defer s.m.release()
	return s.m.run(ctx, inputs)
}

// run is Run for a caller that holds the model.
func (s *model) run(ctx context.Context, inputs map[string]Tensor) (map[string]Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("run %s: %w", s.path, err)
	}
	if problems := validateInputs(s.inputs, inputs); len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalidInput, strings.Join(problems, "; "))
	}

	var (
		ins, outs []ort.Value
		ro        *ort.RunOptions
		set       = s.take(inputs)
	)
	if set != nil {
		defer s.put(set)
		ins, outs = set.ins, set.outs
	} else {
		ins = make([]ort.Value, len(s.inputs))
		outs = make([]ort.Value, len(s.outputs))
		defer destroyAll(outs)
		defer destroyAll(ins)
		for i, spec := range s.inputs {
			v, err := inputs[spec.Name].toORT()
			if err != nil {
				// Validation makes this unreachable short of an ONNX
				// Runtime allocation failure.
				return nil, fmt.Errorf("%w: %s: input %q: %v", ErrRun, s.path, spec.Name, err)
			}
			ins[i] = v
		}
		for i, spec := range s.outputs {
			if !s.static[i] {
				continue // ONNX Runtime allocates it once the size is known
			}
			z, err := Zeros(spec.ElemType, spec.Shape)
			if err == nil {
				outs[i], err = z.toORT()
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %s: output %q: %v", ErrRun, s.path, spec.Name, err)
			}
		}
	}

	if ctx.Done() != nil {
		if set != nil && set.ro != nil {
			ro = set.ro
		} else {
			var err error
			if ro, err = ort.NewRunOptions(); err != nil {
				return nil, fmt.Errorf("%w: %s: run options: %v", ErrRun, s.path, err)
			}
		}
		stop := terminateOnCancel(ctx, ro)
		defer func() {
			// Options that may have been told to terminate are not reused.
			if terminated := stop(); set != nil && !terminated {
				set.ro = ro
			} else {
				if set != nil {
					set.ro = nil
				}
				_ = ro.Destroy()
			}
		}()
	}
	if err := s.sess.RunWithOptions(ins, outs, ro); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("run %s: stopped: %w", s.path, ctxErr)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrRun, s.path, err)
	}

	result := make(map[string]Tensor, len(outs))
	for i, v := range outs {
		t, err := fromORT(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: output %q: %v", ErrRun, s.path, s.outputs[i].Name, err)
		}
		if set != nil && s.static[i] {
			t = t.clone() // the set's memory is reused by the next run
		}
		result[s.outputs[i].Name] = t
	}
	return result, nil
}

// terminateOnCancel sets ro's terminate flag when ctx is cancelled, and
// returns the function that stops watching and reports whether the flag
// was set; the flag is never set after that function has begun.
func terminateOnCancel(ctx context.Context, ro *ort.RunOptions) (stop func() (terminated bool)) {
	var mu sync.Mutex // guards finished, terminated and the use of ro by the callback
	finished, terminated := false, false
	stopWatching := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			_ = ro.Terminate() // fails only on destroyed options
			terminated = true
		}
	})
	return func() bool {
		stopWatching()
		mu.Lock()
		defer mu.Unlock()
		finished = true
		return terminated
	}
}

// WarmUp runs the model once so that the first real request does not pay
// for ONNX Runtime's lazy initialisation (allocations, kernel selection,
// CUDA context), and returns how long that run took. With nil input it
// runs zeros of every input's declared shape, dynamic dimensions set to 1.
// Errors are those of [Session.Run]; the agent treats any as a failed
// install.
func (s *Session) WarmUp(ctx context.Context, input map[string]Tensor) (time.Duration, error) {
	if input == nil {
		input = make(map[string]Tensor, len(s.m.inputs))
		for _, spec := range s.m.inputs {
			shape := make([]int64, len(spec.Shape))
			for i, d := range spec.Shape {
				shape[i] = max(d, 1)
			}
			z, err := Zeros(spec.ElemType, shape)
			if err != nil {
				return 0, fmt.Errorf("warm up %s: %w", s.m.path, err)
			}
			input[spec.Name] = z
		}
	}
	start := time.Now()
	if _, err := s.Run(ctx, input); err != nil {
		return 0, fmt.Errorf("warm up %s: %w", s.m.path, err)
	}
	d := time.Since(start)
	s.m.logger.Debug("model warmed up", "warmup_ms", float64(d.Microseconds())/1000)
	return d, nil
}

// Close stops new Runs (they get [ErrClosed]), waits for the Runs in
// progress and the [Slot] acquisitions not yet released, and then destroys
// the ONNX Runtime session and returns the freed memory to the operating
// system (glibc keeps it otherwise, and a daemon that reloads models grows
// with every reload). It is safe to call more than once and from several
// goroutines; every call returns once the session is destroyed.
func (s *Session) Close() error {
	if s.lease != nil {
		s.releaseLease() // or Close would wait for the caller itself
	}
	return s.m.close()
}

// releaseLease ends the Slot acquisition of a leased handle; later calls
// do nothing.
func (s *Session) releaseLease() {
	if s.lease.released.CompareAndSwap(false, true) {
		s.m.release()
	}
}

// close is Session.Close.
func (s *model) close() error {
	for {
		n := s.holds.Load()
		if n&closingBit != 0 {
			<-s.done // another Close is doing the work
			return nil
		}
		if s.holds.CompareAndSwap(n, n|closingBit) {
			if n != 0 {
				<-s.drained
			}
			break
		}
	}
	s.pool.drain()
	err := s.sess.Destroy()
	if trimOnClose.Load() {
		releaseFreedMemory()
	}
	close(s.done)
	s.logger.Debug("model session closed")
	if err != nil {
		return fmt.Errorf("close model session %s: %w", s.path, err)
	}
	return nil
}

// hold registers a user of the session, and reports false once Close has
// begun.
func (s *model) hold() bool {
	for {
		n := s.holds.Load()
		if n&closingBit != 0 {
			return false
		}
		if s.holds.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release ends a hold. The last one to leave after Close began lets Close
// proceed.
func (s *model) release() {
	if s.holds.Add(-1) == closingBit {
		close(s.drained)
	}
}

// cloneSpecs deep-copies specs, so callers cannot change a session's.
func cloneSpecs(specs []TensorSpec) []TensorSpec {
	out := make([]TensorSpec, len(specs))
	for i, s := range specs {
		out[i] = TensorSpec{Name: s.Name, ElemType: s.ElemType, Shape: append([]int64(nil), s.Shape...)}
	}
	return out
}

// specNames lists the names of specs, in order.
func specNames(specs []TensorSpec) []string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return names
}
