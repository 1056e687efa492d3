package mlp

import (
	"math"
	"testing"
)

// TestNewWeightsGolden pins the first values of the weight stream: the
// committed model files depend on it.
func TestNewWeightsGolden(t *testing.T) {
	w := NewWeights(1)
	g := splitmix64{state: 1}
	first := g.next()
	// The reference SplitMix64 starts with 0xe220a8397b1dcdaf for seed 0
	// and 0x910a2dec89025cc1 for seed 1.
	zero := splitmix64{}
	if got := zero.next(); got != 0xe220a8397b1dcdaf {
		t.Fatalf("splitmix64(0) first output = %#x", got)
	}
	if first != 0x910a2dec89025cc1 {
		t.Fatalf("splitmix64(1) first output = %#x", first)
	}
	want := float32(int32(first>>40)-1<<23) / (1 << 25)
	if w.W1[0] != want {
		t.Errorf("W1[0] = %v, want %v", w.W1[0], want)
	}
	if a, b := NewWeights(1), NewWeights(2); a.W1[0] == b.W1[0] && a.W1[1] == b.W1[1] {
		t.Error("seeds 1 and 2 give the same weights")
	}
}

func TestNewWeightsRanges(t *testing.T) {
	w := NewWeights(7)
	check := func(name string, xs []float32, n int, bound float32) {
		if len(xs) != n {
			t.Errorf("len(%s) = %d, want %d", name, len(xs), n)
		}
		for i, x := range xs {
			if x < -bound || x >= bound {
				t.Errorf("%s[%d] = %v outside [-%v, %v)", name, i, x, bound, bound)
			}
		}
	}
	check("W1", w.W1, InputSize*HiddenSize, 0.25)
	check("B1", w.B1, HiddenSize, 0.125)
	check("W2", w.W2, HiddenSize, 0.5)
	check("B2", w.B2, 1, 0.125)
}

// TestReference checks the forward pass on weights small enough to compute
// by hand: hidden unit 0 copies sample 0, the others are off.
func TestReference(t *testing.T) {
	w := &Weights{
		W1: make([]float32, InputSize*HiddenSize),
		B1: make([]float32, HiddenSize),
		W2: make([]float32, HiddenSize),
		B2: []float32{-1},
	}
	w.W1[0] = 1 // sample 0 → hidden 0
	w.W2[0] = 2
	input := make([]float32, 2*InputSize)
	input[0] = 1.5        // window 0: relu(1.5)*2 - 1 = 2
	input[InputSize] = -3 // window 1: relu(-3)*2 - 1 = -1
	got := Reference(w, input, 2)
	want := []float64{1 / (1 + math.Exp(-2)), 1 / (1 + math.Exp(1))}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-7 {
			t.Errorf("score[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestReferencePanicsOnBadLength(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Reference with 63 values for batch 1 did not panic")
		}
	}()
	Reference(NewWeights(1), make([]float32, InputSize-1), 1)
}
