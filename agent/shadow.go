package agent

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/state"
	"github.com/modelfleet/modelfleet/manifest"
)

// shadowSuffix marks the state key of a model's shadow candidate.
const shadowSuffix = "@shadow"

// shadowAgreeTolerance is the largest difference between the candidate's
// and the active model's single-value outputs (scores) that still counts
// as agreement; multi-value outputs agree when their argmax is the same.
const shadowAgreeTolerance = 0.05

// stateKey is where an assignment entry lives in the state: the model name
// for active entries, name@shadow for shadow candidates.
func stateKey(name, mode string) string {
	if mode == manifest.ModeShadow {
		return name + shadowSuffix
	}
	return name
}

// shadowOf returns the model name of a shadow state key.
func shadowOf(key string) (string, bool) { return strings.CutSuffix(key, shadowSuffix) }

// shadow is a candidate version that runs beside the active one on a
// sample of live requests; its outputs are compared, never returned.
type shadow struct {
	sess    *runtime.Session
	version string
	rate    float64     // share of requests sampled, 0..1
	busy    chan func() // holds one slot: at most one comparison at a time
}

// activateShadow loads a shadow install and replaces the model's candidate.
func (a *Agent) activateShadow(ctx context.Context, model string, in *state.Install) error {
	sess, err := a.open(ctx, in)
	if err != nil {
		return err
	}
	rate := 1.0
	if in.ShadowSamplePPM > 0 {
		rate = float64(in.ShadowSamplePPM) / manifest.PPM
	}
	sh := &shadow{sess: sess, version: in.Version, rate: rate, busy: make(chan func(), 1)}
	a.mu.Lock()
	old := a.shadows[model]
	a.shadows[model] = sh
	a.mu.Unlock()
	if old != nil {
		old.sess.Close()
	}
	a.log.Info("shadow candidate loaded", "model", model, "version", in.Version, "sample_rate", rate)
	return nil
}

func (a *Agent) unloadShadow(model string) {
	a.mu.Lock()
	old := a.shadows[model]
	delete(a.shadows, model)
	a.mu.Unlock()
	if old != nil {
		old.sess.Close()
	}
}

// maybeShadow runs a sampled request on the model's shadow candidate in the
// background and records how it compares with the active model's outputs.
// At most one comparison per model runs at a time; samples that find it
// busy are skipped, so shadowing never queues work behind live traffic.
// The inputs must not be modified after Infer returns (the front ends
// decode a fresh tensor per request).
func (a *Agent) maybeShadow(model string, inputs, active map[string]runtime.Tensor) {
	a.mu.Lock()
	sh := a.shadows[model]
	a.mu.Unlock()
	if sh == nil || (sh.rate < 1 && rand.Float64() >= sh.rate) {
		return
	}
	select {
	case sh.busy <- nil:
	default:
		return
	}
	go func() {
		defer func() { <-sh.busy }()
		start := time.Now()
		out, err := sh.sess.Run(context.Background(), inputs)
		if err != nil {
			a.log.Debug("shadow run failed", "model", model, "version", sh.version, "err", err)
			a.rec.Shadow(model, sh.version, false, 0, time.Since(start)) // a failed candidate disagrees
			return
		}
		agreed, diff := compareOutputs(active, out)
		a.rec.Shadow(model, sh.version, agreed, diff, time.Since(start))
	}()
}

// compareOutputs compares the float outputs both sides have: the largest
// absolute difference, and whether they agree (same argmax for
// multi-value outputs, within shadowAgreeTolerance for single values).
func compareOutputs(want, got map[string]runtime.Tensor) (agreed bool, maxAbsDiff float64) {
	agreed, compared := true, false
	for name, w := range want {
		g, ok := got[name]
		wv, gv := floats(w), floats(g)
		if !ok || wv == nil || len(wv) != len(gv) {
			continue
		}
		compared = true
		for i := range wv {
			maxAbsDiff = math.Max(maxAbsDiff, math.Abs(wv[i]-gv[i]))
		}
		if len(wv) == 1 {
			agreed = agreed && math.Abs(wv[0]-gv[0]) <= shadowAgreeTolerance
		} else {
			agreed = agreed && argmax(wv) == argmax(gv)
		}
	}
	return agreed && compared, maxAbsDiff
}

func floats(t runtime.Tensor) []float64 {
	switch t.ElemType() {
	case runtime.Float32:
		src := t.Float32()
		out := make([]float64, len(src))
		for i, v := range src {
			out[i] = float64(v)
		}
		return out
	case runtime.Float64:
		return t.Float64()
	}
	return nil
}

func argmax(v []float64) int {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return best
}
