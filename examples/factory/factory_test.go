package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

func TestWindow(t *testing.T) {
	rms := func(w []float32) float64 {
		var s float64
		for _, v := range w {
			s += float64(v) * float64(v)
		}
		return math.Sqrt(s / float64(len(w)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		normal, fault := Window(rng, 4, 0.2, false), Window(rng, 4, 0.2, true)
		if len(normal) != WindowSize || len(fault) != WindowSize {
			t.Fatalf("window sizes %d, %d; want %d", len(normal), len(fault), WindowSize)
		}
		// A fault adds impacts and a bearing tone: clearly more energy.
		if rn, rf := rms(normal), rms(fault); rf < 1.5*rn {
			t.Errorf("window %d: fault RMS %.3f not clearly above normal RMS %.3f", i, rf, rn)
		}
	}
	a := Window(rand.New(rand.NewPCG(7, 7)), 3, 0.25, true)
	b := Window(rand.New(rand.NewPCG(7, 7)), 3, 0.25, true)
	if !slicesEqual(a, b) {
		t.Error("same seed gave different windows")
	}
}

func slicesEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"bad line", func(c *Config) { c.Lines = []string{"plant-a"} }, []string{`--lines: "plant-a"`}},
		{"wildcard line", func(c *Config) { c.Lines = []string{"plant-a/+"} }, []string{"--lines"}},
		{"everything wrong", func(c *Config) {
			c.Broker, c.Root, c.Machines, c.Interval, c.FaultRate = "", "a/b", 0, 0, 2
		}, []string{"--broker", "--topic-root", "--machines", "--interval", "--fault-rate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil, want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--broker", "tcp://b:1883", "--lines", "s1/l1, s2/l2", "--machines", "3", "--interval", "250ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broker != "tcp://b:1883" || strings.Join(cfg.Lines, "|") != "s1/l1|s2/l2" || cfg.Machines != 3 || cfg.Interval != 250*time.Millisecond {
		t.Errorf("parseFlags = %+v", cfg)
	}
	if _, err := parseFlags([]string{"extra"}, io.Discard); err == nil {
		t.Error("parseFlags accepted a positional argument")
	}
}

// TestRunAgainstBroker runs the simulator against a real Mosquitto: it
// must publish 64-value windows on every machine's topic, and print the
// score of a result published the way a fleetagent binding does.
func TestRunAgainstBroker(t *testing.T) {
	broker := testenv.Mosquitto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The test plays the agent: it reads the windows and answers one.
	agent, err := bus.Connect(ctx, bus.Config{Brokers: []string{broker.URL}, ClientID: "test-agent"}, bus.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close(nil)
	windows := make(chan bus.Message, 100)
	if err := agent.Subscribe(ctx, "factory/+/+/+/vibration", 1, func(m bus.Message) {
		select {
		case windows <- m:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}

	out := &testenv.Buffer{}
	cfg := DefaultConfig()
	cfg.Broker, cfg.ClientID = broker.URL, "test-factory"
	cfg.Lines, cfg.Machines, cfg.Interval = []string{"plant-x/line-9"}, 2, 50*time.Millisecond
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, cfg, out, log) }()

	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case m := <-windows:
			var w []float32
			if err := json.Unmarshal(m.Payload, &w); err != nil || len(w) != WindowSize {
				t.Fatalf("window on %s: %v, %d values; want %d", m.Topic, err, len(w), WindowSize)
			}
			seen[m.Topic] = true
		case err := <-done:
			t.Fatalf("simulator ended early: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("windows seen on %v only", seen)
		}
	}
	for _, topic := range []string{"factory/plant-x/line-9/press-01/vibration", "factory/plant-x/line-9/press-02/vibration"} {
		if !seen[topic] {
			t.Errorf("no window on %s (saw %v)", topic, seen)
		}
	}

	result := `{"model":"vibration-anomaly","version":"9.9.9","source_topic":"factory/plant-x/line-9/press-02/vibration","outputs":{"score":[0.875]},"shapes":{"score":[1,1]}}`
	want := "plant-x/line-9/press-02"
	for !strings.Contains(out.String(), "vibration-anomaly@9.9.9 score 0.875") {
		if err := agent.Publish(ctx, "factory/plant-x/line-9/press-02/anomaly", 1, false, []byte(result)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the score was not printed:\n%s", out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	printed := out.String()
	if !strings.Contains(printed, want) {
		t.Errorf("printed result does not name the machine %s:\n%s", want, printed)
	}
	if !strings.Contains(printed, "factory: published ") || !strings.Contains(printed, "vibration-anomaly@9.9.9 ") {
		t.Errorf("no summary with the received version:\n%s", printed)
	}
}
