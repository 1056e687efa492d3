package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/state"
	"github.com/modelfleet/modelfleet/internal/report"
)

// served is one model name as the agent serves it: the serving pointer, the
// version that should serve, the concurrency limit, and what scale-to-zero
// needs (last use, lazy reload).
type served struct {
	name    string
	slot    runtime.Slot
	limiter *runtime.Limiter
	idleTTL time.Duration // 0: never unload

	mu       sync.Mutex // guards all following fields
	install  *state.Install
	inputs   []runtime.TensorSpec
	outputs  []runtime.TensorSpec
	provider string
	lastUsed time.Time
	loaded   bool

	loadMu sync.Mutex // serialises loads and unloads of this model
}

func (s *served) touch() {
	s.mu.Lock()
	s.lastUsed = time.Now()
	s.mu.Unlock()
}

// servedFor returns the served entry for name, creating it.
func (a *Agent) servedFor(name string) *served {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.served[name]
	if !ok {
		s = &served{
			name:     name,
			limiter:  runtime.NewLimiter(a.cfg.Serving.Concurrency, a.cfg.Serving.QueueLength),
			idleTTL:  a.cfg.idleTTL(name),
			lastUsed: time.Now(),
		}
		a.served[name] = s
	}
	return s
}

func (a *Agent) lookup(name string) *served {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.served[name]
}

// activate loads an installed version and swaps it in: new requests go to
// it at once, in-flight ones finish on the old session, which is then
// closed.
func (a *Agent) activate(ctx context.Context, name string, in *state.Install) error {
	if model, ok := shadowOf(name); ok {
		return a.activateShadow(ctx, model, in)
	}
	s := a.servedFor(name)
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	sess, err := a.open(ctx, in)
	if err != nil {
		return err
	}
	if note := sess.ProviderNote(); note != "" {
		// ONNX Runtime can fall back from CUDA to CPU silently: the hub must see it.
		// Published in the background: loadMu is held here.
		go a.event(context.WithoutCancel(ctx), report.Event{Type: report.EventWarning, Model: name, Version: in.Version,
			Reason: "execution provider: " + note})
	}
	old, _ := s.slot.Swap(sess, in.Version)
	s.mu.Lock()
	s.install, s.provider, s.loaded, s.lastUsed = in, string(sess.Provider()), true, time.Now()
	s.inputs, s.outputs = sess.Inputs(), sess.Outputs()
	s.mu.Unlock()
	if old != nil {
		old.Close() // waits for in-flight requests on the old version
	}
	return nil
}

// unload removes a model from serving entirely.
func (a *Agent) unload(name string) {
	if model, ok := shadowOf(name); ok {
		a.unloadShadow(model)
		return
	}
	a.mu.Lock()
	s := a.served[name]
	delete(a.served, name)
	a.mu.Unlock()
	if s == nil {
		return
	}
	a.rec.Forget(name)
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if old, _ := s.slot.Swap(nil, ""); old != nil {
		old.Close()
	}
}

func (a *Agent) closeModels() {
	a.mu.Lock()
	names := slices.Collect(maps.Keys(a.served))
	a.mu.Unlock()
	for _, n := range names {
		a.unload(n)
	}
	a.mu.Lock()
	shadows := slices.Collect(maps.Keys(a.shadows))
	a.mu.Unlock()
	for _, n := range shadows {
		a.unloadShadow(n)
	}
}

// wake reloads a model that scale-to-zero unloaded (a cold start).
func (a *Agent) wake(ctx context.Context, s *served) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if _, ok := s.slot.Version(); ok {
		return nil // another request reloaded it
	}
	s.mu.Lock()
	in := s.install
	s.mu.Unlock()
	if in == nil {
		return fmt.Errorf("%w: %s", runtime.ErrNotLoaded, s.name)
	}
	start := time.Now()
	sess, err := a.open(ctx, in)
	if err != nil {
		return fmt.Errorf("reload idle model %s: %w", s.name, err)
	}
	s.slot.Swap(sess, in.Version)
	s.mu.Lock()
	s.loaded, s.lastUsed = true, time.Now()
	s.mu.Unlock()
	a.log.Info("reloaded idle model", "model", s.name, "version", in.Version, "cold_start", time.Since(start).String())
	a.coldStart(s.name, in.Version, time.Since(start))
	go a.publishState(context.WithoutCancel(ctx))
	return nil
}

// unloadIdle releases the sessions of models idle longer than their TTL.
func (a *Agent) unloadIdle(now time.Time) {
	a.mu.Lock()
	var idle []*served
	for _, s := range a.served {
		s.mu.Lock()
		if s.idleTTL > 0 && s.loaded && now.Sub(s.lastUsed) > s.idleTTL {
			idle = append(idle, s)
		}
		s.mu.Unlock()
	}
	a.mu.Unlock()
	for _, s := range idle {
		s.loadMu.Lock()
		s.mu.Lock()
		still := s.loaded && now.Sub(s.lastUsed) > s.idleTTL
		if still {
			s.loaded = false
		}
		s.mu.Unlock()
		if still {
			if old, version := s.slot.Swap(nil, ""); old != nil {
				old.Close()
				a.log.Info("unloaded idle model", "model", s.name, "version", version, "idle_ttl", s.idleTTL.String())
			}
		}
		s.loadMu.Unlock()
	}
	if len(idle) > 0 {
		a.publishState(context.Background())
	}
}

// janitor runs unloadIdle until ctx ends.
func (a *Agent) janitor(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			a.unloadIdle(now)
		}
	}
}

// Infer runs one request on the serving version of model and returns the
// outputs and the version that answered. A model unloaded for idleness is
// reloaded first. Errors wrap runtime.ErrNotLoaded (no such model),
// runtime.ErrBusy (concurrency limit and queue full),
// runtime.ErrInvalidInput or runtime.ErrRun.
func (a *Agent) Infer(ctx context.Context, model string, inputs map[string]runtime.Tensor) (out map[string]runtime.Tensor, version string, err error) {
	start := time.Now()
	var compute time.Duration
	provider := ""
	defer func() {
		// Aggregates only: counts, latency and compute time, never data.
		a.rec.Observe(model, version, provider, time.Since(start), compute, err)
	}()
	s := a.lookup(model)
	if s == nil {
		return nil, "", fmt.Errorf("%w: %s", runtime.ErrNotLoaded, model)
	}
	release, err := s.limiter.Acquire(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", model, err)
	}
	defer release()
	s.touch()
	sess, version, done, ok := s.slot.Acquire()
	if !ok {
		if err := a.wake(ctx, s); err != nil {
			return nil, "", err
		}
		if sess, version, done, ok = s.slot.Acquire(); !ok {
			return nil, "", fmt.Errorf("%w: %s", runtime.ErrNotLoaded, model)
		}
	}
	defer done()
	provider = string(sess.Provider())
	runStart := time.Now()
	out, err = sess.Run(ctx, inputs)
	compute = time.Since(runStart)
	if err == nil {
		a.maybeShadow(model, inputs, out)
	}
	return out, version, err
}
