package benchreport

import (
	"math"
	"slices"
)

// Summary describes repeated measurements of one figure.
type Summary struct {
	// N is the number of samples; the other fields are NaN when it is 0.
	N int
	// Median is the 50th percentile.
	Median float64
	// Min and Max bound the spread.
	Min, Max float64
	// Q1 and Q3 are the 25th and 75th percentiles, interpolated linearly
	// between the closest ranks.
	Q1, Q3 float64
}

// Summarize returns the median, min–max and interquartile range of
// samples. NaN samples are ignored.
func Summarize(samples []float64) Summary {
	s := make([]float64, 0, len(samples))
	for _, v := range samples {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		nan := math.NaN()
		return Summary{Median: nan, Min: nan, Max: nan, Q1: nan, Q3: nan}
	}
	slices.Sort(s)
	return Summary{
		N:      len(s),
		Median: quantile(s, 0.5),
		Min:    s[0],
		Max:    s[len(s)-1],
		Q1:     quantile(s, 0.25),
		Q3:     quantile(s, 0.75),
	}
}

// quantile of sorted s, with linear interpolation between closest ranks
// (the "R-7" definition, as in most spreadsheets).
func quantile(s []float64, q float64) float64 {
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (pos-float64(lo))*(s[hi]-s[lo])
}

// Ratios returns a[i]/b[i] for the pairs where both exist and b[i] ≠ 0:
// a figure and its baseline measured in the same round.
func Ratios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] != 0 && !math.IsNaN(a[i]) && !math.IsNaN(b[i]) {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}
