package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
)

// openWarm opens an example model with a fixed batch of 1 and warms it up,
// as the reconcile loop does before a swap. The caller closes it.
func openWarm(t *testing.T, file string) *runtime.Session {
	t.Helper()
	in, out := windowSpecs(1)
	s, err := runtime.Open(context.Background(), examplePath(file), in, out, runtime.Options{})
	if err != nil {
		t.Fatalf("Open %s: %v", file, err)
	}
	if _, err := s.WarmUp(context.Background(), nil); err != nil {
		s.Close()
		t.Fatalf("WarmUp %s: %v", file, err)
	}
	return s
}

func TestSlotEmpty(t *testing.T) {
	var slot runtime.Slot
	s, version, release, ok := slot.Acquire()
	if ok || s != nil || version != "" || release == nil {
		t.Fatalf("Acquire on an empty slot = %v, %q, release nil %v, %v", s, version, release == nil, ok)
	}
	release() // a no-op, safe to call
	if _, _, err := slot.Run(context.Background(), nil); !errors.Is(err, runtime.ErrNotLoaded) {
		t.Errorf("Run on an empty slot = %v, want ErrNotLoaded", err)
	}
	if v, ok := slot.Version(); ok || v != "" {
		t.Errorf("Version = %q, %v", v, ok)
	}
	if old, v := slot.Swap(nil, ""); old != nil || v != "" {
		t.Errorf("Swap on an empty slot returned %v, %q", old, v)
	}
}

