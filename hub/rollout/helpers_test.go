package rollout

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// MustParseGate parses a gate or fails the test.
func MustParseGate(tb testing.TB, s string) Gate {
	tb.Helper()
	g, err := ParseGate(s)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// MustGates parses gates or fails the test.
func MustGates(tb testing.TB, ss ...string) []Gate {
	tb.Helper()
	out := make([]Gate, len(ss))
	for i, s := range ss {
		out[i] = MustParseGate(tb, s)
	}
	return out
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	oldVersion = "1.0.0"
	newVersion = "2.0.0"
)

// sim drives a Machine the way the hub's controller does: a fake clock, a
// fleet of matching devices whose agents the test controls, and the
// driver's bookkeeping of published assignments. After every step it
// checks that Step is idempotent and did not modify its input.
type sim struct {
	t   *testing.T
	m   Machine
	st  State
	now time.Time
	// fleet is every device matching the selector, with its report.
	fleet   map[string]DeviceReport
	metrics Metrics
	// roundTrip stores the machine and state as JSON between steps and
	// rebuilds them, as a hub restarting before every step would.
	roundTrip bool
	// assigned counts Assign actions per device; log holds every action.
	assigned map[string]int
	log      []Action
	// seq numbers commands as the store would.
	seq uint64
}

func newSim(t *testing.T, spec Spec, devices int) *sim {
	t.Helper()
	s := &sim{
		t: t, m: Machine{ID: "r-" + t.Name(), Spec: spec}, now: t0,
		fleet: map[string]DeviceReport{}, metrics: Metrics{}, assigned: map[string]int{},
	}
	for _, d := range fleet(devices) {
		s.fleet[d] = DeviceReport{Version: oldVersion}
	}
	return s
}

// baseSpec is a valid spec with the test's waves and gates.
func baseSpec(waves []int, gates ...Gate) Spec {
	return Spec{
		Model: "vibration", Version: newVersion, Selector: map[string]string{"site": "plant-a"},
		Waves: waves, Soak: 5 * time.Minute, Gates: gates, Mode: ModeActive, OnFailure: OnFailurePause,
		InstallTimeout: 10 * time.Minute,
	}
}

func (s *sim) step(cmd Command) []Action {
	s.t.Helper()
	in := Input{Now: s.now, Devices: maps.Clone(s.fleet), Metrics: maps.Clone(s.metrics), Command: cmd}
	if cmd != "" {
		s.seq++
		in.CommandSeq = s.seq
	}
	m, st := s.m, s.st
	if s.roundTrip {
		m, st = jsonRoundTrip(s.t, m), jsonRoundTrip(s.t, st)
	}
	before := mustJSON(s.t, st)
	next, acts := m.Step(st, in)
	if after := mustJSON(s.t, st); after != before {
		s.t.Fatalf("Step modified its input state:\n%s\n%s", before, after)
	}
	again, acts2 := m.Step(next, in)
	if len(acts2) != 0 {
		s.t.Fatalf("Step is not idempotent: the same input again gave %s", describe(acts2))
	}
	if a, b := mustJSON(s.t, next), mustJSON(s.t, again); a != b {
		s.t.Fatalf("Step is not idempotent: state changed on the same input:\n%s\n%s", a, b)
	}
	for _, a := range acts {
		if a, ok := a.(*Assign); ok {
			if a.Model != s.m.Spec.Model || a.Version != s.m.Spec.Version || a.Mode != s.m.Spec.WithDefaults().Mode {
				s.t.Fatalf("Assign of the wrong model: %+v", a)
			}
			if !slices.IsSorted(a.Devices) || len(a.Devices) == 0 {
				s.t.Fatalf("Assign devices not sorted or empty: %v", a.Devices)
			}
			for _, d := range a.Devices {
				s.assigned[d]++
			}
		}
	}
	s.st = next
	s.log = append(s.log, acts...)
	return acts
}

// install makes every assigned device that has not answered yet report the
// new version active, as healthy agents would.
func (s *sim) install() {
	for id, d := range s.st.Devices {
		rep, ok := s.fleet[id]
		if ok && rep.Phase == "" && d.Result == ResultInstalling {
			s.fleet[id] = DeviceReport{Version: newVersion, Previous: rep.Version, Phase: PhaseActive}
		}
	}
}

// report sets the phase devices report for the new version.
func (s *sim) report(phase string, ids ...string) {
	for _, id := range ids {
		rep := s.fleet[id]
		rep.Phase = phase
		if phase == PhaseActive {
			rep.Version, rep.Previous = newVersion, rep.Version
		}
		s.fleet[id] = rep
	}
}

// run steps every interval with healthy agents until done holds or the
// step limit is reached.
func (s *sim) run(interval time.Duration, done func() bool) {
	s.t.Helper()
	for range 2000 {
		if done() {
			return
		}
		s.step("")
		s.install()
		s.now = s.now.Add(interval)
	}
	s.t.Fatalf("not done after 2000 steps; state %s, reason %q", s.st.Status, s.st.Reason)
}

func (s *sim) status(want Status) func() bool { return func() bool { return s.st.Status == want } }

func (s *sim) wantStatus(want Status) {
	s.t.Helper()
	if s.st.Status != want {
		s.t.Fatalf("status = %s (reason %q), want %s\nhistory:\n%s", s.st.Status, s.st.Reason, want, s.history())
	}
}

func (s *sim) history() string {
	var b strings.Builder
	for _, e := range s.st.History {
		fmt.Fprintf(&b, "  %s %s\n", e.Time.Sub(t0), e.Text)
	}
	return b.String()
}

// assigns returns the Assign actions in acts.
func assigns(acts []Action) []*Assign {
	var out []*Assign
	for _, a := range acts {
		if a, ok := a.(*Assign); ok {
			out = append(out, a)
		}
	}
	return out
}

func rollbacks(acts []Action) []*RollBack {
	var out []*RollBack
	for _, a := range acts {
		if a, ok := a.(*RollBack); ok {
			out = append(out, a)
		}
	}
	return out
}

func describe(acts []Action) string {
	var parts []string
	for _, a := range acts {
		switch a := a.(type) {
		case *Assign:
			parts = append(parts, fmt.Sprintf("Assign(wave %d, %s %s, %v)", a.Wave, a.Version, a.Mode, a.Devices))
		case *RollBack:
			parts = append(parts, fmt.Sprintf("RollBack(%s, %v)", a.Mode, a.Previous)) // fmt sorts map keys
		case *Record:
			parts = append(parts, fmt.Sprintf("Record(%s)", a.Text))
		}
	}
	return strings.Join(parts, "\n")
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // gates read better with a literal "<"
	if err := enc.Encode(v); err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func jsonRoundTrip[T any](tb testing.TB, v T) T {
	tb.Helper()
	var out T
	dec := json.NewDecoder(strings.NewReader(mustJSON(tb, v)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		tb.Fatal(err)
	}
	return out
}

func hasEntry(st State, substr string) bool {
	return slices.ContainsFunc(st.History, func(e Entry) bool { return strings.Contains(e.Text, substr) })
}

func jsonUnmarshalStrict(s string, v any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
