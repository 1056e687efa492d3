package benchreport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Convergence is the JSON `fleethub simulate -o json` prints: one rollout
// to Agents simulated agents, timed from the rollout's start.
type Convergence struct {
	Agents         int     `json:"agents"`
	ArtifactBytes  int64   `json:"artifact_bytes"`
	Download       string  `json:"download"`
	ConnectSeconds float64 `json:"connect_seconds"`
	TotalSeconds   float64 `json:"total_seconds"`
	P50Seconds     float64 `json:"p50_seconds"`
	P99Seconds     float64 `json:"p99_seconds"`
	MaxSeconds     float64 `json:"max_seconds"`
	GoroutinesPeak int     `json:"goroutines_peak"`
	RSSPeakBytes   int64   `json:"rss_peak_bytes"`
}

// ParseConvergence decodes one simulation result. Fields it does not
// know are ignored (the command may report more); a result without
// agents or with negative times is an error.
func ParseConvergence(data []byte) (Convergence, error) {
	var c Convergence
	if err := json.Unmarshal(bytes.TrimSpace(data), &c); err != nil {
		return c, fmt.Errorf("simulation result: %w", err)
	}
	if c.Agents <= 0 {
		return c, fmt.Errorf("simulation result has no agents: %.200s", data)
	}
	for name, v := range map[string]float64{"total_seconds": c.TotalSeconds, "p50_seconds": c.P50Seconds, "p99_seconds": c.P99Seconds, "max_seconds": c.MaxSeconds} {
		if v < 0 {
			return c, fmt.Errorf("simulation result: negative %s %v", name, v)
		}
	}
	return c, nil
}

// ConvergenceRun is the outcome for one fleet size: a result, or a note
// saying why there is none.
type ConvergenceRun struct {
	Agents int
	Result *Convergence
	// WallSeconds is how long the command ran, start-up included.
	WallSeconds float64
	// Note explains a skipped or failed size, or a result that did not
	// converge.
	Note string
	// Command is the command line run, empty when skipped.
	Command string
	// Stderr is the tail of the command's standard error when it failed.
	Stderr string
}

// Simulator runs `fleethub simulate` for fleet sizes within a time budget.
type Simulator struct {
	// HubBin is the fleethub binary.
	HubBin string
	// ArtifactSize is passed as --artifact-size, e.g. "10MiB".
	ArtifactSize string
	// Extra flags for every run, e.g. --download per-agent.
	Extra []string
	// Dir is the directory commands are shown relative to (the module
	// root); empty shows HubBin as given.
	Dir string
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
	args := append([]string{"simulate", "--agents", strconv.Itoa(n), "--artifact-size", s.ArtifactSize, "-o", "json"}, s.Extra...)
	shown := s.HubBin
	if rel, err := filepath.Rel(s.Dir, s.HubBin); s.Dir != "" && err == nil && !strings.HasPrefix(rel, "..") {
		shown = rel
	}
	run := ConvergenceRun{Agents: n, Command: shown + " " + strings.Join(args, " ")}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.HubBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	run.WallSeconds = time.Since(start).Seconds()
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		run.Note = fmt.Sprintf("stopped after %.0f s: the time budget ran out", run.WallSeconds)
		return run
	}
	if stdout.Len() > 0 {
		if c, perr := ParseConvergence(stdout.Bytes()); perr == nil {
			run.Result = &c
			if err != nil {
				run.Note = "did not converge within the command's timeout: " + lastLine(stderr.String())
			}
			return run
		}
	}
	if err != nil {
		run.Note = fmt.Sprintf("failed (%v): %s", err, lastLine(stderr.String()))
		run.Stderr = tailString(stderr.String(), 3000)
		return run
	}
	run.Note = "printed no result: " + lastLine(stdout.String())
	return run
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
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 300 {
		l = l[:300] + "…"
	}
	return l
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
