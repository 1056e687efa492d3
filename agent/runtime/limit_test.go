package runtime

import (
	"context"
	"errors"
	goruntime "runtime"
	"testing"
)

func TestLimiter(t *testing.T) {
	l := NewLimiter(2, 1)
	var releases []func()
	for i := range 3 { // 2 running + 1 waiting fit; the waiter blocks, so take it in a goroutine
		if i == 2 {
			break
		}
		r, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		releases = append(releases, r)
	}
	got := make(chan error, 1)
	go func() {
		r, err := l.Acquire(context.Background())
		if err == nil {
			r()
		}
		got <- err
	}()
	// Probe only once the waiter is queued: a probe that took the last
	// queue slot first would make the waiter itself fail with ErrBusy, and
	// the probes would then never see a full queue.
	for len(l.queue) < cap(l.queue) {
		goruntime.Gosched()
	}
	if _, err := l.Acquire(canceled()); !errors.Is(err, ErrBusy) {
		t.Fatalf("fourth acquire: %v, want ErrBusy", err)
	}
	releases[0]()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	releases[1]()
	if r, err := NewLimiter(0, 0).Acquire(context.Background()); err != nil {
		t.Fatalf("unlimited: %v", err)
	} else {
		r()
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
