package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseGate(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Gate
		wantErr string // substring of the error; "" for success
		wantCol int    // column of the SyntaxError when wantErr is set
	}{
		{name: "error rate", in: "error_rate<0.01", want: Gate{MetricErrorRate, OpLess, 0.01}},
		{name: "p95 le", in: "p95_latency_ms<=50", want: Gate{MetricP95LatencyMS, OpLessEqual, 50}},
		{name: "p99 decimal", in: "p99_latency_ms<12.5", want: Gate{MetricP99LatencyMS, OpLess, 12.5}},
		{name: "install failures", in: "install_failures<=0", want: Gate{MetricInstallFailures, OpLessEqual, 0}},
		{name: "shadow agreement", in: "shadow_agreement>=0.99", want: Gate{MetricShadowAgreement, OpGreaterEqual, 0.99}},
		{name: "min sample", in: "requests>=1000", want: Gate{MetricRequests, OpGreaterEqual, 1000}},
		{name: "greater", in: "requests>0", want: Gate{MetricRequests, OpGreater, 0}},
		{name: "equal", in: "install_failures==0", want: Gate{MetricInstallFailures, OpEqual, 0}},
		{name: "spaces", in: "  p95_latency_ms <= 50  ", want: Gate{MetricP95LatencyMS, OpLessEqual, 50}},
		{name: "tabs", in: "error_rate\t<\t0.5", want: Gate{MetricErrorRate, OpLess, 0.5}},
		{name: "fraction one", in: "shadow_agreement==1", want: Gate{MetricShadowAgreement, OpEqual, 1}},
		{name: "leading zeros", in: "p95_latency_ms<007.50", want: Gate{MetricP95LatencyMS, OpLess, 7.5}},
		{name: "count written as decimal", in: "requests>=10.0", want: Gate{MetricRequests, OpGreaterEqual, 10}},

		{name: "empty", in: "", wantErr: "empty gate", wantCol: 1},
		{name: "blank", in: "   ", wantErr: "empty gate", wantCol: 4},
		{name: "no metric", in: "<0.01", wantErr: "expected a metric name", wantCol: 1},
		{name: "unknown metric", in: "latency<5", wantErr: `unknown metric "latency"; want one of error_rate, p95_latency_ms`, wantCol: 1},
		{name: "upper case metric", in: "ERROR_RATE<0.01", wantErr: `unknown metric "ERROR_RATE"`, wantCol: 1},
		{name: "metric only", in: "error_rate", wantErr: "expected an operator (<, <=, >, >=, ==) after \"error_rate\", found end of input", wantCol: 11},
		{name: "bad operator", in: "error_rate~0.01", wantErr: "expected an operator", wantCol: 11},
		{name: "single equals", in: "install_failures=0", wantErr: "use == to test equality", wantCol: 17},
		{name: "not equal", in: "install_failures!=0", wantErr: "!= is not supported", wantCol: 17},
		{name: "doubled operator", in: "error_rate<<0.01", wantErr: `expected a number after "<", found '<'`, wantCol: 12},
		{name: "arrow", in: "error_rate=>0.01", wantErr: "use ==", wantCol: 11},
		{name: "no number", in: "error_rate<", wantErr: "found end of input", wantCol: 12},
		{name: "negative", in: "p95_latency_ms>-1", wantErr: "must not be negative", wantCol: 16},
		{name: "leading dot", in: "error_rate<.5", wantErr: "expected a number", wantCol: 12},
		{name: "trailing dot", in: "error_rate<5.", wantErr: "expected a digit after the decimal point, found end of input", wantCol: 14},
		{name: "two dots", in: "p95_latency_ms<1.2.3", wantErr: `unexpected '.' after the number 1.2`, wantCol: 19},
		{name: "percent sign", in: "error_rate<1%", wantErr: `unexpected '%' after the number 1`, wantCol: 13},
		{name: "unit", in: "p95_latency_ms<50ms", wantErr: `unexpected 'm'`, wantCol: 18},
		{name: "exponent", in: "error_rate<1e-3", wantErr: `unexpected 'e'`, wantCol: 13},
		{name: "two gates", in: "error_rate<0.01 p95_latency_ms<5", wantErr: `unexpected 'p'`, wantCol: 17},
		{name: "comma", in: "error_rate<0,01", wantErr: `unexpected ','`, wantCol: 13},
		{name: "nan", in: "error_rate<NaN", wantErr: "expected a number", wantCol: 12},
		{name: "fraction above one", in: "error_rate<5", wantErr: "error_rate is a fraction between 0 and 1 (0.01 means 1%), got 5", wantCol: 12},
		{name: "agreement above one", in: "shadow_agreement>=99", wantErr: "fraction between 0 and 1", wantCol: 19},
		{name: "fractional count", in: "install_failures<0.5", wantErr: "needs a whole number, got 0.5", wantCol: 18},
		{name: "fractional requests", in: "requests>=99.9", wantErr: "needs a whole number", wantCol: 11},
		{name: "non ascii", in: "error_rate≤0.01", wantErr: `found '≤'`, wantCol: 11},
		{name: "too long", in: "p95_latency_ms<" + strings.Repeat("1", 300), wantErr: "longer than 256 bytes", wantCol: 257},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGate(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseGate(%q): %v", tt.in, err)
				}
				if got != tt.want {
					t.Fatalf("ParseGate(%q) = %+v, want %+v", tt.in, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseGate(%q) = %+v, want error containing %q", tt.in, got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("error %v does not wrap ErrInvalidSpec", err)
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *SyntaxError", err)
			}
			if se.Column != tt.wantCol {
				t.Errorf("column = %d, want %d (%v)", se.Column, tt.wantCol, err)
			}
		})
	}
}

