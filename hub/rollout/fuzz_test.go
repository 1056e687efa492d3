package rollout

import (
	"errors"
	"slices"
	"testing"
)

func FuzzParseGate(f *testing.F) {
	for _, s := range []string{
		"error_rate<0.01", "p95_latency_ms <= 50", "p99_latency_ms>12.5", "install_failures==0",
		"shadow_agreement>=0.99", "requests>=1000", "", " ", "error_rate", "error_rate<", "error_rate<<1",
		"error_rate<1e-3", "error_rate=0", "x!=1", "requests>=1.5", "error_rate<5", "≤", "\x00", "p95_latency_ms<-0",
		"p95_latency_ms<00000000000000000000000000000000000000000001.5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGate(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("ParseGate(%q) error %T %v is not a *SyntaxError wrapping ErrInvalidSpec", s, err, err)
			}
			if se.Column < 1 || se.Column > len(s)+1 {
				t.Fatalf("ParseGate(%q): column %d outside 1..%d", s, se.Column, len(s)+1)
			}
			return
		}
		if err := g.validate(); err != nil {
			t.Fatalf("ParseGate(%q) = %+v, which does not validate: %v", s, g, err)
		}
		back, err := ParseGate(g.String())
		if err != nil || back != g {
			t.Fatalf("ParseGate(%q) = %v; parsing its String %q gives %v, %v", s, g, g.String(), back, err)
		}
	})
}

func FuzzParseWaves(f *testing.F) {
	for _, s := range []string{"1,10,50,100", "100", " 5 , 100", "", ",", "1,,100", "0,100", "50,10,100", "1,10,50", "1.5,100", "-1,100"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWaves(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("ParseWaves(%q) error %T %v is not a *SyntaxError", s, err, err)
			}
			if se.Column < 1 || se.Column > len(s)+1 {
				t.Fatalf("ParseWaves(%q): column %d outside 1..%d", s, se.Column, len(s)+1)
			}
			return
		}
		if p := wavesProblems(w); len(p) > 0 || len(w) == 0 {
			t.Fatalf("ParseWaves(%q) = %v, which breaks the rules: %v", s, w, p)
		}
		if back, err := ParseWaves(FormatWaves(w)); err != nil || !slices.Equal(back, w) {
			t.Fatalf("round trip of %v: %v, %v", w, back, err)
		}
	})
}
