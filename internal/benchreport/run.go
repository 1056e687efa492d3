package benchreport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Scenario is one benchmark invocation: a package's test binary run with
// a -test.bench pattern, once per round.
type Scenario struct {
	// Key names the scenario in the report and the binary's file name.
	Key string
	// Package is the import path relative to the module, e.g. "./agent/fetch".
	Package string
	// Bench is the -test.bench pattern.
	Bench string
	// Benchtime is -test.benchtime, e.g. "1s" or "3x".
	Benchtime string
	// Env adds variables to the binary's environment.
	Env []string
}

// Args returns the test binary's arguments.
func (s Scenario) Args() []string {
	return []string{"-test.run", "^$", "-test.bench", s.Bench, "-test.benchtime", s.Benchtime,
		"-test.count", "1", "-test.benchmem", "-test.timeout", "15m"}
}

// Runs holds each scenario's parsed output, one per round, in round order.
type Runs map[string][]Output

// Samples returns one value per round of unit in the result called name
// (NaN for a round without it), so that two figures' samples pair up by
// round.
func (r Runs) Samples(key, name, unit string) []float64 {
	var out []float64
	for _, o := range r[key] {
		v := math.NaN()
		for _, res := range o.Results {
			if res.Name == name {
				if m, ok := res.Metrics[unit]; ok {
					v = m
				}
			}
		}
		out = append(out, v)
	}
	return out
}

// Skipped returns the first skip reason reported for name (or a prefix
// of it) in the scenario's runs.
func (r Runs) Skipped(key, name string) (string, bool) {
	for _, o := range r[key] {
		for _, s := range o.Skips {
			if s.Name == name || strings.HasPrefix(name, s.Name+"/") {
				return s.Reason, true
			}
		}
	}
	return "", false
}

// Runner builds test binaries and runs scenarios, recording every command.
type Runner struct {
	// RepoDir is the module's root directory.
	RepoDir string
	// BinDir receives the test binaries.
	BinDir string
	// Logger reports progress.
	Logger *slog.Logger
	// Commands lists every command run, in order, for the report, with
	// $BENCHBIN standing for BinDir.
	Commands []string
	// Failures lists scenario runs that failed, with the output's tail.
	Failures []string
}

func (r *Runner) binary(s Scenario) string { return filepath.Join(r.BinDir, s.Key+".test") }

// Build compiles the scenario's test binary once (go test -c), so rounds
// measure the benchmarks, not the compiler.
func (r *Runner) Build(ctx context.Context, s Scenario) error {
	args := []string{"test", "-c", "-o", r.binary(s), s.Package}
	r.Commands = append(r.Commands, fmt.Sprintf("go test -c -o $BENCHBIN/%s.test %s", s.Key, s.Package))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = r.RepoDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the benchmarks of %s: %w\n%s", s.Package, err, out)
	}
	return nil
}

// Run runs the scenario's test binary once in its package directory, as
// go test does, and parses its output. A failing binary is recorded in
// Failures and its parsed results (often partial) are still returned.
func (r *Runner) Run(ctx context.Context, s Scenario) (Output, error) {
	args := s.Args()
	dir := filepath.Join(r.RepoDir, filepath.FromSlash(s.Package))
	r.Commands = append(r.Commands, fmt.Sprintf("(cd %s && %s$BENCHBIN/%s.test %s)", s.Package, envPrefix(s.Env),
		s.Key, shellQuote(args)))
	cmd := exec.CommandContext(ctx, r.binary(s), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), s.Env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	runErr := cmd.Run()
	out, err := Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return out, fmt.Errorf("%s: %w", s.Key, err)
	}
	r.Logger.Info("benchmark run", "scenario", s.Key, "seconds", time.Since(start).Round(time.Second).Seconds(), "results", len(out.Results))
	if runErr != nil || out.Failed {
		r.Failures = append(r.Failures, fmt.Sprintf("%s (%v):\n%s", s.Key, runErr, tailString(buf.String(), 3000)))
	}
	return out, ctx.Err()
}

func envPrefix(env []string) string {
	if len(env) == 0 {
		return ""
	}
	return strings.Join(env, " ") + " "
}

// shellQuote joins args for display, quoting those a shell would split or
// expand.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " $^*?|()[]'\"\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
