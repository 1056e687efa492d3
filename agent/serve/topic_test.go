package serve

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFiltersOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/#", "a", true}, // # also matches the parent level
		{"a/#", "a/b/c", true},
		{"#", "x/y", true},
		{"a/+", "a/b/c", false},
		{"+/+", "a", false},
		{"modelfleet/v1/#", "+/v1/x", true},
		{"modelfleet/v1/#", "+/anomaly", false},
		{"modelfleet/v1/#", "modelfleet", false},
		{"a/b/c", "a/+/#", true},
	} {
		got := filtersOverlap(strings.Split(tc.a, "/"), strings.Split(tc.b, "/"))
		back := filtersOverlap(strings.Split(tc.b, "/"), strings.Split(tc.a, "/"))
		if got != tc.want || back != tc.want {
			t.Errorf("filtersOverlap(%q, %q) = %v/%v, want %v", tc.a, tc.b, got, back, tc.want)
		}
	}
}

func TestTemplate(t *testing.T) {
	for _, tc := range []struct {
		template, topic string
		want            string
		wantErr         string
	}{
		{template: "factory/line1/anomaly/{4}", topic: "factory/line1/vibration/s7", want: "factory/line1/anomaly/s7"},
		{template: "plant/{2}/score-{4}", topic: "factory/line1/vibration/s7", want: "plant/line1/score-s7"},
		{template: "fixed/topic", topic: "a/b", want: "fixed/topic"},
		{template: "out/{3}", topic: "a/b", wantErr: "refers to level {3}, the input topic has 2 levels"},
		{template: "out/{0}", wantErr: "{1} to {99}"},
		{template: "out/{100}", wantErr: "{1} to {99}"},
		{template: "out/{01}", wantErr: "{1} to {99}"},
		{template: "out/{x}", wantErr: "{1} to {99}"},
		{template: "out/{1", wantErr: "{ without }"},
		{template: "out/1}", wantErr: "} without {"},
		{template: "out/+", wantErr: "wildcard"},
		{template: "out/#", wantErr: "wildcard"},
		{template: "$SYS/x", wantErr: "system topic"},
		{template: "", wantErr: "empty"},
	} {
		tpl, err := parseTemplate(tc.template)
		if err == nil && tc.topic != "" {
			var got string
			got, err = tpl.render(strings.Split(tc.topic, "/"))
			if err == nil && got != tc.want {
				t.Errorf("%q on %q = %q, want %q", tc.template, tc.topic, got, tc.want)
			}
		}
		if tc.wantErr == "" && err != nil {
			t.Errorf("%q: %v", tc.template, err)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%q: error = %v, want one containing %q", tc.template, err, tc.wantErr)
		}
	}
}

func TestCompileBindingsRefuses(t *testing.T) {
	ok := Binding{Model: "vib", Input: "factory/line1/vibration/+", Output: "factory/line1/anomaly/{4}", ErrorTopic: "factory/line1/errors/{4}"}
	with := func(edit func(*Binding)) []Binding { b := ok; edit(&b); return []Binding{b} }
	for _, tc := range []struct {
		name     string
		bindings []Binding
		want     string
	}{
		{"output under the hub prefix", with(func(b *Binding) { b.Output = "modelfleet/v1/devices/d1/telemetry" }), "under the modelfleet prefix"},
		{"output that can be under the hub prefix", with(func(b *Binding) { b.Output = "{1}/v1/x" }), "under the modelfleet prefix"},
		{"error topic under the hub prefix", with(func(b *Binding) { b.ErrorTopic = "modelfleet/v1/errors" }), "error_topic"},
		{"input under the hub prefix", with(func(b *Binding) { b.Input = "modelfleet/v1/devices/+/state" }), "carry the hub's messages"},
		{"input matching everything", with(func(b *Binding) { b.Input = "#" }), "carry the hub's messages"},
		{"output fed back", with(func(b *Binding) { b.Output = "factory/line1/vibration/out" }), "come back as readings"},
		{"error topic fed back", with(func(b *Binding) { b.ErrorTopic = "factory/line1/vibration/{4}" }), "come back as readings"},
		{"level beyond the filter", with(func(b *Binding) { b.Output = "out/{5}" }), "refers to level {5}"},
		{"bad filter", with(func(b *Binding) { b.Input = "factory/#/x" }), "must be the last level"},
		{"partial wildcard", with(func(b *Binding) { b.Input = "factory/line+" }), "whole level"},
		{"bad model name", with(func(b *Binding) { b.Model = "a/b" }), "model:"},
		{"bad format", with(func(b *Binding) { b.Format = "csv" }), `format "csv"`},
		{"bad qos", with(func(b *Binding) { b.QoS = 2 }), "qos 2"},
		{"duplicate", []Binding{ok, ok}, "like bindings[0]"},
		{"feeds another binding", []Binding{ok, {Model: "vib2", Input: "factory/line1/anomaly/+", Output: "factory/line1/deep/{4}"}}, "bindings[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileBindings(tc.bindings, "modelfleet/v1")
			if !errors.Is(err, ErrInvalidBinding) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want ErrInvalidBinding containing %q", err, tc.want)
			}
		})
	}
	rt, err := compileBindings([]Binding{ok, {Model: "vib", Input: "factory/+/raw/#", Output: "factory/{2}/raw-score/{4}", Format: FormatF32LE}}, "modelfleet/v1")
	if err != nil {
		t.Fatalf("valid bindings refused: %v", err)
	}
	if got := rt.filters(); len(got) != 2 {
		t.Errorf("filters = %v", got)
	}
}

// TestPoolSlowModelLeavesWorkers: a model that blocks its runs holds at
// most ModelConcurrency workers, and another model's work still runs.
func TestPoolSlowModelLeavesWorkers(t *testing.T) {
	p := newPool(3, 2, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	release := make(chan struct{})
	var slowRunning, slowMax atomic.Int32
	for range 6 {
		if err := p.submit("slow", job{run: func(context.Context) {
			n := slowRunning.Add(1)
			for m := slowMax.Load(); n > m && !slowMax.CompareAndSwap(m, n); m = slowMax.Load() {
			}
			<-release
			slowRunning.Add(-1)
		}}); err != nil {
			t.Fatal(err)
		}
	}
	var fast sync.WaitGroup
	for range 5 {
		fast.Add(1)
		if err := p.submit("fast", job{run: func(context.Context) { fast.Done() }}); err != nil {
			t.Fatal(err)
		}
	}
	waited := make(chan struct{})
	go func() { fast.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the fast model's work did not run while the slow model was blocked")
	}
	close(release)
	if m := slowMax.Load(); m > 2 {
		t.Errorf("the slow model ran %d jobs at once, limit 2", m)
	}
}

func TestPoolQueueBound(t *testing.T) {
	p := newPool(1, 1, 2)
	block := job{run: func(context.Context) {}}
	for i := range 2 {
		if err := p.submit("m", block); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	err := p.submit("m", block)
	if !errors.Is(err, ErrOverloaded) || statusOf(err) != 503 {
		t.Fatalf("third submit = %v, want ErrOverloaded (503)", err)
	}
	if err := p.submit("other", block); err != nil {
		t.Fatalf("another model's queue is separate: %v", err)
	}
	var dropped atomic.Int32
	if err := p.submit("other", job{run: func(context.Context) {}, drop: func() { dropped.Add(1) }}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.run(ctx) // closes at once: every queued job is dropped or run
	if err := p.submit("m", block); !errors.Is(err, errPoolClosed) {
		t.Errorf("submit after close = %v", err)
	}
}
