package rollout

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseWaves(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []int
		wantErr string
		wantCol int
	}{
		{name: "default", in: "1,10,50,100", want: []int{1, 10, 50, 100}},
		{name: "single", in: "100", want: []int{100}},
		{name: "spaces", in: " 5 , 25,100 ", want: []int{5, 25, 100}},
		{name: "every percent", in: "1,2,3,4,5,100", want: []int{1, 2, 3, 4, 5, 100}},

		{name: "empty", in: "", wantErr: "empty; want cumulative percentages", wantCol: 1},
		{name: "blank", in: "  ", wantErr: "empty; want", wantCol: 1},
		{name: "empty wave", in: "1,,100", wantErr: "empty wave", wantCol: 3},
		{name: "trailing comma", in: "1,100,", wantErr: "empty wave", wantCol: 7},
		{name: "leading comma", in: ",100", wantErr: "empty wave", wantCol: 1},
		{name: "zero", in: "0,100", wantErr: "0 is not a percentage between 1 and 100", wantCol: 1},
		{name: "above 100", in: "50,150", wantErr: "150 is not a percentage", wantCol: 4},
		{name: "huge", in: "1,99999999999999999999999", wantErr: "is not a percentage", wantCol: 3},
		{name: "negative", in: "-1,100", wantErr: "expected a whole percentage, found '-'", wantCol: 1},
		{name: "decimal", in: "0.5,100", wantErr: "expected ',' after 0, found '.' (percentages are whole numbers)", wantCol: 2},
		{name: "percent sign", in: "1%,100", wantErr: "found '%'", wantCol: 2},
		{name: "not increasing", in: "1,10,10,100", wantErr: "10 does not increase on 10", wantCol: 6},
		{name: "decreasing", in: "50,10,100", wantErr: "10 does not increase on 50", wantCol: 4},
		{name: "last not 100", in: "1,10,50", wantErr: "the last wave is 50%; it must be 100", wantCol: 8},
		{name: "space separated", in: "1 10 100", wantErr: "expected ',' after 1, found '1'", wantCol: 3},
		{name: "words", in: "canary,100", wantErr: "expected a whole percentage, found 'c'", wantCol: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWaves(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseWaves(%q): %v", tt.in, err)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("ParseWaves(%q) = %v, want %v", tt.in, got, tt.want)
				}
				if again, err := ParseWaves(FormatWaves(got)); err != nil || !slices.Equal(again, got) {
					t.Fatalf("FormatWaves round trip: %v, %v", again, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseWaves(%q) = %v, want error containing %q", tt.in, got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("error %T %v is not a *SyntaxError wrapping ErrInvalidSpec", err, err)
			}
			if se.Column != tt.wantCol {
				t.Errorf("column = %d, want %d (%v)", se.Column, tt.wantCol, err)
			}
		})
	}
}

