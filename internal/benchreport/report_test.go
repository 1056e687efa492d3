package benchreport

import (
	"os"
	"strings"
	"testing"
	"time"
)

// fixtureRuns parses testdata/bench.txt as the output of every scenario
// in each of two rounds.
func fixtureRuns(t *testing.T) Runs {
	t.Helper()
	f, err := os.Open("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	runs := Runs{}
	for _, key := range []string{KeyDownload, KeyFrontEnds, KeyVerification, KeyIngest, KeyFootprint} {
		runs[key] = []Output{out, out}
	}
	return runs
}

func TestBuildGoals(t *testing.T) {
	goals, sections := Build(Inputs{Runs: fixtureRuns(t), Rounds: 2, ArtifactSize: "10MiB",
		Binaries: []Binary{{Name: "fleetagent", Bytes: 12 << 20}},
		Convergence: []ConvergenceRun{
			{Agents: 100, Result: &Convergence{Agents: 100, Download: "shared", TotalSeconds: 2, P99Seconds: 1}},
			{Agents: 1000, Result: &Convergence{Agents: 1000, Download: "shared", TotalSeconds: 10, P99Seconds: 8}},
			{Agents: 5000, Note: "skipped: budget"},
		},
		ConvergencePlot: "docs/bench/convergence.png",
	})
	byWhat := map[string]Goal{}
	for _, g := range goals {
		byWhat[g.What] = g
	}
	tests := []struct {
		what, status, reason string
	}{
		{"Download 1 MiB, single stream", StatusMet, ""},
		{"Download 1 MiB, parallel ranges", StatusNotMeasured, "below 32 MiB the fetcher uses one stream"},
		{"Download 64 MiB, single stream", StatusNotMeasured, "no result in the benchmark output"},
		{"Inference in-process, agent, context.Background", StatusNotMeasured, "the scenario did not run"},
		{"Verification, warm", StatusMet, ""},
		{"Verification, cold", StatusNotMet, "median 3,846/s < 10,000/s"},
		{"Agent idle RSS, no model", StatusNotMeasured, "skipped: mosquitto not found: run make deps"},
	}
	for _, tt := range tests {
		g, ok := byWhat[tt.what]
		if !ok {
			t.Errorf("no goal %q in %v", tt.what, goals)
			continue
		}
		if g.Status != tt.status || !strings.Contains(g.Reason, tt.reason) {
			t.Errorf("%s: %s (%s), want %s (%s)", tt.what, g.Status, g.Reason, tt.status, tt.reason)
		}
	}

	rep := Report{Started: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), Rounds: 2, Invocation: "make bench",
		Goals: goals, Sections: sections, Commands: []string{"go test -c"}, Failures: []string{"ingest: boom"}}
	md := string(rep.Markdown())
	for _, want := range []string{
		"# Benchmarks", "## Machine", "## Goals", "## Download", "## Fleet convergence",
		"| Verification, cold | ≥ 10,000 assignments/s per core | 3,846/s (3,846/s–3,846/s) | not met: median 3,846/s < 10,000/s",
		"| 1000 | shared | 0.00 | 0.00 | 8.00 | 0.00 | 10.00 | 0.50× |",
		"| 5000 | — |", "skipped: budget",
		"![Fleet convergence](docs/bench/convergence.png)",
		"| AddTelemetry, one writer | 2,500 (2,500–2,500) | 3,000 (3,000–3,000) | 0.83× (0.83×–0.83×) |",
		"| OIP over HTTP | 180 (180–180) | 420 (420–420) | 3.10× (3.10×–3.10×) | 2.50× (2.50×–2.50×) | 4,762 (4,762–4,762) | 6,500 (6,500–6,500) | 0.05× (0.05×–0.05×) |",
		"| requests/s, 8 in flight | ÷ in-process, 8 in flight |",
		"## Failures", "ingest: boom", "## Commands",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestSamplesPairByRound(t *testing.T) {
	runs := Runs{"k": {
		{Results: []Result{{Name: "B/a", Metrics: map[string]float64{"x": 1}}, {Name: "B/base", Metrics: map[string]float64{"x": 2}}}},
		{Results: []Result{{Name: "B/base", Metrics: map[string]float64{"x": 4}}}},
		{Results: []Result{{Name: "B/a", Metrics: map[string]float64{"x": 3}}, {Name: "B/base", Metrics: map[string]float64{"x": 3}}}},
	}}
	a, base := runs.Samples("k", "B/a", "x"), runs.Samples("k", "B/base", "x")
	got := Ratios(a, base)
	if len(got) != 2 || got[0] != 0.5 || got[1] != 1 {
		t.Errorf("ratios = %v, want [0.5 1]: the round without B/a is left out, not shifted", got)
	}
}
