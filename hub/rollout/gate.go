package rollout

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Metric names a value measured over the devices of the current wave.
type Metric string

// Metrics a gate can test.
const (
	// MetricErrorRate is failed requests / requests on the rollout's version,
	// a fraction between 0 and 1.
	MetricErrorRate Metric = "error_rate"
	// MetricP95LatencyMS is the 95th percentile inference latency in
	// milliseconds (in shadow mode, of the candidate's shadow runs).
	MetricP95LatencyMS Metric = "p95_latency_ms"
	// MetricP99LatencyMS is the 99th percentile inference latency in
	// milliseconds (in shadow mode, of the candidate's shadow runs).
	MetricP99LatencyMS Metric = "p99_latency_ms"
	// MetricInstallFailures is the number of devices of the wave whose install
	// failed or timed out. The Machine counts it itself from the install phases.
	MetricInstallFailures Metric = "install_failures"
	// MetricShadowAgreement is the share of shadow requests whose output agreed
	// with the active model's, between 0 and 1 (shadow mode only).
	MetricShadowAgreement Metric = "shadow_agreement"
	// MetricRequests is the number of requests served by the rollout's version
	// in the wave (in shadow mode, the number of shadow comparisons); a gate
	// on it sets a minimum sample, e.g. requests>=1000. Failing it pauses
	// the rollout even with on_failure=rollback (see the package comment).
	MetricRequests Metric = "requests"
)

// metricKinds lists the known metrics in the order error messages show them.
var metricKinds = []struct {
	m        Metric
	fraction bool // value between 0 and 1
	count    bool // whole number
}{
	{MetricErrorRate, true, false},
	{MetricP95LatencyMS, false, false},
	{MetricP99LatencyMS, false, false},
	{MetricInstallFailures, false, true},
	{MetricShadowAgreement, true, false},
	{MetricRequests, false, true},
}

// Known reports whether m is one of the metrics above.
func (m Metric) Known() bool {
	for _, k := range metricKinds {
		if k.m == m {
			return true
		}
	}
	return false
}

func metricNames() string {
	names := make([]string, len(metricKinds))
	for i, k := range metricKinds {
		names[i] = string(k.m)
	}
	return strings.Join(names, ", ")
}

// Op is a gate's comparison operator.
type Op string

// Operators of a gate: the gate passes when "measured Op threshold" holds.
const (
	OpLess         Op = "<"
	OpLessEqual    Op = "<="
	OpGreater      Op = ">"
	OpGreaterEqual Op = ">="
	OpEqual        Op = "=="
)

// Known reports whether op is one of the operators above.
func (op Op) Known() bool {
	switch op {
	case OpLess, OpLessEqual, OpGreater, OpGreaterEqual, OpEqual:
		return true
	}
	return false
}

// Metrics are the measured values of the current wave's devices, filled in
// by the driver from telemetry. A metric without data (no requests yet, no
// shadow traffic) is absent, not zero.
type Metrics map[Metric]float64

// Gate is one condition a wave must meet before the rollout advances, e.g.
// error_rate<0.01. It encodes to and from its text form in JSON.
type Gate struct {
	Metric Metric
	Op     Op
	// Threshold is the value the measured one is compared with.
	Threshold float64
}

// maxGateLen caps a gate expression; real ones are under 40 bytes.
const maxGateLen = 256

// String returns the gate as ParseGate reads it, e.g. "p95_latency_ms<=50".
func (g Gate) String() string {
	return string(g.Metric) + string(g.Op) + strconv.FormatFloat(g.Threshold, 'f', -1, 64)
}

// MarshalText encodes the gate as String does.
func (g Gate) MarshalText() ([]byte, error) {
	if err := g.validate(); err != nil {
		return nil, err
	}
	return []byte(g.String()), nil
}

// UnmarshalText parses the gate with ParseGate.
func (g *Gate) UnmarshalText(b []byte) error {
	v, err := ParseGate(string(b))
	if err != nil {
		return err
	}
	*g = v
	return nil
}

// Check reports whether the measured value v satisfies the gate.
func (g Gate) Check(v float64) bool {
	switch g.Op {
	case OpLess:
		return v < g.Threshold
	case OpLessEqual:
		return v <= g.Threshold
	case OpGreater:
		return v > g.Threshold
	case OpGreaterEqual:
		return v >= g.Threshold
	case OpEqual:
		return v == g.Threshold
	}
	return false
}

