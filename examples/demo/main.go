// Command demo runs modelfleet end to end on the embedded defaults, as a
// newcomer would by hand: `fleethub dev`, three `fleetagent run`, a
// simulated factory line, then three releases of a model — a plain
// rollout, a canary with gates, and a broken release that is rolled back
// automatically. It echoes every command before running it (`$ fleethub
// rollout start …`), waits for each expected state with a timeout, and
// stops everything it started when it ends, fails or is interrupted.
//
//	make demo                      # builds, then: go run ./examples/demo
//	go run ./examples/demo --short # shorter soaks, less output
//
// Data and logs stay in .demo/ (emptied at the start of each run). See
// README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	os.Exit(mainExit())
}

func mainExit() int {
	cwd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./examples/demo [flags]   (from the repository root; make demo does it)\n\nFlags:\n")
		fs.PrintDefaults()
	}
	dir := fs.String("dir", ".demo", "directory for the demo's data and logs (emptied first)")
	bin := fs.String("bin", "bin", "directory holding fleethub and fleetagent (make build)")
	short := fs.Bool("short", false, "shorter soaks and less output")
	freePorts := fs.Bool("free-ports", false, "use free ports rather than fleethub dev's defaults (8400, 1883, 9000)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if _, err := os.Stat(filepath.Join(cwd, "examples", "models")); err != nil {
		fmt.Fprintln(os.Stderr, "demo: run it from the repository root (make demo)")
		return 2
	}
	if os.Getenv("MODELFLEET_ORT_LIB") == "" {
		lib := filepath.Join(cwd, ".deps", "lib", "libonnxruntime.so.1")
		if _, err := os.Stat(lib); err != nil {
			fmt.Fprintln(os.Stderr, "demo: the agents need ONNX Runtime: run `make deps` (or set MODELFLEET_ORT_LIB), or use `make demo`")
			return 2
		}
		os.Setenv("MODELFLEET_ORT_LIB", lib)
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(cwd, p)
	}
	cfg := Config{
		Root:       cwd,
		Dir:        abs(*dir),
		FleetHub:   filepath.Join(abs(*bin), "fleethub"),
		FleetAgent: filepath.Join(abs(*bin), "fleetagent"),
		Env:        os.Environ(),
		Short:      *short,
		FreePorts:  *freePorts,
		Out:        os.Stdout,
	}
	// Ctrl-C (or SIGTERM) cancels ctx; Run then stops what it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	return 0
}
