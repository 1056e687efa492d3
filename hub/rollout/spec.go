package rollout

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/manifest"
)

// Modes of a rollout: the mode of the assignment entries it issues.
const (
	// ModeActive makes the rollout's version the one that serves.
	ModeActive = manifest.ModeActive
	// ModeShadow runs the rollout's version beside the serving one and
	// compares outputs (gate on shadow_agreement); the serving version is
	// not touched. A shadow rollout that succeeds removes its shadows; see
	// the package comment.
	ModeShadow = manifest.ModeShadow
)

// What a failed gate does.
const (
	// OnFailurePause stops the rollout (status paused) until an operator
	// resumes, rolls back or aborts it.
	OnFailurePause = "pause"
	// OnFailureRollback puts every device the rollout assigned back on the
	// version it ran before (status rolled-back).
	OnFailureRollback = "rollback"
)

// Defaults filled in by Spec.WithDefaults.
const (
	// DefaultWaves is the wave list when none is given.
	DefaultWaves = "1,10,50,100"
	// DefaultSoak is the soak time the CLI offers; WithDefaults leaves Soak
	// alone because 0 (evaluate as soon as the wave has installed) is valid.
	DefaultSoak = 5 * time.Minute
	// DefaultInstallTimeout is how long a device may take to report the
	// version active before it counts as an install failure.
	DefaultInstallTimeout = 15 * time.Minute
	// DefaultGate is the only gate when none is given: no failed install.
	DefaultGate = "install_failures<=0"
)

// Spec is what an operator asks for: which model version goes to which
// devices, in which steps, and what must hold before each next step. It is
// immutable for the life of a rollout.
type Spec struct {
	// Model and Version name a released model version.
	Model   string `json:"model"`
	Version string `json:"version"`
	// Selector matches device labels; every pair must be present. An empty
	// selector matches every device.
	Selector map[string]string `json:"selector,omitempty"`
	// Waves are cumulative percentages of the matching devices, strictly
	// increasing, the last one 100, e.g. [1 10 50 100].
	Waves []int `json:"waves"`
	// Soak is how long a wave runs, once its devices have installed, before
	// its gates are evaluated. 0 evaluates at once.
	Soak time.Duration `json:"soak_ns"`
	// Gates must all pass at the end of each wave's soak.
	Gates []Gate `json:"gates,omitempty"`
	// Mode is ModeActive or ModeShadow.
	Mode string `json:"mode"`
	// OnFailure is OnFailurePause or OnFailureRollback.
	OnFailure string `json:"on_failure"`
	// InstallTimeout is how long each device has, from its assignment, to
	// report the version active; after that it counts as an install failure.
	InstallTimeout time.Duration `json:"install_timeout_ns"`
}

// WithDefaults returns a copy of s with the omitted fields filled in: Waves
// DefaultWaves, Mode active, OnFailure pause, InstallTimeout
// DefaultInstallTimeout, and Gates [DefaultGate] when there are none. Soak
// is kept as given. The Machine applies it before every use of the spec.
func (s Spec) WithDefaults() Spec {
	if len(s.Waves) == 0 {
		s.Waves, _ = ParseWaves(DefaultWaves)
	} else {
		s.Waves = slices.Clone(s.Waves)
	}
	if s.Mode == "" {
		s.Mode = ModeActive
	}
	if s.OnFailure == "" {
		s.OnFailure = OnFailurePause
	}
	if s.InstallTimeout == 0 {
		s.InstallTimeout = DefaultInstallTimeout
	}
	if len(s.Gates) == 0 {
		g, _ := ParseGate(DefaultGate)
		s.Gates = []Gate{g}
	} else {
		s.Gates = slices.Clone(s.Gates)
	}
	return s
}