// validate checks a gate built in code; ParseGate applies the same rules.
func (g Gate) validate() error {
	bad := func(msg string) error {
		return fmt.Errorf("%w: gate %s: %s", ErrInvalidSpec, g, msg)
	}
	if !g.Metric.Known() {
		return bad(fmt.Sprintf("unknown metric %q; want one of %s", g.Metric, metricNames()))
	}
	if !g.Op.Known() {
		return bad(fmt.Sprintf("unknown operator %q; want <, <=, >, >= or ==", g.Op))
	}
	if msg := thresholdProblem(g.Metric, g.Threshold); msg != "" {
		return bad(msg)
	}
	return nil
}

// thresholdProblem returns what is wrong with v as a threshold of m, or "".
func thresholdProblem(m Metric, v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "threshold must be a finite number"
	}
	if v < 0 {
		return "threshold must not be negative"
	}
	for _, k := range metricKinds {
		if k.m != m {
			continue
		}
		if k.fraction && v > 1 {
			return fmt.Sprintf("%s is a fraction between 0 and 1 (0.01 means 1%%), got %s", m, strconv.FormatFloat(v, 'f', -1, 64))
		}
		if k.count && v != math.Trunc(v) {
			return fmt.Sprintf("%s counts devices or requests and needs a whole number, got %s", m, strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	return ""
}

// ParseGate parses "METRIC OP NUMBER", e.g. "error_rate<0.01",
// "p95_latency_ms <= 50" or "requests>=1000". Metrics are error_rate,
// p95_latency_ms, p99_latency_ms, install_failures, shadow_agreement and
// requests; operators <, <=, >, >= and ==; the number is non-negative
// decimal (digits, optionally "." and more digits), a fraction at most 1 for
// error_rate and shadow_agreement and a whole number for install_failures
// and requests. Spaces between the parts are allowed. It returns a
// *SyntaxError (wrapping ErrInvalidSpec) naming the column of the problem.
func ParseGate(s string) (Gate, error) {
	p := scanner{what: "gate", in: s}
	if len(s) > maxGateLen {
		return Gate{}, p.fail(maxGateLen, fmt.Sprintf("longer than %d bytes", maxGateLen))
	}
	p.spaces()
	if p.eof() {
		return Gate{}, p.fail(p.pos, "empty gate; want METRIC OP NUMBER, e.g. error_rate<0.01")
	}

	start := p.pos
	for !p.eof() && isNameByte(p.peek()) {
		p.pos++
	}
	name := s[start:p.pos]
	if name == "" {
		return Gate{}, p.fail(p.pos, fmt.Sprintf("expected a metric name (%s), found %s", metricNames(), p.found()))
	}
	g := Gate{Metric: Metric(name)}
	if !g.Metric.Known() {
		return Gate{}, p.fail(start, fmt.Sprintf("unknown metric %q; want one of %s", name, metricNames()))
	}

	p.spaces()
	opAt := p.pos
	switch {
	case p.eat("<="):
		g.Op = OpLessEqual
	case p.eat(">="):
		g.Op = OpGreaterEqual
	case p.eat("=="):
		g.Op = OpEqual
	case p.eat("<"):
		g.Op = OpLess
	case p.eat(">"):
		g.Op = OpGreater
	case p.eat("!="):
		return Gate{}, p.fail(opAt, "operator != is not supported; use <, <=, >, >= or ==")
	case p.eat("="):
		return Gate{}, p.fail(opAt, `"=" is not an operator; use == to test equality`)
	default:
		return Gate{}, p.fail(opAt, fmt.Sprintf("expected an operator (<, <=, >, >=, ==) after %q, found %s", name, p.found()))
	}

	p.spaces()
	numAt := p.pos
	if !p.eof() && p.peek() == '-' {
		return Gate{}, p.fail(numAt, "threshold must not be negative")
	}
	if !p.digits() {
		return Gate{}, p.fail(p.pos, fmt.Sprintf("expected a number after %q, found %s", string(g.Op), p.found()))
	}
	if !p.eof() && p.peek() == '.' {
		p.pos++
		if !p.digits() {
			return Gate{}, p.fail(p.pos, fmt.Sprintf("expected a digit after the decimal point, found %s", p.found()))
		}
	}
	num := s[numAt:p.pos]
	p.spaces()
	if !p.eof() {
		return Gate{}, p.fail(p.pos, fmt.Sprintf("unexpected %s after the number %s", p.found(), num))
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil { // only out of range can happen here: the grammar is checked
		return Gate{}, p.fail(numAt, fmt.Sprintf("number %s is out of range", num))
	}
	g.Threshold = v
	if msg := thresholdProblem(g.Metric, v); msg != "" {
		return Gate{}, p.fail(numAt, msg)
	}
	return g, nil
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// scanner walks a short expression by byte offset for ParseGate and
// ParseWaves, so errors can name the column.
type scanner struct {
	what string
	in   string
	pos  int
}

func (p *scanner) eof() bool  { return p.pos >= len(p.in) }
func (p *scanner) peek() byte { return p.in[p.pos] }

func (p *scanner) spaces() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.pos++
	}
}

func (p *scanner) eat(tok string) bool {
	if strings.HasPrefix(p.in[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

// digits consumes [0-9]+ and reports whether there was at least one.
func (p *scanner) digits() bool {
	start := p.pos
	for !p.eof() && p.peek() >= '0' && p.peek() <= '9' {
		p.pos++
	}
	return p.pos > start
}

// found describes what is at the current position for an error message.
func (p *scanner) found() string {
	if p.eof() {
		return "end of input"
	}
	r := []rune(p.in[p.pos:])[0]
	return strconv.QuoteRune(r)
}

// fail returns a *SyntaxError at byte offset pos (0-based).
func (p *scanner) fail(pos int, msg string) error {
	return &SyntaxError{What: p.what, Input: p.in, Column: pos + 1, Msg: msg}
}

// GateResult is one gate evaluated against the wave's metrics, for the
// decision and for status display.
type GateResult struct {
	Gate Gate `json:"gate"`
	// Value is the measured value; meaningless when Missing.
	Value float64 `json:"value"`
	// Passed is true when the value is present and satisfies the gate.
	Passed bool `json:"passed"`
	// Missing is true when the metric has no data yet. A missing metric
	// never passes; the Machine counts it as failed once the soak ends, and
	// pauses the rollout (see the package comment).
	Missing bool `json:"missing,omitempty"`
}

// String returns e.g. "p95_latency_ms<50: 72.4 (failed)" or
// "error_rate<0.01: no data". The value is rounded for reading as
// FormatValue does; status output, reasons and history all show it so.
func (r GateResult) String() string {
	if r.Missing {
		return r.Gate.String() + ": no data"
	}
	verdict := "passed"
	if !r.Passed {
		verdict = "failed"
	}
	return fmt.Sprintf("%s: %s (%s)", r.Gate, r.Gate.FormatValue(r.Value), verdict)
}

// valueDigits is how many significant digits FormatValue shows at least.
const valueDigits = 4

// FormatValue returns v, a measured value of g's metric, for reading: whole
// numbers (counts) as they are, other values with four significant digits
// (all of a value's integer digits, e.g. 1234.5 ms as 1235) in plain decimal
// notation, as the thresholds are written: a ratio such as error_rate as a
// fraction ("0.0123"), latencies in milliseconds ("0.36"). When the rounded
// value would compare with the threshold otherwise than v does (0.0100004
// against error_rate<=0.01), more digits are shown, so that the number never
// contradicts the verdict.
func (g Gate) FormatValue(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	digits := valueDigits
	if v != 0 {
		digits = max(digits, int(math.Floor(math.Log10(math.Abs(v))))+1)
	}
	for ; digits < 17; digits++ {
		r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', digits, 64), 64)
		if err == nil && g.Check(r) == g.Check(v) {
			return strconv.FormatFloat(r, 'f', -1, 64)
		}
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// Evaluate checks every gate against m and returns one result per gate, in
// order. It does not decide anything: see Machine for when a missing metric
// counts as a failure.
func Evaluate(gates []Gate, m Metrics) []GateResult {
	out := make([]GateResult, len(gates))
	for i, g := range gates {
		v, ok := m[g.Metric]
		if !ok || math.IsNaN(v) {
			out[i] = GateResult{Gate: g, Missing: true}
			continue
		}
		out[i] = GateResult{Gate: g, Value: v, Passed: g.Check(v)}
	}
	return out
}