// TestSlotUnload empties a slot, as the idle unloader does.
func TestSlotUnload(t *testing.T) {
	initORT(t)
	var slot runtime.Slot
	s := openWarm(t, models.FileV1)
	slot.Swap(s, "1.0.0")
	if v, ok := slot.Version(); !ok || v != "1.0.0" {
		t.Errorf("Version = %q, %v", v, ok)
	}
	window := make([]float32, mlp.InputSize)
	if _, v, err := slot.Run(context.Background(), windowInput(window, 1)); err != nil || v != "1.0.0" {
		t.Fatalf("Run = %q, %v", v, err)
	}
	old, v := slot.Swap(nil, "")
	if old != s || v != "1.0.0" {
		t.Fatalf("Swap(nil) = %v, %q; want the loaded session", old, v)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := slot.Run(context.Background(), windowInput(window, 1)); !errors.Is(err, runtime.ErrNotLoaded) {
		t.Errorf("Run after unload = %v, want ErrNotLoaded", err)
	}
}

// TestSlotAcquireSurvivesSwap holds a session across its swap and close:
// Close waits for the release, and the held session keeps working.
func TestSlotAcquireSurvivesSwap(t *testing.T) {
	initORT(t)
	var slot runtime.Slot
	v1, v2 := openWarm(t, models.FileV1), openWarm(t, models.FileV2)
	defer v2.Close()
	slot.Swap(v1, "1")

	held, version, release, ok := slot.Acquire()
	if !ok || held.Path() != v1.Path() || version != "1" {
		t.Fatalf("Acquire = %v, %q, %v", held, version, ok)
	}
	old, oldVersion := slot.Swap(v2, "2")
	if old != v1 || oldVersion != "1" {
		t.Fatalf("Swap returned %v, %q; want v1", old, oldVersion)
	}
	closed := make(chan error, 1)
	go func() { closed <- old.Close() }()
	waitFor(t, v1.Closing)

	window := randomWindows(rand.New(rand.NewPCG(4, 4)), 1)
	out, err := held.Run(context.Background(), windowInput(window, 1))
	if err != nil {
		t.Fatalf("Run on the held session while it is closing: %v", err)
	}
	checkScores(t, out, mlp.NewWeights(models.SeedV1), window, 1)
	if _, v, err := slot.Run(context.Background(), windowInput(window, 1)); err != nil || v != "2" {
		t.Errorf("Slot.Run during the close = %q, %v; want version 2", v, err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the session was still acquired", err)
	default:
	}
	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	release() // a second call does nothing
	if n := v1.Holds(); n != 0 {
		t.Errorf("holds after double release = %d, want 0", n)
	}
	if _, err := held.Run(context.Background(), windowInput(window, 1)); !errors.Is(err, runtime.ErrClosed) {
		t.Errorf("Run after release and close = %v, want ErrClosed", err)
	}
}

// TestSlotCloseAcquired closes a session through the handle Acquire
// returned, before releasing it: Close must not wait for its own caller.
func TestSlotCloseAcquired(t *testing.T) {
	initORT(t)
	var slot runtime.Slot
	s := openWarm(t, models.FileV1)
	slot.Swap(s, "1")
	held, _, release, ok := slot.Acquire()
	if !ok {
		t.Fatal("Acquire found no session")
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	release()
	if err := s.Close(); err != nil {
		t.Errorf("Close through the owner after the holder closed it: %v", err)
	}
	if n := s.Holds(); n != 0 {
		t.Errorf("holds = %d, want 0", n)
	}
}

// TestSlotClosedWhileServing closes a session without swapping it out
// first: the slot must report it rather than spin or crash.
func TestSlotClosedWhileServing(t *testing.T) {
	initORT(t)
	var slot runtime.Slot
	s := openWarm(t, models.FileV1)
	slot.Swap(s, "1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok := slot.Acquire(); ok {
		t.Error("Acquire of a closed session succeeded")
	}
	if _, _, err := slot.Run(context.Background(), nil); !errors.Is(err, runtime.ErrClosed) {
		t.Errorf("Slot.Run = %v, want ErrClosed", err)
	}
}

// TestHotSwapUnderLoad swaps v1 → v2 → v1 … while goroutines send
// requests without pause, closing each old session after its swap. No
// request may fail, and each must get the score of the version the slot
// says computed it.
func TestHotSwapUnderLoad(t *testing.T) {
	initORT(t)
	const (
		workers       = 8
		swaps         = 8
		requestsAfter = 300 // requests served between two swaps, at least
	)

	// Windows whose v1 and v2 scores differ clearly, with both references.
	rng := rand.New(rand.NewPCG(42, 42))
	w1, w2 := mlp.NewWeights(models.SeedV1), mlp.NewWeights(models.SeedV2)
	var windows [][]float32
	ref := map[string][]float32{}
	for len(windows) < 32 {
		w := randomWindows(rng, 1)
		r1, r2 := mlp.Reference(w1, w, 1)[0], mlp.Reference(w2, w, 1)[0]
		if math.Abs(float64(r1-r2)) < 1e-3 {
			continue
		}
		windows = append(windows, w)
		ref["1"] = append(ref["1"], r1)
		ref["2"] = append(ref["2"], r2)
	}

	var slot runtime.Slot
	slot.Swap(openWarm(t, models.FileV1), "1")

	var (
		served   atomic.Int64
		byVer    sync.Map // version → *atomic.Int64
		failures atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	for g := range workers {
		wg.Go(func() {
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := i % len(windows)
				input := windowInput(windows[k], 1)
				var (
					out     map[string]runtime.Tensor
					version string
					err     error
				)
				if i%2 == 0 {
					out, version, err = slot.Run(context.Background(), input)
				} else {
					// The long way, as a front end that needs the version
					// before running would do.
					s, v, release, ok := slot.Acquire()
					if !ok {
						fail("worker %d: Acquire found no session", g)
						continue
					}
					out, err = s.Run(context.Background(), input)
					release()
					version = v
				}
				if err != nil {
					fail("worker %d request %d (version %q): %v", g, i, version, err)
					continue
				}
				want, known := ref[version]
				if !known {
					fail("worker %d: unknown version %q", g, version)
					continue
				}
				got := out[mlp.OutputName].Float32()
				if len(got) != 1 || math.Abs(float64(got[0]-want[k])) > tolerance {
					fail("worker %d: version %s scored %v, its reference is %v", g, version, got, want[k])
					continue
				}
				served.Add(1)
				c, _ := byVer.LoadOrStore(version, new(atomic.Int64))
				c.(*atomic.Int64).Add(1)
			}
		})
	}

	busyCloses := 0
	for n := range swaps {
		since := served.Load()
		waitFor(t, func() bool { return served.Load() >= since+requestsAfter || failures.Load() > 0 })
		file, version := models.FileV2, "2"
		if n%2 == 1 {
			file, version = models.FileV1, "1"
		}
		old, oldVersion := slot.Swap(openWarm(t, file), version)
		if oldVersion == version {
			t.Errorf("swap %d: old version %q, new %q", n, oldVersion, version)
		}
		if old.Holds() > 0 {
			busyCloses++
		}
		if err := old.Close(); err != nil {
			t.Errorf("swap %d: Close old: %v", n, err)
		}
	}
	since := served.Load()
	waitFor(t, func() bool { return served.Load() >= since+requestsAfter || failures.Load() > 0 })
	close(stop)
	wg.Wait()
	if last, _ := slot.Swap(nil, ""); last != nil {
		last.Close()
	}

	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests failed during hot swaps", n)
	}
	counts := map[string]int64{}
	byVer.Range(func(k, v any) bool { counts[k.(string)] = v.(*atomic.Int64).Load(); return true })
	if counts["1"] == 0 || counts["2"] == 0 {
		t.Errorf("served per version = %v, want both", counts)
	}
	t.Logf("%d requests, per version %v, %d swaps, %d of them closing a session with requests in flight",
		served.Load(), fmt.Sprint(counts), swaps, busyCloses)
}
