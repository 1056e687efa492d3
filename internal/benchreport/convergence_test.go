package benchreport

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseConvergence(t *testing.T) {
	data, err := os.ReadFile("testdata/simulate.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConvergence(data)
	if err != nil {
		t.Fatal(err)
	}
	want := Convergence{Agents: 1000, ArtifactBytes: 10 << 20, Download: "shared", ConnectSeconds: 2.1, TotalSeconds: 9.5,
		P50Seconds: 4.2, P99Seconds: 8.7, MaxSeconds: 9.1, GoroutinesPeak: 12000, RSSPeakBytes: 734003200}
	if c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}
	for _, bad := range []string{``, `{}`, `{"agents":0}`, `{"agents":3,"p99_seconds":-1}`, `[1]`} {
		if _, err := ParseConvergence([]byte(bad)); err == nil {
			t.Errorf("ParseConvergence(%q) succeeded", bad)
		}
	}
}

func TestConvergencePlot(t *testing.T) {
	runs := []ConvergenceRun{
		{Agents: 100, Result: &Convergence{Agents: 100, TotalSeconds: 2, P99Seconds: 1.5}},
		{Agents: 1000, Result: &Convergence{Agents: 1000, TotalSeconds: 9.5, P99Seconds: 8.7}},
		{Agents: 5000, Note: "skipped"},
	}
	p := ConvergencePlot(runs)
	if len(p.Series) != 3 {
		t.Fatalf("%d series, want total, p99 and the linear reference", len(p.Series))
	}
	lin := p.Series[2]
	if !lin.Dashed || lin.X[1] != 1000 || lin.Y[1] != 20 {
		t.Errorf("linear reference = %+v, want dashed to (1000, 20)", lin)
	}
	data, err := p.PNG()
	if err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, data)
	if n := countColor(img, p.Area(), ColorOrange); n < 20 {
		t.Errorf("%d p99 pixels, want a line", n)
	}
}

func TestSimulatorSkipsBeyondBudget(t *testing.T) {
	// A stand-in for fleethub that prints a result: pure logic of the
	// budget, not a simulation.
	dir := t.TempDir()
	fake := dir + "/fleethub"
	script := "#!/bin/sh\nsleep 1\necho '{\"agents\": 10, \"total_seconds\": 1, \"p99_seconds\": 1, \"p50_seconds\": 1, \"max_seconds\": 1}'\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := Simulator{HubBin: fake, ArtifactSize: "1MiB"}
	runs := s.Run(t.Context(), []int{1000000, 10}, time.Now().Add(30*time.Second))
	if len(runs) != 2 || runs[0].Agents != 10 || runs[0].Result == nil {
		t.Fatalf("runs = %+v, want the 10-agent run first with a result", runs)
	}
	if runs[1].Result != nil || !strings.HasPrefix(runs[1].Note, "skipped: scaling the 10-agent run") {
		t.Errorf("1,000,000 agents: %+v, want skipped by the linear estimate", runs[1])
	}
	if !strings.Contains(runs[0].Command, "simulate --agents 10 --artifact-size 1MiB -o json") {
		t.Errorf("command = %q", runs[0].Command)
	}

	failing := dir + "/failing"
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'simulate: broker unreachable' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	runs = Simulator{HubBin: failing, ArtifactSize: "1MiB"}.Run(t.Context(), []int{5}, time.Now().Add(time.Minute))
	if len(runs) != 1 || runs[0].Result != nil || !strings.Contains(runs[0].Note, "broker unreachable") {
		t.Errorf("failing run = %+v, want a note with its error", runs)
	}
}