func TestSpecValidate(t *testing.T) {
	valid := Spec{
		Model: "vibration", Version: "1.2.0", Selector: map[string]string{"site": "plant-a"},
		Waves: []int{1, 10, 50, 100}, Soak: 5 * time.Minute,
		Gates: []Gate{{MetricErrorRate, OpLess, 0.01}}, Mode: ModeActive, OnFailure: OnFailurePause,
		InstallTimeout: time.Minute,
	}
	tests := []struct {
		name    string
		edit    func(*Spec)
		wantErr []string // every problem expected, in order; nil for valid
	}{
		{name: "valid", edit: func(*Spec) {}},
		{name: "empty selector and no gates", edit: func(s *Spec) { s.Selector, s.Gates = nil, nil }},
		{name: "zero soak with install gate only", edit: func(s *Spec) { s.Soak, s.Gates = 0, []Gate{{MetricInstallFailures, OpLessEqual, 0}} }},
		{name: "zero soak with a telemetry gate", edit: func(s *Spec) { s.Soak = 0 },
			wantErr: []string{"soak: 0 with gate error_rate<0.01: it would be evaluated before a single request was measured"}},
		{name: "shadow with latency and sample gates", edit: func(s *Spec) {
			s.Mode, s.Gates = ModeShadow, []Gate{{MetricP95LatencyMS, OpLess, 50}, {MetricRequests, OpGreaterEqual, 100}}
		}},
		{name: "error rate gate in shadow mode", edit: func(s *Spec) { s.Mode = ModeShadow },
			wantErr: []string{"gates[0]: error_rate<0.01 needs mode active: a shadow's answers are never served"}},
		{name: "shadow with agreement gate", edit: func(s *Spec) {
			s.Mode, s.Gates = ModeShadow, []Gate{{MetricShadowAgreement, OpGreaterEqual, 0.99}}
		}},
		{name: "bad model", edit: func(s *Spec) { s.Model = "Vib ration" }, wantErr: []string{`model: model name "Vib ration"`}},
		{name: "bad version", edit: func(s *Spec) { s.Version = "v1.2" }, wantErr: []string{`version: version "v1.2" is not semver`}},
		{name: "bad selector", edit: func(s *Spec) { s.Selector = map[string]string{"": "x", "a=b": "c", "ok": "d,e"} },
			wantErr: []string{`selector: ""="x"`, `selector: "a=b"="c"`, `selector: "ok"="d,e"`}},
		{name: "no waves", edit: func(s *Spec) { s.Waves = nil }, wantErr: []string{"waves: none given"}},
		{name: "bad waves", edit: func(s *Spec) { s.Waves = []int{0, 50, 40} },
			wantErr: []string{"waves: wave 1 is 0%", "waves: wave 3 (40%) does not increase on wave 2 (50%)", "waves: the last wave is 40%"}},
		{name: "negative soak", edit: func(s *Spec) { s.Soak = -time.Second }, wantErr: []string{"soak: -1s is negative"}},
		{name: "no install timeout", edit: func(s *Spec) { s.InstallTimeout = 0 }, wantErr: []string{"install timeout: 0s; want a positive duration"}},
		{name: "bad gates", edit: func(s *Spec) {
			s.Gates = []Gate{{"cpu", OpLess, 1}, {MetricErrorRate, "=", 0}, {MetricErrorRate, OpLess, 2}, {MetricRequests, OpGreater, -1}}
		}, wantErr: []string{`gates[0]: gate cpu<1: unknown metric "cpu"`, `gates[1]: gate error_rate=0: unknown operator "="`,
			"gates[2]: gate error_rate<2: error_rate is a fraction", "gates[3]: gate requests>-1: threshold must not be negative"}},
		{name: "agreement gate in active mode", edit: func(s *Spec) { s.Gates = []Gate{{MetricShadowAgreement, OpGreaterEqual, 0.9}} },
			wantErr: []string{"gates[0]: shadow_agreement>=0.9 needs mode shadow"}},
		{name: "bad mode and policy", edit: func(s *Spec) { s.Mode, s.OnFailure = "canary", "retry" },
			wantErr: []string{`mode: "canary"`, `on failure: "retry"; want "pause" or "rollback"`}},
		{name: "everything wrong", edit: func(s *Spec) { *s = Spec{Soak: -1} },
			wantErr: []string{"model:", "version:", "waves: none given", "soak:", "install timeout:", "mode:", "on failure:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid
			s.Selector = map[string]string{"site": "plant-a"}
			s.Gates = slices.Clone(valid.Gates)
			tt.edit(&s)
			err := s.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var se *SpecError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("Validate = %v, want a *SpecError wrapping ErrInvalidSpec", err)
			}
			if len(se.Problems) != len(tt.wantErr) {
				t.Fatalf("problems = %q, want %d", se.Problems, len(tt.wantErr))
			}
			for i, want := range tt.wantErr {
				if !strings.Contains(se.Problems[i], want) {
					t.Errorf("problem %d = %q, want it to contain %q", i, se.Problems[i], want)
				}
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	s := Spec{Model: "m", Version: "1.0.0"}.WithDefaults()
	if err := s.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if !slices.Equal(s.Waves, []int{1, 10, 50, 100}) || s.Mode != ModeActive || s.OnFailure != OnFailurePause ||
		s.InstallTimeout != DefaultInstallTimeout || s.Soak != 0 || len(s.Gates) != 1 || s.Gates[0].String() != DefaultGate {
		t.Fatalf("WithDefaults = %+v", s)
	}

	given := Spec{Model: "m", Version: "1.0.0", Waves: []int{50, 100}, Soak: time.Second, Mode: ModeShadow,
		OnFailure: OnFailureRollback, InstallTimeout: time.Minute, Gates: []Gate{{MetricRequests, OpGreater, 1}}}
	got := given.WithDefaults()
	if !slices.Equal(got.Waves, given.Waves) || got.Mode != ModeShadow || got.OnFailure != OnFailureRollback ||
		got.InstallTimeout != time.Minute || got.Soak != time.Second || len(got.Gates) != 1 {
		t.Fatalf("WithDefaults changed given fields: %+v", got)
	}
	got.Waves[0] = 7 // must not alias the caller's slice
	if given.Waves[0] != 50 {
		t.Fatal("WithDefaults aliases Waves")
	}
}

func TestSpecJSON(t *testing.T) {
	s := Spec{Model: "m", Version: "1.0.0", Selector: map[string]string{"site": "a"}}.WithDefaults()
	s.Soak = 5 * time.Minute
	b := []byte(mustJSON(t, s))
	want := `{"model":"m","version":"1.0.0","selector":{"site":"a"},"waves":[1,10,50,100],"soak_ns":300000000000,` +
		`"gates":["install_failures<=0"],"mode":"active","on_failure":"pause","install_timeout_ns":900000000000}`
	if string(b) != want {
		t.Fatalf("JSON =\n%s\nwant\n%s", b, want)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if b2 := mustJSON(t, back); b2 != want {
		t.Fatalf("round trip =\n%s", b2)
	}
}

func TestMatches(t *testing.T) {
	labels := map[string]string{"site": "plant-a", "tier": "edge"}
	tests := []struct {
		name     string
		selector map[string]string
		want     bool
	}{
		{"empty selects all", nil, true},
		{"one pair", map[string]string{"site": "plant-a"}, true},
		{"all pairs", map[string]string{"site": "plant-a", "tier": "edge"}, true},
		{"wrong value", map[string]string{"site": "plant-b"}, false},
		{"missing key", map[string]string{"gpu": "yes"}, false},
		{"empty value needs the key", map[string]string{"zone": ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Matches(tt.selector, labels); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
}
