package runtime

import (
	"context"
	"errors"
	"fmt"
)

// ErrBusy means a model already runs its maximum of concurrent requests and
// its wait queue is full: the request was refused rather than queued
// without bound. Clients should retry later.
var ErrBusy = errors.New("model busy")

// Limiter bounds the requests one model runs at once (Concurrency) and the
// requests waiting for a turn (Queue). The zero value does not limit.
// It is safe for concurrent use.
type Limiter struct {
	run   chan struct{}
	queue chan struct{}
}

// NewLimiter returns a limiter that runs at most concurrency requests at
// once and lets at most queue more wait; concurrency ≤ 0 means no limit.
func NewLimiter(concurrency, queue int) *Limiter {
	if concurrency <= 0 {
		return &Limiter{}
	}
	return &Limiter{run: make(chan struct{}, concurrency), queue: make(chan struct{}, concurrency+max(queue, 0))}
}

// Acquire waits for a turn and returns the function that gives it back. It
// fails at once with ErrBusy when the queue is full, or with ctx's error
// while waiting.
func (l *Limiter) Acquire(ctx context.Context) (release func(), err error) {
	if l == nil || l.run == nil {
		return func() {}, nil
	}
	select {
	case l.queue <- struct{}{}:
	default:
		return nil, fmt.Errorf("%w: %d requests running and %d waiting", ErrBusy, cap(l.run), cap(l.queue)-cap(l.run))
	}
	select {
	case l.run <- struct{}{}:
		return func() { <-l.run; <-l.queue }, nil
	case <-ctx.Done():
		<-l.queue
		return nil, ctx.Err()
	}
}
