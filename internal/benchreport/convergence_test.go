package benchreport

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConvergenceResult(t *testing.T) {
	f, err := os.Open("testdata/convergence.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ConvergenceResult(out)
	if err != nil {
		t.Fatal(err)
	}
	want := Convergence{Agents: 1000, ArtifactBytes: 10 << 20, Download: "shared", ConnectSeconds: 2.1, TotalSeconds: 9.5,
		P50Seconds: 4.2, P99Seconds: 8.7, MaxSeconds: 9.1, GoroutinesPeak: 12000, RSSPeakBytes: 734003200,
		BrokerRSSPeakBytes: 12 << 20, S3BytesServed: 10 << 20}
	if c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}

	bad := []struct {
		name, output, wantErr string
	}{
		{"no output", "", "no BenchmarkConvergence result"},
		{"other benchmark", "BenchmarkDownload/1MiB 1 5 ns/op\n", "no BenchmarkConvergence result"},
		{"no agents", "BenchmarkConvergence/shared 1 5 ns/op 1 total-s 1 p50-s 1 p99-s 1 max-s\n", "no agents"},
		{"no total", "BenchmarkConvergence/shared 1 5 ns/op 3 agents 1 p50-s 1 p99-s 1 max-s\n", "no total-s"},
		{"negative p99", "BenchmarkConvergence/shared 1 5 ns/op 3 agents 1 total-s 1 p50-s -1 p99-s 1 max-s\n", "negative p99-s"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Parse(strings.NewReader(tt.output))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ConvergenceResult(out); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ConvergenceResult error = %v, want one containing %q", err, tt.wantErr)
			}
		})
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

// writeScript writes an executable shell script standing in for the
// benchmark binary: pure logic of the budget and of reading its output,
// not a simulation.
func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSimulatorSkipsBeyondBudget(t *testing.T) {
	// The stand-in echoes the fleet size it was given, as the benchmark does.
	fake := writeScript(t, "convergence.test", "sleep 1\necho \"BenchmarkConvergence/shared-2  1  1000 ns/op  $MODELFLEET_SIM_AGENTS agents  1 total-s  1 p50-s  1 p99-s  1 max-s\"\necho PASS\n")
	s := Simulator{Bin: fake, Dir: t.TempDir(), Shown: "$BENCHBIN/convergence.test", ArtifactSize: "1MiB"}
	runs := s.Run(t.Context(), []int{1000000, 10}, time.Now().Add(30*time.Second))
	if len(runs) != 2 || runs[0].Agents != 10 || runs[0].Result == nil || runs[0].Result.Agents != 10 {
		t.Fatalf("runs = %+v, want the 10-agent run first with its result", runs)
	}
	if runs[0].Result.Download != "shared" {
		t.Errorf("download = %q, want shared from the sub-benchmark's name", runs[0].Result.Download)
	}
	if runs[1].Result != nil || !strings.HasPrefix(runs[1].Note, "skipped: scaling the 10-agent run") {
		t.Errorf("1,000,000 agents: %+v, want skipped by the linear estimate", runs[1])
	}
	for _, want := range []string{"(cd ./hub/sim && MODELFLEET_SIM_AGENTS=10 MODELFLEET_SIM_ARTIFACT_SIZE=1MiB $BENCHBIN/convergence.test",
		"-test.bench '^BenchmarkConvergence$' -test.benchtime 1x"} {
		if !strings.Contains(runs[0].Command, want) {
			t.Errorf("command = %q, want it to contain %q", runs[0].Command, want)
		}
	}
}

func TestSimulatorNotesFailuresAndSkips(t *testing.T) {
	tests := []struct {
		name, script, wantNote string
		wantOutput             bool
	}{
		{
			name: "failure names the benchmark's message",
			script: "echo 'time=x level=INFO msg=\"connecting agents\"'\necho '--- FAIL: BenchmarkConvergence/shared'\n" +
				"echo '    bench_test.go:99: simulate 5 agents: agents did not converge: 2 of 5 agents did not report'\necho FAIL\nexit 1\n",
			wantNote:   "failed (exit status 1): simulate 5 agents: agents did not converge",
			wantOutput: true,
		},
		{
			name:     "skip is a note, not a failure",
			script:   "echo '--- SKIP: BenchmarkConvergence/shared'\necho '    mosquitto.go:1: mosquitto not found: run make deps'\necho PASS\n",
			wantNote: "skipped: mosquitto not found: run make deps",
		},
		{
			name:       "passing without a result",
			script:     "echo PASS\n",
			wantNote:   "no BenchmarkConvergence result",
			wantOutput: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := writeScript(t, "convergence.test", tt.script)
			runs := Simulator{Bin: bin, Dir: t.TempDir(), ArtifactSize: "1MiB"}.Run(t.Context(), []int{5}, time.Now().Add(time.Minute))
			if len(runs) != 1 || runs[0].Result != nil {
				t.Fatalf("runs = %+v, want one without a result", runs)
			}
			if !strings.Contains(runs[0].Note, tt.wantNote) {
				t.Errorf("note = %q, want it to contain %q", runs[0].Note, tt.wantNote)
			}
			if (runs[0].Output != "") != tt.wantOutput {
				t.Errorf("output kept = %q, want kept %v", runs[0].Output, tt.wantOutput)
			}
		})
	}
}

func TestSimulatorStopsAtDeadline(t *testing.T) {
	bin := writeScript(t, "convergence.test", "exec sleep 30\n")
	runs := Simulator{Bin: bin, Dir: t.TempDir(), ArtifactSize: "1MiB"}.Run(t.Context(), []int{5, 10}, time.Now().Add(500*time.Millisecond))
	if len(runs) != 2 || runs[0].Result != nil || !strings.HasPrefix(runs[0].Note, "stopped after") {
		t.Fatalf("runs = %+v, want the first stopped by the budget", runs)
	}
	if runs[1].Result != nil || runs[1].Note != "skipped: the time budget is used up" {
		t.Errorf("second size: %+v, want skipped", runs[1])
	}
}
