package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/internal/bus"
)

// WindowSize is the number of samples in one vibration window: the input
// of the example model vibration-anomaly ([1,64] float32).
const WindowSize = 64

// Config is the simulator's configuration (flags in main.go).
type Config struct {
	// Broker is the MQTT broker URL.
	Broker string
	// ClientID is the MQTT client ID (stable: the session survives
	// reconnects).
	ClientID string
	// Username and Password authenticate to the broker when set.
	Username, Password string
	// Root is the first topic level.
	Root string
	// Lines are the production lines, each "site/line".
	Lines []string
	// Machines is the number of machines per line.
	Machines int
	// Interval is the time between two windows of one machine.
	Interval time.Duration
	// FaultRate is the share of windows with an injected fault (0–1).
	FaultRate float64
	// Seed seeds the signal generator.
	Seed uint64
	// Duration stops the simulator after this long; 0 runs until the
	// context ends.
	Duration time.Duration
	// Quiet prints only the summary.
	Quiet bool
}

// DefaultConfig returns the defaults: a broker on this machine (what
// `fleethub dev` runs), two lines of two machines.
func DefaultConfig() Config {
	return Config{
		Broker:    "tcp://127.0.0.1:1883",
		ClientID:  "factory-sim",
		Root:      "factory",
		Lines:     []string{"plant-a/line-1", "plant-a/line-2"},
		Machines:  2,
		Interval:  time.Second,
		FaultRate: 0.1,
		Seed:      1,
	}
}

// Validate reports every problem at once, naming the flag.
func (c Config) Validate() error {
	var errs []error
	if c.Broker == "" {
		errs = append(errs, errors.New("--broker: required, e.g. tcp://127.0.0.1:1883"))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("--client-id: required"))
	}
	if c.Root == "" || strings.ContainsAny(c.Root, "/+#") {
		errs = append(errs, fmt.Errorf("--topic-root %q: one topic level without / + or #", c.Root))
	}
	if len(c.Lines) == 0 {
		errs = append(errs, errors.New("--lines: at least one site/line"))
	}
	for _, l := range c.Lines {
		site, line, ok := strings.Cut(l, "/")
		if !ok || site == "" || line == "" || strings.ContainsAny(l, "+#") || strings.Count(l, "/") != 1 {
			errs = append(errs, fmt.Errorf("--lines: %q is not site/line (e.g. plant-a/line-1)", l))
		}
	}
	if c.Machines < 1 || c.Machines > 99 {
		errs = append(errs, fmt.Errorf("--machines %d: between 1 and 99", c.Machines))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("--interval %s: must be positive", c.Interval))
	}
	if c.FaultRate < 0 || c.FaultRate > 1 {
		errs = append(errs, fmt.Errorf("--fault-rate %g: between 0 and 1", c.FaultRate))
	}
	return errors.Join(errs...)
}

// machine is one simulated machine: its topics and its signal.
type machine struct {
	name   string // site/line/press-NN
	input  string // topic of its vibration windows
	output string // topic its anomaly scores come back on
	hz     float64
	amp    float64
}

func (c Config) machines() []machine {
	var ms []machine
	for li, l := range c.Lines {
		for i := 1; i <= c.Machines; i++ {
			name := fmt.Sprintf("%s/press-%02d", l, i)
			ms = append(ms, machine{
				name:   name,
				input:  c.Root + "/" + name + "/vibration",
				output: c.Root + "/" + name + "/anomaly",
				// Each machine runs at its own speed and load.
				hz:  3 + float64((li*7+i)%5),
				amp: 0.2 + 0.05*float64((li+i)%3),
			})
		}
	}
	return ms
}

// Window returns one window of vibration samples of a machine turning at
// hz cycles per window with amplitude amp, plus sensor noise; with fault, a
// bearing defect adds a high-frequency component and impact spikes. The
// values are what an accelerometer sampled at 64 points per window would
// give, in g.
func Window(rng *rand.Rand, hz, amp float64, fault bool) []float32 {
	w := make([]float32, WindowSize)
	phase := rng.Float64() * 2 * math.Pi
	for i := range w {
		x := float64(i) / WindowSize
		v := amp*math.Sin(2*math.Pi*hz*x+phase) + 0.03*rng.NormFloat64()
		if fault {
			v += 0.8*amp*math.Sin(2*math.Pi*23*x) + 0.1*rng.NormFloat64()
			if i%13 == 5 {
				v += 1.5 // impact of a damaged rolling element
			}
		}
		w[i] = float32(v)
	}
	return w
}

