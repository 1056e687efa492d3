package serve

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// pool runs the MQTT front end's work on a fixed set of worker goroutines.
// Work is queued per model and taken round-robin across models, and one
// model runs at most perModel jobs at once, so a slow model holds neither
// every worker nor the queue of the others. Both the queues and the
// goroutines are bounded: a full queue refuses work at once.
type pool struct {
	workers   int
	perModel  int
	queueSize int

	mu      sync.Mutex // guards all following fields
	cond    *sync.Cond // signalled when a job is queued, a job ends or the pool closes
	queues  map[string]*modelQueue
	ring    []string // models with queued jobs, in round-robin order
	next    int      // index in ring where the next search starts
	running int
	closed  bool
}

// modelQueue is the queued and running work of one model.
type modelQueue struct {
	jobs    []job
	running int
}

// job is one unit of work. drop is called instead of run when the pool
// closes before the job started.
type job struct {
	run  func(ctx context.Context)
	drop func()
}

func newPool(workers, perModel, queueSize int) *pool {
	p := &pool{workers: workers, perModel: perModel, queueSize: queueSize, queues: map[string]*modelQueue{}}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// submit queues j for model. It fails with ErrOverloaded when the model's
// queue is full and with errPoolClosed after close.
func (p *pool) submit(model string, j job) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPoolClosed
	}
	q := p.queues[model]
	if q == nil {
		q = &modelQueue{}
		p.queues[model] = q
	}
	if len(q.jobs) >= p.queueSize {
		return &plainError{kind: ErrOverloaded, msg: fmt.Sprintf("model %q is busy: %d requests are waiting and %d running on this device; try again later", model, len(q.jobs), q.running)}
	}
	if len(q.jobs) == 0 {
		p.ring = append(p.ring, model)
	}
	q.jobs = append(q.jobs, j)
	p.cond.Signal()
	return nil
}

var errPoolClosed = errors.New("the MQTT front end is stopping")

// take returns the next job a worker may run, waiting for one; ok is false
// once the pool is closed.
func (p *pool) take() (model string, j job, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed {
			return "", job{}, false
		}
		for i := range p.ring {
			k := (p.next + i) % len(p.ring)
			m := p.ring[k]
			q := p.queues[m]
			if q.running >= p.perModel {
				continue
			}
			j = q.jobs[0]
			q.jobs[0] = job{}
			q.jobs = q.jobs[1:]
			q.running++
			p.running++
			if len(q.jobs) == 0 {
				p.ring = append(p.ring[:k], p.ring[k+1:]...)
				p.next = k
			} else {
				p.next = k + 1
			}
			if len(p.ring) > 0 {
				p.next %= len(p.ring)
			} else {
				p.next = 0
			}
			return m, j, true
		}
		p.cond.Wait()
	}
}

// done ends a job taken for model.
func (p *pool) done(model string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.queues[model]
	q.running--
	p.running--
	if q.running == 0 && len(q.jobs) == 0 {
		delete(p.queues, model)
	}
	// A model at its limit may have work that every idle worker skipped.
	p.cond.Broadcast()
}

// run starts the workers and blocks until ctx ends; then it closes the
// pool, drops the jobs still queued, cancels the running ones (through
// ctx) and returns once they have returned.
func (p *pool) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() {
			for {
				model, j, ok := p.take()
				if !ok {
					return
				}
				j.run(ctx)
				p.done(model)
			}
		})
	}
	<-ctx.Done()
	p.mu.Lock()
	p.closed = true
	var dropped []job
	for _, q := range p.queues {
		dropped = append(dropped, q.jobs...)
		q.jobs = nil
	}
	p.ring = nil
	p.cond.Broadcast()
	p.mu.Unlock()
	for _, j := range dropped {
		if j.drop != nil {
			j.drop()
		}
	}
	wg.Wait()
}