func TestGateStringRoundTrip(t *testing.T) {
	for _, in := range []string{"error_rate<0.01", "p95_latency_ms<=50", "p99_latency_ms>12.25", "install_failures==0", "shadow_agreement>=0.999", "requests>=1000000"} {
		g, err := ParseGate(in)
		if err != nil {
			t.Fatal(err)
		}
		if g.String() != in {
			t.Errorf("String() = %q, want %q", g.String(), in)
		}
	}
}

func TestGateJSON(t *testing.T) {
	gates := []Gate{{MetricErrorRate, OpLess, 0.01}, {MetricRequests, OpGreaterEqual, 100}}
	b := []byte(mustJSON(t, gates))
	if want := `["error_rate<0.01","requests>=100"]`; string(b) != want {
		t.Fatalf("JSON = %s, want %s", b, want)
	}
	var back []Gate
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || back[0] != gates[0] || back[1] != gates[1] {
		t.Fatalf("round trip = %+v", back)
	}
	if err := json.Unmarshal([]byte(`["error_rate<<1"]`), &back); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("bad gate in JSON: err = %v, want ErrInvalidSpec", err)
	}
	if _, err := json.Marshal(Gate{Metric: "bogus", Op: OpLess}); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("marshal invalid gate: err = %v, want ErrInvalidSpec", err)
	}
}