// Result is what a fleetagent binding publishes for one reading (see
// agent/serve.Binding): the model's outputs, or an error.
type Result struct {
	Model       string               `json:"model"`
	Version     string               `json:"version"`
	SourceTopic string               `json:"source_topic"`
	Outputs     map[string][]float64 `json:"outputs"`
	Error       string               `json:"error"`
	Code        int                  `json:"code"`
}

// Score returns the first value of output "score", or of the only output.
func (r Result) Score() (float64, bool) {
	if v := r.Outputs["score"]; len(v) > 0 {
		return v[0], true
	}
	if len(r.Outputs) == 1 {
		for _, v := range r.Outputs {
			if len(v) > 0 {
				return v[0], true
			}
		}
	}
	return 0, false
}

// sim is a running simulator.
type sim struct {
	cfg Config
	out io.Writer

	mu        sync.Mutex // guards all following fields
	lastFault map[string]bool
	published int
	faults    int
	results   map[string]int // by model@version
	errs      int
}

// run connects to the broker, subscribes to the results and publishes a
// window per machine every interval until ctx ends or cfg.Duration passes,
// then prints a summary.
func run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	s := &sim{cfg: cfg, out: out, lastFault: map[string]bool{}, results: map[string]int{}}
	ms := cfg.machines()

	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, err := bus.Connect(connectCtx, bus.Config{Brokers: []string{cfg.Broker}, ClientID: cfg.ClientID,
		Username: cfg.Username, Password: cfg.Password}, bus.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("%w (is the broker running? `fleethub dev` starts one on 127.0.0.1:1883)", err)
	}
	defer cl.Close(nil)
	results := cfg.Root + "/+/+/+/anomaly"
	if err := cl.Subscribe(connectCtx, results, 1, s.onResult); err != nil {
		return err
	}
	fmt.Fprintf(out, "factory: %d machines on %d lines publishing to %s/…/vibration every %s; results from %s\n",
		len(ms), len(cfg.Lines), cfg.Root, cfg.Interval, results)

	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		for _, m := range ms {
			fault := rng.Float64() < cfg.FaultRate
			payload, err := json.Marshal(Window(rng, m.hz, m.amp, fault))
			if err != nil {
				return err
			}
			s.mu.Lock()
			s.lastFault[m.output] = fault
			s.mu.Unlock()
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			err = cl.Publish(pctx, m.input, 1, false, payload)
			pcancel()
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				// The client reconnects on its own; a window lost meanwhile
				// is what a real sensor gateway would lose too.
				log.Warn("publish failed", "topic", m.input, "err", err)
				continue
			}
			s.mu.Lock()
			s.published++
			if fault {
				s.faults++
			}
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			s.summary()
			return nil
		case <-tick.C:
		}
	}
}

// onResult prints one binding result. It runs on the subscription's own
// goroutine (bus.Handler), in arrival order.
func (s *sim) onResult(m bus.Message) {
	var r Result
	name := strings.TrimSuffix(strings.TrimPrefix(m.Topic, s.cfg.Root+"/"), "/anomaly")
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		fmt.Fprintf(s.out, "%s %-24s unreadable result: %v\n", time.Now().Format("15:04:05"), name, err)
		return
	}
	s.mu.Lock()
	fault := s.lastFault[m.Topic]
	if r.Error != "" {
		s.errs++
	} else {
		s.results[r.Model+"@"+r.Version]++
	}
	s.mu.Unlock()
	if s.cfg.Quiet {
		return
	}
	if r.Error != "" {
		fmt.Fprintf(s.out, "%s %-24s %s error %d: %s\n", time.Now().Format("15:04:05"), name, r.Model, r.Code, r.Error)
		return
	}
	score, ok := r.Score()
	if !ok {
		fmt.Fprintf(s.out, "%s %-24s %s@%s: no score in %s\n", time.Now().Format("15:04:05"), name, r.Model, r.Version, m.Payload)
		return
	}
	truth := "normal"
	if fault {
		truth = "fault injected"
	}
	fmt.Fprintf(s.out, "%s %-24s %s@%s score %.3f  (%s)\n", time.Now().Format("15:04:05"), name, r.Model, r.Version, score, truth)
}

// summary prints what was published and received.
func (s *sim) summary() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.results)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.results[k]))
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	fmt.Fprintf(s.out, "factory: published %d windows (%d with a fault); scores received: %s; errors: %d\n",
		s.published, s.faults, strings.Join(parts, ", "), s.errs)
}
