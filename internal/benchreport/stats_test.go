package benchreport

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		in   []float64
		want Summary
	}{
		{name: "one", in: []float64{3}, want: Summary{N: 1, Median: 3, Min: 3, Max: 3, Q1: 3, Q3: 3}},
		{name: "odd, unsorted", in: []float64{5, 1, 3}, want: Summary{N: 3, Median: 3, Min: 1, Max: 5, Q1: 2, Q3: 4}},
		{name: "even interpolates", in: []float64{4, 1, 2, 3}, want: Summary{N: 4, Median: 2.5, Min: 1, Max: 4, Q1: 1.75, Q3: 3.25}},
		{name: "NaN ignored", in: []float64{nan, 10, nan, 20}, want: Summary{N: 2, Median: 15, Min: 10, Max: 20, Q1: 12.5, Q3: 17.5}},
		{name: "outlier does not move the median", in: []float64{1, 1, 1, 1, 100}, want: Summary{N: 5, Median: 1, Min: 1, Max: 100, Q1: 1, Q3: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Summarize(tt.in); got != tt.want {
				t.Errorf("Summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		got := Summarize([]float64{nan})
		if got.N != 0 || !math.IsNaN(got.Median) || !math.IsNaN(got.Min) {
			t.Errorf("Summarize(NaN) = %+v, want N 0 and NaN figures", got)
		}
	})
}

func TestRatios(t *testing.T) {
	got := Ratios([]float64{10, 20, math.NaN(), 8, 1}, []float64{5, 0, 3, 4})
	want := []float64{2, 2}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Ratios = %v, want %v (pairs with a zero or NaN dropped, unpaired tail dropped)", got, want)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"thousands", thousands(1234567.4), "1,234,567"},
		{"thousands small", thousands(999), "999"},
		{"thousands negative", thousands(-1000), "-1,000"},
		{"summary", formatSummary(Summarize([]float64{0.9, 1.1, 1.0}), ratio), "1.00× (0.90×–1.10×)"},
		{"summary of one", formatSummary(Summarize([]float64{2}), fixed(1)), "2.0"},
		{"summary of none", formatSummary(Summarize(nil), fixed(1)), "—"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name       string
		samples    []float64
		limit      float64
		atLeast    bool
		wantStatus string
		wantReason string
	}{
		{"at least, met", []float64{0.95, 0.85, 1.0}, 0.9, true, StatusMet, ""},
		{"at least, not met", []float64{0.8, 0.85, 0.95}, 0.9, true, StatusNotMet, "median 0.85× < 0.90×"},
		{"at most, met on the limit", []float64{1.1}, 1.1, false, StatusMet, ""},
		{"at most, not met", []float64{1.2, 1.3}, 1.1, false, StatusNotMet, "median 1.25× > 1.10×"},
		{"no samples", nil, 1, true, StatusNotMeasured, "skipped: no broker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := judge("x", "y", Summarize(tt.samples), tt.limit, tt.atLeast, ratio, "skipped: no broker")
			if g.Status != tt.wantStatus || g.Reason != tt.wantReason {
				t.Errorf("judge = %q (%q), want %q (%q)", g.Status, g.Reason, tt.wantStatus, tt.wantReason)
			}
		})
	}
}