func TestEvaluate(t *testing.T) {
	gates := []Gate{
		MustParseGate(t, "error_rate<0.01"),
		MustParseGate(t, "p95_latency_ms<50"),
		MustParseGate(t, "requests>=100"),
		MustParseGate(t, "install_failures==0"),
		MustParseGate(t, "shadow_agreement>=0.99"),
	}
	tests := []struct {
		name    string
		metrics Metrics
		want    []GateResult
	}{
		{
			name:    "all pass",
			metrics: Metrics{MetricErrorRate: 0.001, MetricP95LatencyMS: 20, MetricRequests: 500, MetricInstallFailures: 0, MetricShadowAgreement: 0.995},
			want: []GateResult{
				{Gate: gates[0], Value: 0.001, Passed: true},
				{Gate: gates[1], Value: 20, Passed: true},
				{Gate: gates[2], Value: 500, Passed: true},
				{Gate: gates[3], Value: 0, Passed: true},
				{Gate: gates[4], Value: 0.995, Passed: true},
			},
		},
		{
			name:    "boundaries fail strict and pass inclusive",
			metrics: Metrics{MetricErrorRate: 0.01, MetricP95LatencyMS: 50, MetricRequests: 100, MetricInstallFailures: 1, MetricShadowAgreement: 0.99},
			want: []GateResult{
				{Gate: gates[0], Value: 0.01},
				{Gate: gates[1], Value: 50},
				{Gate: gates[2], Value: 100, Passed: true},
				{Gate: gates[3], Value: 1},
				{Gate: gates[4], Value: 0.99, Passed: true},
			},
		},
		{
			name:    "missing data",
			metrics: Metrics{MetricInstallFailures: 0},
			want: []GateResult{
				{Gate: gates[0], Missing: true},
				{Gate: gates[1], Missing: true},
				{Gate: gates[2], Missing: true},
				{Gate: gates[3], Value: 0, Passed: true},
				{Gate: gates[4], Missing: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Evaluate(gates, tt.metrics)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d results, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("result %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestGateResultString(t *testing.T) {
	g := MustParseGate(t, "p95_latency_ms<50")
	tests := []struct {
		name string
		r    GateResult
		want string
	}{
		{"failed", GateResult{Gate: g, Value: 72.4}, "p95_latency_ms<50: 72.4 (failed)"},
		{"passed", GateResult{Gate: g, Value: 12, Passed: true}, "p95_latency_ms<50: 12 (passed)"},
		{"missing", GateResult{Gate: g, Missing: true}, "p95_latency_ms<50: no data"},
		{"float noise rounded", GateResult{Gate: g, Value: 0.35999999999999976, Passed: true}, "p95_latency_ms<50: 0.36 (passed)"},
		{"four significant digits", GateResult{Gate: g, Value: 0.2472727272, Passed: true}, "p95_latency_ms<50: 0.2473 (passed)"},
		{"integer digits kept", GateResult{Gate: g, Value: 1234.5678}, "p95_latency_ms<50: 1235 (failed)"},
		{"ratio as a fraction", GateResult{Gate: MustParseGate(t, "error_rate<0.01"), Value: 0.0123456}, "error_rate<0.01: 0.01235 (failed)"},
		{"small ratio without exponent", GateResult{Gate: MustParseGate(t, "error_rate<0.01"), Value: 1.234567e-5, Passed: true}, "error_rate<0.01: 0.00001235 (passed)"},
		{"count", GateResult{Gate: MustParseGate(t, "install_failures<=0"), Value: 1}, "install_failures<=0: 1 (failed)"},
		{"rounding never contradicts the verdict", GateResult{Gate: MustParseGate(t, "error_rate<=0.01"), Value: 0.0100004}, "error_rate<=0.01: 0.0100004 (failed)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestGateCheck(t *testing.T) {
	tests := []struct {
		op   Op
		v    float64
		want bool
	}{
		{OpLess, 0.9, true}, {OpLess, 1, false},
		{OpLessEqual, 1, true}, {OpLessEqual, 1.1, false},
		{OpGreater, 1.1, true}, {OpGreater, 1, false},
		{OpGreaterEqual, 1, true}, {OpGreaterEqual, 0.9, false},
		{OpEqual, 1, true}, {OpEqual, 0.9, false},
		{"!", 1, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s%v", tt.op, tt.v), func(t *testing.T) {
			if got := (Gate{MetricP95LatencyMS, tt.op, 1}).Check(tt.v); got != tt.want {
				t.Errorf("%v %s 1 = %v, want %v", tt.v, tt.op, got, tt.want)
			}
		})
	}
}
