package benchreport

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Convergence is one result of BenchmarkConvergence (package hub/sim):
// one rollout to Agents simulated agents with MQTT sessions against a real
// Mosquitto and downloads from a real MinIO, timed from the rollout's
// start.
type Convergence struct {
	Agents         int
	ArtifactBytes  int64
	Download       string
	ConnectSeconds float64
	TotalSeconds   float64
	P50Seconds     float64
	P99Seconds     float64
	MaxSeconds     float64
	GoroutinesPeak int
	// RSSPeakBytes is the benchmark process's peak (agents and hub core);
	// BrokerRSSPeakBytes is Mosquitto's.
	RSSPeakBytes       int64
	BrokerRSSPeakBytes int64
	S3BytesServed      int64
}

// convergenceBench is the name of the benchmark; its sub-benchmark is
// named after the download mode.
const convergenceBench = "BenchmarkConvergence"

// Units BenchmarkConvergence reports with b.ReportMetric.
const (
	unitAgents        = "agents"
	unitArtifactBytes = "artifact-bytes"
	unitConnect       = "connect-s"
	unitTotal         = "total-s"
	unitP50           = "p50-s"
	unitP99           = "p99-s"
	unitMax           = "max-s"
	unitGoroutines    = "goroutines-peak"
	unitRSS           = "rss-peak-bytes"
	unitBrokerRSS     = "broker-rss-peak-bytes"
	unitS3Served      = "s3-bytes-served"
)

// ConvergenceResult extracts the BenchmarkConvergence result from a run's
// parsed output. A result without agents, missing one of the times or
// with a negative one is an error.
func ConvergenceResult(out Output) (Convergence, error) {
	var c Convergence
	var res *Result
	for i := range out.Results {
		if name := out.Results[i].Name; name == convergenceBench || strings.HasPrefix(name, convergenceBench+"/") {
			res = &out.Results[i]
		}
	}
	if res == nil {
		return c, fmt.Errorf("no %s result in the output", convergenceBench)
	}
	_, c.Download, _ = strings.Cut(res.Name, "/")
	m := res.Metrics
	if m[unitAgents] <= 0 {
		return c, fmt.Errorf("%s reported no %s", res.Name, unitAgents)
	}
	for _, unit := range []string{unitTotal, unitP50, unitP99, unitMax} {
		v, ok := m[unit]
		if !ok {
			return c, fmt.Errorf("%s reported no %s", res.Name, unit)
		}
		if v < 0 {
			return c, fmt.Errorf("%s reported a negative %s: %v", res.Name, unit, v)
		}
	}
	c.Agents = int(m[unitAgents])
	c.ArtifactBytes = int64(m[unitArtifactBytes])
	c.ConnectSeconds, c.TotalSeconds = m[unitConnect], m[unitTotal]
	c.P50Seconds, c.P99Seconds, c.MaxSeconds = m[unitP50], m[unitP99], m[unitMax]
	c.GoroutinesPeak = int(m[unitGoroutines])
	c.RSSPeakBytes, c.BrokerRSSPeakBytes = int64(m[unitRSS]), int64(m[unitBrokerRSS])
	c.S3BytesServed = int64(m[unitS3Served])
	return c, nil
}

// ConvergenceRun is the outcome for one fleet size: a result, or a note
// saying why there is none.
type ConvergenceRun struct {
	Agents int
	Result *Convergence
	// WallSeconds is how long the benchmark ran, Mosquitto's and MinIO's
	// start included.
	WallSeconds float64
	// Note explains a skipped or failed size.
	Note string
	// Command is the command line run, empty when skipped.
	Command string
	// Output is the tail of the benchmark's output when it failed.
	Output string
}

// Simulator runs BenchmarkConvergence's test binary (built from
// ConvergenceScenario's package) for fleet sizes within a time budget.
type Simulator struct {
	// Bin is the test binary.
	Bin string
	// Dir is the directory it runs in, the package's, as go test does.
	Dir string
	// Shown is how commands show Bin, e.g. "$BENCHBIN/convergence.test";
	// empty shows Bin.
	Shown string
	// ArtifactSize is the release's size, e.g. "10MiB".
	ArtifactSize string
}

