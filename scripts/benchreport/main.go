// Command benchreport runs the benchmarks and writes BENCHMARKS.md and the
// plots under docs/bench/; `make bench` runs it after `make build`. See
// package internal/benchreport.
//
//	go run ./scripts/benchreport -rounds 7 -agents 100,1000,5000 -budget 18m
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/modelfleet/modelfleet/internal/benchreport"
)

func main() {
	cfg := benchreport.DefaultConfig()
	fs := flag.NewFlagSet("benchreport", flag.ExitOnError)
	fs.StringVar(&cfg.RepoDir, "repo", cfg.RepoDir, "module root directory")
	fs.StringVar(&cfg.Output, "out", cfg.Output, "report to write")
	fs.StringVar(&cfg.PlotPath, "plot", cfg.PlotPath, "convergence plot (PNG) to write")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "times each benchmark runs (alternating)")
	fs.StringVar(&cfg.Benchtime, "benchtime", cfg.Benchtime, "-test.benchtime of the time-looped benchmarks")
	fs.StringVar(&cfg.AgentBin, "agent-bin", cfg.AgentBin, "fleetagent binary (from make build)")
	fs.StringVar(&cfg.HubBin, "hub-bin", cfg.HubBin, "fleethub binary (from make build), whose size is reported")
	agents := fs.String("agents", joinInts(cfg.Agents), "fleet sizes BenchmarkConvergence simulates, comma-separated")
	fs.StringVar(&cfg.ArtifactSize, "artifact-size", cfg.ArtifactSize, "size of the simulated release")
	fs.DurationVar(&cfg.Budget, "budget", cfg.Budget, "time the run may take; fleet sizes beyond it are skipped")
	fs.StringVar(&cfg.Invocation, "invocation", cfg.Invocation, "how the run was started, for the report")
	_ = fs.Parse(os.Args[1:])
	var err error
	if cfg.Agents, err = parseInts(*agents); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: -agents: %v\n", err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := benchreport.Run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
		os.Exit(1)
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
