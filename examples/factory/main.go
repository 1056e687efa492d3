// Command factory simulates the machines of a factory for modelfleet: it
// publishes windows of vibration readings over MQTT, one topic per machine,
// with a fault injected now and then, and prints the anomaly scores that
// fleetagent's topic bindings publish back.
//
// It stands for the factory systems of DESIGN.md's picture: it knows nothing
// of modelfleet but two MQTT topic patterns,
//
//	{root}/{site}/{line}/{machine}/vibration   64 float32 samples, a JSON array (published here)
//	{root}/{site}/{line}/{machine}/anomaly     the binding's result (printed here)
//
// and an agent bound to "{root}/plant-a/line-1/+/vibration" with the output
// template "{root}/{2}/{3}/{4}/anomaly" closes the loop. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "factory:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(ctx, cfg, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "factory:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into a Config and checks it.
func parseFlags(args []string, errOut io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("factory", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		fmt.Fprintf(errOut, `Usage: factory [flags]

Simulates factory lines publishing vibration windows over MQTT and prints the
anomaly scores that fleetagent bindings publish back.

  go run ./examples/factory --broker tcp://127.0.0.1:1883 \
    --lines plant-a/line-1,plant-b/line-1 --machines 2 --interval 500ms

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "MQTT broker URL (tcp://host:1883, ssl://host:8883)")
	fs.StringVar(&cfg.ClientID, "client-id", cfg.ClientID, "MQTT client ID; keep it stable, and unique per running simulator")
	fs.StringVar(&cfg.Username, "username", "", "MQTT username")
	fs.StringVar(&cfg.Password, "password", "", "MQTT password (env FACTORY_MQTT_PASSWORD)")
	fs.StringVar(&cfg.Root, "topic-root", cfg.Root, "first level of every topic")
	lines := fs.String("lines", strings.Join(cfg.Lines, ","), "production lines as site/line, comma-separated")
	fs.IntVar(&cfg.Machines, "machines", cfg.Machines, "machines per line (press-01, press-02, …)")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "time between two windows of one machine")
	fs.Float64Var(&cfg.FaultRate, "fault-rate", cfg.FaultRate, "share of windows with an injected fault, 0–1")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed of the signals (same seed, same readings)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (0: run until interrupted)")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "print only the summary, not every score")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q (all settings are flags; see --help)", fs.Args())
	}
	if cfg.Password == "" {
		cfg.Password = os.Getenv("FACTORY_MQTT_PASSWORD")
	}
	cfg.Lines = nil
	for _, l := range strings.Split(*lines, ",") {
		if l = strings.TrimSpace(l); l != "" {
			cfg.Lines = append(cfg.Lines, l)
		}
	}
	return cfg, cfg.Validate()
}