// Validate checks every rule of the spec as given (call WithDefaults first
// to fill omitted fields) and returns a *SpecError listing all problems, or
// nil. The error wraps ErrInvalidSpec.
func (s Spec) Validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if err := manifest.ValidateName(s.Model); err != nil {
		add("model: %s", strings.TrimPrefix(err.Error(), manifest.ErrMalformed.Error()+": "))
	}
	if _, err := manifest.ParseSemver(s.Version); err != nil {
		add("version: %s", strings.TrimPrefix(err.Error(), manifest.ErrMalformed.Error()+": "))
	}
	keys := make([]string, 0, len(s.Selector))
	for k := range s.Selector {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v := s.Selector[k]; k == "" || strings.ContainsAny(k, "=,") || strings.ContainsAny(v, "=,") {
			add("selector: %q=%q: keys must be non-empty and keys and values may not contain '=' or ','", k, v)
		}
	}
	if len(s.Waves) == 0 {
		add("waves: none given; want e.g. %s", DefaultWaves)
	} else {
		for _, p := range wavesProblems(s.Waves) {
			add("waves: %s", p)
		}
	}
	if s.Soak < 0 {
		add("soak: %s is negative", s.Soak)
	}
	if s.InstallTimeout <= 0 {
		add("install timeout: %s; want a positive duration, e.g. %s", s.InstallTimeout, DefaultInstallTimeout)
	}
	for i, g := range s.Gates {
		if err := g.validate(); err != nil {
			add("gates[%d]: %s", i, strings.TrimPrefix(err.Error(), ErrInvalidSpec.Error()+": "))
		} else if g.Metric == MetricShadowAgreement && s.Mode != ModeShadow {
			add("gates[%d]: %s needs mode %s: an active rollout has no shadow traffic to compare", i, g, ModeShadow)
		} else if g.Metric == MetricErrorRate && s.Mode == ModeShadow {
			add("gates[%d]: %s needs mode %s: a shadow's answers are never served, and a shadow run that fails counts as a disagreement; gate on %s instead", i, g, ModeActive, MetricShadowAgreement)
		}
	}
	if s.Soak == 0 {
		for _, g := range s.Gates {
			if g.Metric != MetricInstallFailures {
				add("soak: 0 with gate %s: it would be evaluated before a single request was measured; give a soak of several telemetry intervals, e.g. %s", g, DefaultSoak)
				break
			}
		}
	}
	switch s.Mode {
	case ModeActive, ModeShadow:
	default:
		add("mode: %q; want %q or %q", s.Mode, ModeActive, ModeShadow)
	}
	switch s.OnFailure {
	case OnFailurePause, OnFailureRollback:
	default:
		add("on failure: %q; want %q or %q", s.OnFailure, OnFailurePause, OnFailureRollback)
	}
	if len(problems) > 0 {
		return &SpecError{Problems: problems}
	}
	return nil
}

// ParseWaves parses a comma-separated list of cumulative percentages, e.g.
// "1,10,50,100": whole numbers from 1 to 100, strictly increasing, the last
// one 100. Spaces around the numbers are allowed. It returns a *SyntaxError
// (wrapping ErrInvalidSpec) naming the column of the first problem.
func ParseWaves(s string) ([]int, error) {
	p := scanner{what: "waves", in: s}
	if len(s) > 1024 {
		return nil, p.fail(1024, "longer than 1024 bytes")
	}
	if strings.TrimSpace(s) == "" {
		return nil, p.fail(0, "empty; want cumulative percentages, e.g. "+DefaultWaves)
	}
	var waves []int
	for {
		p.spaces()
		at := p.pos
		if !p.digits() {
			if !p.eof() && p.peek() == ',' || p.eof() {
				return nil, p.fail(at, "empty wave; want a percentage between 1 and 100")
			}
			return nil, p.fail(at, fmt.Sprintf("expected a whole percentage, found %s", p.found()))
		}
		num := s[at:p.pos]
		p.spaces()
		if !p.eof() && p.peek() != ',' {
			return nil, p.fail(p.pos, fmt.Sprintf("expected ',' after %s, found %s (percentages are whole numbers)", num, p.found()))
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 100 {
			return nil, p.fail(at, fmt.Sprintf("%s is not a percentage between 1 and 100", num))
		}
		if len(waves) > 0 && n <= waves[len(waves)-1] {
			return nil, p.fail(at, fmt.Sprintf("%d does not increase on %d; waves are cumulative percentages", n, waves[len(waves)-1]))
		}
		waves = append(waves, n)
		if p.eof() {
			break
		}
		p.pos++ // the comma
	}
	if last := waves[len(waves)-1]; last != 100 {
		return nil, p.fail(len(s), fmt.Sprintf("the last wave is %d%%; it must be 100 so every matching device is reached", last))
	}
	return waves, nil
}

// FormatWaves returns waves as ParseWaves reads them, e.g. "1,10,50,100".
func FormatWaves(waves []int) string {
	parts := make([]string, len(waves))
	for i, w := range waves {
		parts[i] = strconv.Itoa(w)
	}
	return strings.Join(parts, ",")
}

// wavesProblems lists what breaks the wave rules in a list built in code.
func wavesProblems(waves []int) []string {
	var out []string
	for i, w := range waves {
		if w < 1 || w > 100 {
			out = append(out, fmt.Sprintf("wave %d is %d%%; want 1 to 100", i+1, w))
		} else if i > 0 && w <= waves[i-1] {
			out = append(out, fmt.Sprintf("wave %d (%d%%) does not increase on wave %d (%d%%)", i+1, w, i, waves[i-1]))
		}
	}
	if len(waves) > 0 && waves[len(waves)-1] != 100 {
		out = append(out, fmt.Sprintf("the last wave is %d%%; it must be 100", waves[len(waves)-1]))
	}
	return out
}

// Matches reports whether labels carry every key=value pair of selector.
// An empty selector matches every device.
func Matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