// Run simulates each size in ascending order until the deadline. Before a
// size it estimates the run's time by scaling the previous size's wall
// time linearly and skips the size, with a note, when the estimate
// exceeds the time left. A failing size is noted and the next one tried.
func (s Simulator) Run(ctx context.Context, sizes []int, deadline time.Time) []ConvergenceRun {
	sizes = slices.Clone(sizes)
	slices.Sort(sizes)
	var runs []ConvergenceRun
	var lastN int
	var lastWall float64
	for _, n := range sizes {
		left := time.Until(deadline)
		if lastN > 0 {
			est := time.Duration(lastWall * float64(n) / float64(lastN) * float64(time.Second))
			if est > left {
				runs = append(runs, ConvergenceRun{Agents: n, Note: fmt.Sprintf(
					"skipped: scaling the %d-agent run (%.0f s) linearly estimates %.0f s, more than the %.0f s left of the time budget",
					lastN, lastWall, est.Seconds(), max(0, left.Seconds()))})
				continue
			}
		}
		if left <= 0 {
			runs = append(runs, ConvergenceRun{Agents: n, Note: "skipped: the time budget is used up"})
			continue
		}
		run := s.runOne(ctx, n, left)
		runs = append(runs, run)
		if run.Result != nil {
			lastN, lastWall = n, run.WallSeconds
		}
	}
	return runs
}

func (s Simulator) runOne(ctx context.Context, n int, limit time.Duration) ConvergenceRun {
	sc := ConvergenceScenario(n, s.ArtifactSize)
	args := sc.Args()
	run := ConvergenceRun{Agents: n, Command: fmt.Sprintf("(cd %s && %s%s %s)", sc.Package, envPrefix(sc.Env),
		cmp.Or(s.Shown, s.Bin), shellQuote(args))}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Bin, args...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), sc.Env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	err := cmd.Run()
	run.WallSeconds = time.Since(start).Seconds()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		run.Note = fmt.Sprintf("stopped after %.0f s: the time budget ran out", run.WallSeconds)
		return run
	}
	out, perr := Parse(bytes.NewReader(buf.Bytes()))
	if perr == nil && err == nil && !out.Failed {
		c, cerr := ConvergenceResult(out)
		if cerr == nil {
			run.Result = &c
			return run
		}
		perr = cerr
	}
	if reason, ok := skipped(out); ok {
		run.Note = "skipped: " + reason
		return run
	}
	if err == nil {
		err = perr
	}
	run.Note = fmt.Sprintf("failed (%v): %s", err, failureLine(buf.String()))
	run.Output = tailString(buf.String(), 3000)
	return run
}

// skipped returns the reason of the convergence benchmark's skip.
func skipped(out Output) (string, bool) {
	for _, sk := range out.Skips {
		if strings.HasPrefix(sk.Name, convergenceBench) {
			return sk.Reason, true
		}
	}
	return "", false
}

// failureLine returns the line of a failed benchmark's output that says
// what went wrong: the first message after a "--- FAIL" line, a Go panic's
// message, or else the last line.
func failureLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "--- FAIL") && i+1 < len(lines) {
			return shorten(skipReason(lines[i+1]))
		}
	}
	return lastLine(s)
}

func shorten(l string) string {
	if len(l) > 300 {
		l = l[:300] + "…"
	}
	return l
}

// lastLine returns the line of a command's stderr that says what went
// wrong: a Go panic's message, or else the last line.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic: ") {
			lines = lines[:i+1]
			break
		}
	}
	return shorten(strings.TrimSpace(lines[len(lines)-1]))
}

// ConvergencePlot draws total and p99 seconds against the number of
// agents, with a dashed line of linear scaling through the smallest
// fleet's total.
func ConvergencePlot(runs []ConvergenceRun) Plot {
	var n, total, p99 []float64
	for _, r := range runs {
		if r.Result == nil {
			continue
		}
		n = append(n, float64(r.Result.Agents))
		total = append(total, r.Result.TotalSeconds)
		p99 = append(p99, r.Result.P99Seconds)
	}
	p := Plot{
		Title:  "Rollout convergence",
		XLabel: "agents",
		YLabel: "seconds",
		Series: []Series{
			{Name: "total (hub marks rollout succeeded)", Color: ColorBlue, X: n, Y: total},
			{Name: "p99 agent active", Color: ColorOrange, X: n, Y: p99},
		},
	}
	if len(n) > 0 && n[0] > 0 {
		perAgent := total[0] / n[0]
		last := n[len(n)-1]
		p.Series = append(p.Series, Series{
			Name: fmt.Sprintf("linear from %.0f agents", n[0]), Color: ColorGrey, Dashed: true,
			X: []float64{0, last}, Y: []float64{0, perAgent * last},
		})
	}
	return p
}
