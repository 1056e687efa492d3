package sim

import (
	"bytes"
	"testing"

	"github.com/modelfleet/modelfleet/hub/release"
)

// TestPaddedModel: the generated artifact is an ONNX model the release
// push accepts, about as large as asked, and different per seed.
func TestPaddedModel(t *testing.T) {
	tests := []struct {
		name string
		size int64
	}{
		{"tiny request gets the bare model plus a little", 1},
		{"64 KiB", 64 << 10},
		{"10 MiB", 10 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := paddedModel(1, tt.size)
			if _, _, err := release.InspectONNX(bytes.NewReader(m)); err != nil {
				t.Fatalf("not a model the release push accepts: %v", err)
			}
			if tt.size > 4096 {
				if d := int64(len(m)) - tt.size; d < -128 || d > 128 {
					t.Errorf("model is %d bytes, want about %d", len(m), tt.size)
				}
			}
			if bytes.Equal(m, paddedModel(2, tt.size)) {
				t.Error("two seeds gave the same bytes")
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		name string
		xs   []float64
		q    float64
		want float64
	}{
		{"empty", nil, 0.5, 0},
		{"one", []float64{7}, 0.99, 7},
		{"median of ten", xs, 0.5, 5},
		{"p99 of ten is the max", xs, 0.99, 10},
		{"p0 is the min", xs, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quantile(tt.xs, tt.q); got != tt.want {
				t.Errorf("quantile(%v, %v) = %v, want %v", tt.xs, tt.q, got, tt.want)
			}
		})
	}
}
