package benchreport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/modelfleet/modelfleet/internal/atomicfile"
)

// Config says what a run measures and where it writes.
type Config struct {
	// RepoDir is the module's root; relative paths below are inside it.
	RepoDir string
	// Output is the report, e.g. "BENCHMARKS.md".
	Output string
	// PlotPath is the convergence plot, e.g. "docs/bench/convergence.png".
	PlotPath string
	// Rounds is how many times each benchmark runs.
	Rounds int
	// Benchtime is -test.benchtime of the time-looped benchmarks.
	Benchtime string
	// AgentBin and HubBin are the binaries `make build` made.
	AgentBin, HubBin string
	// Agents are the fleet sizes simulated, ascending.
	Agents []int
	// ArtifactSize is the simulated release's size, e.g. "10MiB".
	ArtifactSize string
	// Budget is the time the whole run may take; fleet sizes that would
	// exceed it are skipped with a note.
	Budget time.Duration
	// Invocation is how the run was started, for the report.
	Invocation string
	// Logger reports progress; nil discards it.
	Logger *slog.Logger
}

// DefaultConfig returns the settings `make bench` uses.
func DefaultConfig() Config {
	return Config{
		RepoDir: ".", Output: "BENCHMARKS.md", PlotPath: "docs/bench/convergence.png",
		Rounds: 7, Benchtime: "1s", AgentBin: "bin/fleetagent", HubBin: "bin/fleethub",
		Agents: []int{100, 1000, 5000}, ArtifactSize: "10MiB", Budget: 18 * time.Minute,
		Invocation: "make bench",
	}
}

// Run measures everything and writes the report and the plot. It returns
// an error only when it could not produce a report; failing or skipped
// benchmarks are reported in it.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Rounds < 1 {
		return errors.New("rounds must be at least 1")
	}
	start := time.Now()
	deadline := start.Add(cfg.Budget)
	repo, err := filepath.Abs(cfg.RepoDir)
	if err != nil {
		return err
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(repo, p)
	}
	agentBin, hubBin := abs(cfg.AgentBin), abs(cfg.HubBin)
	for _, b := range []string{agentBin, hubBin} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (run make build first)", err)
		}
	}
	binDir, err := os.MkdirTemp("", "modelfleet-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)

	r := &Runner{RepoDir: repo, BinDir: binDir, Logger: log}
	scenarios := Scenarios(cfg.Benchtime, agentBin)
	for _, s := range scenarios {
		log.Info("building benchmarks", "scenario", s.Key, "package", s.Package)
		if err := r.Build(ctx, s); err != nil {
			return err
		}
	}
	convScenario := ConvergenceScenario(0, cfg.ArtifactSize)
	if len(cfg.Agents) > 0 {
		log.Info("building benchmarks", "scenario", convScenario.Key, "package", convScenario.Package)
		if err := r.Build(ctx, convScenario); err != nil {
			return err
		}
	}
	machine := DescribeMachine(ctx, repo, agentBin)
	runs := Runs{}
	for round := 1; round <= cfg.Rounds; round++ {
		log.Info("round", "n", round, "of", cfg.Rounds)
		for _, s := range scenarios {
			out, err := r.Run(ctx, s)
			if err != nil {
				return err
			}
			runs[s.Key] = append(runs[s.Key], out)
		}
	}

	var binaries []Binary
	for _, b := range []string{hubBin, agentBin} {
		fi, err := os.Stat(b)
		if err != nil {
			return err
		}
		binaries = append(binaries, Binary{Name: filepath.Base(b), Bytes: fi.Size()})
	}

	sim := Simulator{Bin: r.binary(convScenario), Dir: filepath.Join(repo, filepath.FromSlash(convScenario.Package)),
		Shown: "$BENCHBIN/" + convScenario.Key + ".test", ArtifactSize: cfg.ArtifactSize}
	conv := sim.Run(ctx, cfg.Agents, deadline)
	plot := ConvergencePlot(conv)
	plot.Title += ", " + cfg.ArtifactSize + " artifact"
	for _, c := range conv {
		if c.Command != "" {
			r.Commands = append(r.Commands, c.Command)
		}
		if c.Output != "" {
			r.Failures = append(r.Failures, fmt.Sprintf("%s, %d agents:\n%s", convScenario.Key, c.Agents, c.Output))
		}
		log.Info("convergence", "agents", c.Agents, "wall_seconds", c.WallSeconds, "note", c.Note)
	}
	plotRel := ""
	if png, err := plot.PNG(); err == nil {
		if err := os.MkdirAll(filepath.Dir(abs(cfg.PlotPath)), 0o755); err != nil {
			return err
		}
		if err := atomicfile.Write(abs(cfg.PlotPath), png, 0o644); err != nil {
			return fmt.Errorf("write plot: %w", err)
		}
		if plotRel, err = filepath.Rel(filepath.Dir(abs(cfg.Output)), abs(cfg.PlotPath)); err != nil {
			return err
		}
		plotRel = filepath.ToSlash(plotRel)
	} else if !errors.Is(err, ErrNoData) {
		return err
	}

	goals, sections := Build(Inputs{Runs: runs, Rounds: cfg.Rounds, Binaries: binaries, Convergence: conv,
		ConvergencePlot: plotRel, ArtifactSize: cfg.ArtifactSize})
	rep := Report{
		Machine: machine, Started: start, Duration: time.Since(start),
		Rounds: cfg.Rounds, Invocation: cfg.Invocation, Goals: goals, Sections: sections,
		Commands: r.Commands, Failures: r.Failures,
	}
	if err := atomicfile.Write(abs(cfg.Output), rep.Markdown(), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	log.Info("wrote report", "path", cfg.Output, "seconds", time.Since(start).Round(time.Second).Seconds())
	return nil
}
