package manifest

import (
	"slices"
	"testing"
)

func TestParseSemver(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr error
	}{
		{in: "1.2.3", want: "1.2.3"},
		{in: "0.0.0", want: "0.0.0"},
		{in: "1.0.0-alpha.1+build.5", want: "1.0.0-alpha.1+build.5"},
		{in: "1.0.0-0A.is.legal", want: "1.0.0-0A.is.legal"},
		{in: "18446744073709551615.0.0", want: "18446744073709551615.0.0"},
		{in: "v1.2.3", wantErr: ErrMalformed},
		{in: "1.2", wantErr: ErrMalformed},
		{in: "1.2.3.4", wantErr: ErrMalformed},
		{in: "01.2.3", wantErr: ErrMalformed},
		{in: "1.2.3-01", wantErr: ErrMalformed},
		{in: "1.2.3-", wantErr: ErrMalformed},
		{in: "1.2.3+", wantErr: ErrMalformed},
		{in: "1.2.3-a..b", wantErr: ErrMalformed},
		{in: "1.2.3-a_b", wantErr: ErrMalformed},
		{in: "1.-2.3", wantErr: ErrMalformed},
		{in: "18446744073709551616.0.0", wantErr: ErrMalformed},
		{in: "", wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSemver(tt.in)
			wantErr(t, err, tt.wantErr, "")
			if err == nil && got.String() != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCompareSemver(t *testing.T) {
	// semver.org §11's example order, plus build metadata and big numbers.
	ordered := []string{
		"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0", "10.0.0",
	}
	for i := range ordered {
		for j := range ordered {
			got, err := CompareSemver(ordered[i], ordered[j])
			if err != nil {
				t.Fatal(err)
			}
			if want := cmpInt(i, j); got != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
	if c, _ := CompareSemver("1.0.0+a", "1.0.0+b"); c != 0 {
		t.Errorf("build metadata must not order versions, got %d", c)
	}
	if _, err := CompareSemver("1.0", "1.0.0"); err == nil {
		t.Error("CompareSemver accepted an invalid version")
	}
	shuffled := slices.Clone(ordered)
	slices.Reverse(shuffled)
	slices.SortFunc(shuffled, func(a, b string) int { c, _ := CompareSemver(a, b); return c })
	if !slices.Equal(shuffled, ordered) {
		t.Errorf("sorted = %v", shuffled)
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
