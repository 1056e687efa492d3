package runtime_test

import (
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
)

// bareSession is the baseline: onnxruntime_go used directly, with tensors
// made once, the same thread and arena settings as runtime.Open's defaults,
// and no validation.
func bareSession(tb testing.TB, path string, window []float32) (run func() error) {
	tb.Helper()
	so, err := ort.NewSessionOptions()
	if err != nil {
		tb.Fatal(err)
	}
	defer so.Destroy()
	for _, err := range []error{so.SetIntraOpNumThreads(1), so.SetInterOpNumThreads(1), so.SetCpuMemArena(false)} {
		if err != nil {
			tb.Fatal(err)
		}
	}
	sess, err := ort.NewDynamicAdvancedSession(path, []string{mlp.InputName}, []string{mlp.OutputName}, so)
	if err != nil {
		tb.Fatal(err)
	}
	in, err := ort.NewTensor(ort.NewShape(1, mlp.InputSize), window)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 1))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		in.Destroy()
		out.Destroy()
		sess.Destroy()
	})
	ins, outs := []ort.Value{in}, []ort.Value{out}
	return func() error { return sess.Run(ins, outs) }
}

// BenchmarkRunAgentVsBare measures what Session.Run adds (validation,
// tensor wrapping, output copies) over a bare onnxruntime_go run of v1.
// "alternating" interleaves rounds of both in one benchmark and reports
// agent/bare (and agent-ctx/bare, with a cancellable context, which adds
// run options and a cancellation hook) as the figure to watch: a ratio
// measured in the same run, not an absolute time.
func BenchmarkRunAgentVsBare(b *testing.B) {
	initORT(b)
	window := randomWindows(rand.New(rand.NewPCG(1, 2)), 1)
	bare := bareSession(b, examplePath(models.FileV1), window)
	s := mustOpen(b, models.FileV1)
	input := windowInput(window, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent := func() error { _, err := s.Run(context.Background(), input); return err }
	agentCtx := func() error { _, err := s.Run(ctx, input); return err }

	loop := func(run func() error) func(*testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := run(); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("bare", loop(bare))
	b.Run("agent", loop(agent))
	b.Run("agent-ctx", loop(agentCtx))
	b.Run("alternating", func(b *testing.B) {
		const round = 64
		runs := []func() error{bare, agent, agentCtx}
		var spent [3]time.Duration
		n := 0
		for b.Loop() {
			// Rotate who goes first, so that no variant always runs on a
			// cache warmed by another.
			for j := range runs {
				k := (j + n/round) % len(runs)
				start := time.Now()
				for range round {
					if err := runs[k](); err != nil {
						b.Fatal(err)
					}
				}
				spent[k] += time.Since(start)
			}
			n += round
		}
		b.ReportMetric(float64(spent[1])/float64(spent[0]), "agent/bare")
		b.ReportMetric(float64(spent[2])/float64(spent[0]), "agent-ctx/bare")
		b.ReportMetric(float64(spent[0].Nanoseconds())/float64(n), "bare-ns/run")
		b.ReportMetric(float64(spent[1].Nanoseconds())/float64(n), "agent-ns/run")
	})
}

// BenchmarkSwap measures one reload as the reconcile loop does it: open the
// other version, warm it up, swap it in, close the old one. It reports the
// process's resident memory growth per swap (after a forced Go GC), the
// figure behind Options.EnableCPUArena's default.
func BenchmarkSwap(b *testing.B) {
	initORT(b)
	in, out := windowSpecs(1)
	files := []string{models.FileV1, models.FileV2}
	var slot runtime.Slot
	swap := func(i int) {
		s, err := runtime.Open(context.Background(), examplePath(files[i%2]), in, out, runtime.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.WarmUp(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
		if old, _ := slot.Swap(s, strconv.Itoa(i)); old != nil {
			if err := old.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i := range 10 { // settle ONNX Runtime's one-time allocations
		swap(i)
	}
	debug.FreeOSMemory()
	before := vmRSS(b)
	i := 0
	for b.Loop() {
		swap(i)
		i++
	}
	b.StopTimer()
	debug.FreeOSMemory()
	grown := vmRSS(b) - before
	b.ReportMetric(float64(grown)/float64(i), "rss-KiB/swap")
	if last, _ := slot.Swap(nil, ""); last != nil {
		last.Close()
	}
}

// TestReloadMemory opens, runs and closes a model 200 times and logs how
// the process's resident memory grows: the growth DESIGN.md warns about
// (onnxruntime_go #48, #112, #114). It runs v1 and a model with a 256 KiB
// weight, each with the defaults (no CPU arena, C heap trimmed on Close),
// with the arena, and without the trim. It logs only; run one subtest alone
// (-run 'TestReloadMemory/matmul256/no-trim') for figures not skewed by
// the others.
func TestReloadMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1,200 reloads")
	}
	initORT(t)
	v1In, v1Out := windowSpecs(1)
	slowPath, slowIn, slowOut := slowModel(t, 8)
	type model struct {
		name         string
		path         string
		inputs, outs []runtime.TensorSpec
		request      map[string]runtime.Tensor
	}
	type variant struct {
		name  string
		arena bool
		trim  bool
	}
	for _, m := range []model{
		{"v1", examplePath(models.FileV1), v1In, v1Out, windowInput(make([]float32, mlp.InputSize), 1)},
		{"matmul256", slowPath, slowIn, slowOut, slowInput()},
	} {
		for _, v := range []variant{{"default", false, true}, {"arena-on", true, true}, {"no-trim", false, false}} {
			t.Run(m.name+"/"+v.name, func(t *testing.T) {
				defer runtime.SetTrimOnClose(runtime.SetTrimOnClose(v.trim))
				reload := func() {
					s, err := runtime.Open(context.Background(), m.path, m.inputs, m.outs, runtime.Options{EnableCPUArena: v.arena})
					if err != nil {
						t.Fatal(err)
					}
					for range 3 {
						if _, err := s.Run(context.Background(), m.request); err != nil {
							t.Fatal(err)
						}
					}
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
				}
				for range 10 {
					reload()
				}
				debug.FreeOSMemory()
				base := vmRSS(t)
				const reloads = 200
				for i := 1; i <= reloads; i++ {
					reload()
				}
				debug.FreeOSMemory()
				rss := vmRSS(t)
				t.Logf("%s/%s: %d reloads: VmRSS %d KiB → %d KiB (%+d KiB, %+.1f KiB/reload)",
					m.name, v.name, reloads, base, rss, rss-base, float64(rss-base)/reloads)
			})
		}
	}
}

// vmRSS returns the process's resident set size in KiB, from
// /proc/self/status.
func vmRSS(tb testing.TB) int64 {
	tb.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			return kib
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
