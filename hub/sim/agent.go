package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// Phases a simulated agent reports, the same strings as the real agent's
// (agent/state) in report.Model.Phase. "connected" is the simulator's own
// label for an agent that has not received an assignment yet.
const (
	phaseConnected   = "connected"
	phaseDownloading = "downloading"
	phaseWarming     = "warming"
	phaseActive      = "active"
	phaseFailed      = "failed"
)

// publishTimeout bounds one publish, as in the real agent.
const publishTimeout = 30 * time.Second

// progressEvery is how often a download republishes its progress, as the
// real agent does (at most once a second).
const progressEvery = time.Second

// simAgent is one simulated device: its own MQTT session, its own trust
// state (manifest.Verifier) and its own reported state. Assignments are
// handled one at a time on the goroutine of the bus subscription; the
// simulator reads the agent's progress through status.
type simAgent struct {
	id       string
	labels   map[string]string
	topics   bus.Topics
	verifier *manifest.Verifier
	fetcher  *fetch.Fetcher
	perAgent bool // the blob store is the agent's own: delete the blob once active
	target   func() string
	log      *slog.Logger
	done     chan struct{} // closed when the target version is active

	mu        sync.Mutex // guards all following fields
	client    *bus.Client
	seq       uint64
	accepted  []byte
	model     string
	rm        report.Model
	phase     string
	lastErr   string
	doneAt    time.Time
	gotAt     time.Time // when the first assignment naming the target arrived
	announced bool      // the first connection was announced
	closed    bool
}

// connect opens the agent's MQTT session, subscribes to the root and its
// assignment and announces itself (online, then an empty state report),
// as the real agent does on start. ctx bounds the connection attempt, life
// the handling of assignments.
func (a *simAgent) connect(ctx, life context.Context, cfg bus.Config) error {
	online := &bus.Message{Topic: a.topics.Online(a.id), Payload: []byte("false"), QoS: 1, Retained: true}
	c, err := bus.Connect(ctx, cfg, bus.Options{Will: online, Logger: a.log, OnConnect: func() {
		// After a reconnect: announce again, like the real agent. The
		// first connection is announced by connect, once subscribed.
		a.mu.Lock()
		again := a.announced && !a.closed
		a.mu.Unlock()
		if again {
			a.announce(context.Background())
		}
	}})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.client = c
	a.phase = phaseConnected
	a.mu.Unlock()
	if err := c.Subscribe(ctx, a.topics.Root(), 1, a.onRoot); err != nil {
		return err
	}
	if err := c.Subscribe(ctx, a.topics.Assignment(a.id), 1, func(m bus.Message) { a.onAssignment(life, m) }); err != nil {
		return err
	}
	if err := a.announce(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	a.announced = true
	a.mu.Unlock()
	return nil
}

// announce publishes online=true and the current state.
func (a *simAgent) announce(ctx context.Context) error {
	a.mu.Lock()
	c := a.client
	a.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := c.Publish(pctx, a.topics.Online(a.id), 1, true, []byte("true")); err != nil {
		return fmt.Errorf("device %s: publish online: %w", a.id, err)
	}
	return a.publishState(ctx)
}

// onRoot applies a newer signed root, as the real agent does; the retained
// copy of the root it already trusts is ignored.
func (a *simAgent) onRoot(m bus.Message) {
	if len(m.Payload) == 0 || bytes.Equal(bytes.TrimSpace(m.Payload), bytes.TrimSpace(a.verifier.RootJSON())) {
		return
	}
	if _, err := a.verifier.UpdateRoot(m.Payload); err != nil && !errors.Is(err, manifest.ErrRollback) {
		a.log.Warn("rejected root", "device", a.id, "err", err)
	}
}

// onAssignment verifies and installs an assignment: downloading (with
// progress), warming, active, each published on the state topic, and an
// "installed" event, like the real agent minus the ONNX Runtime session.
func (a *simAgent) onAssignment(ctx context.Context, m bus.Message) {
	if len(m.Payload) == 0 || ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	same := bytes.Equal(m.Payload, a.accepted)
	a.mu.Unlock()
	if same {
		return
	}
	va, err := a.verifier.VerifyAssignment(m.Payload)
	if err != nil {
		if errors.Is(err, manifest.ErrRollback) {
			return // a replayed or re-encoded earlier assignment
		}
		a.setErr(fmt.Sprintf("rejected assignment: %v", err))
		a.log.Warn("rejected assignment", "device", a.id, "err", err)
		return
	}
	if err := a.verifier.Accept(va); err != nil {
		a.setErr(fmt.Sprintf("accept assignment: %v", err))
		return
	}
	a.mu.Lock()
	a.seq, a.accepted = va.Assignment.Sequence, bytes.Clone(m.Payload)
	a.mu.Unlock()

	var vm *manifest.VerifiedModel
	for i := range va.Models {
		if va.Models[i].Entry.Mode == manifest.ModeActive {
			vm = &va.Models[i]
			break
		}
	}
	if vm == nil {
		a.setModel("", report.Model{}, phaseConnected)
		_ = a.publishState(ctx)
		return
	}
	name, version := vm.Manifest.Name, vm.Manifest.Version
	a.mu.Lock()
	if version == a.target() && a.gotAt.IsZero() {
		a.gotAt = time.Now()
	}
	if a.rm.Version == version && a.model == name {
		a.mu.Unlock()
		_ = a.publishState(ctx) // a refresh of what runs: report the new sequence
		return
	}
	prev := a.rm.Version
	a.mu.Unlock()

	a.setModel(name, report.Model{Version: prev, Phase: phaseDownloading, Pending: version}, phaseDownloading)
	_ = a.publishState(ctx)
	art := vm.Artifact
	var lastPub atomic.Int64 // unix nanoseconds of the last progress report
	lastPub.Store(time.Now().UnixNano())
	res, err := a.fetcher.Fetch(ctx, fetch.Artifact{Bucket: art.Bucket(), Object: art.Object(), SHA256: art.SHA256, Size: art.Size},
		func(done, total int64) {
			// Like the real agent: at most once a second, synchronously, so
			// a progress report can never overtake the final one.
			last := lastPub.Load()
			if done >= total || time.Now().UnixNano()-last < int64(progressEvery) || !lastPub.CompareAndSwap(last, time.Now().UnixNano()) {
				return
			}
			a.mu.Lock()
			a.rm.Progress = &report.Progress{Done: done, Total: total}
			a.mu.Unlock()
			_ = a.publishState(ctx)
		})
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		a.setModel(name, report.Model{Version: prev, Phase: phaseFailed, Pending: version, Error: err.Error()}, phaseFailed)
		a.setErr(err.Error())
		_ = a.publishState(ctx)
		return
	}
	a.setModel(name, report.Model{Version: prev, Phase: phaseWarming, Pending: version}, phaseWarming)
	_ = a.publishState(ctx)

	a.setModel(name, report.Model{Version: version, Phase: phaseActive, Previous: prev, Provider: "cpu", Loaded: true}, phaseActive)
	if err := a.publishState(ctx); err != nil {
		return
	}
	now := time.Now()
	if a.perAgent {
		// Each agent's blob is its own copy; keep the disk use of a large
		// run bounded.
		_ = os.Remove(res.Path)
	}
	a.event(ctx, report.Event{Type: report.EventInstalled, Model: name, Version: version})
	if version == a.target() {
		a.mu.Lock()
		if a.doneAt.IsZero() {
			a.doneAt = now
			close(a.done)
		}
		a.mu.Unlock()
	}
}

func (a *simAgent) setModel(name string, rm report.Model, phase string) {
	a.mu.Lock()
	a.model, a.rm, a.phase = name, rm, phase
	a.mu.Unlock()
}

func (a *simAgent) setErr(msg string) {
	a.mu.Lock()
	a.lastErr = msg
	a.mu.Unlock()
}

// status returns the agent's phase, its last error, when it received the
// target version's assignment and when it finished (zero while not).
func (a *simAgent) status() (phase, lastErr string, gotAt, doneAt time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.phase, a.lastErr, a.gotAt, a.doneAt
}

// publishState publishes the retained state report and waits for the
// broker's acknowledgement.
func (a *simAgent) publishState(ctx context.Context) error {
	a.mu.Lock()
	st := report.State{
		Schema: report.Schema, Device: a.id, Time: time.Now().UTC(), Labels: a.labels, Sequence: a.seq,
		Runtime: report.Runtime{Variants: []string{"cpu"}}, Models: map[string]report.Model{},
	}
	if a.model != "" {
		st.Models[a.model] = a.rm
	}
	client := a.client
	a.mu.Unlock()
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := client.Publish(pctx, a.topics.State(a.id), 1, true, b); err != nil {
		a.setErr(fmt.Sprintf("publish state: %v", err))
		return fmt.Errorf("device %s: publish state: %w", a.id, err)
	}
	return nil
}

// event publishes one event (QoS 1, not retained).
func (a *simAgent) event(ctx context.Context, ev report.Event) {
	ev.Schema, ev.Device, ev.Time = report.Schema, a.id, time.Now().UTC()
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	a.mu.Lock()
	c := a.client
	a.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := c.Publish(pctx, a.topics.Events(a.id), 1, false, b); err != nil {
		a.log.Debug("publish event", "device", a.id, "err", err)
	}
}

// close ends the session cleanly, publishing online=false first.
func (a *simAgent) close() {
	a.mu.Lock()
	a.closed = true
	c := a.client
	a.mu.Unlock()
	if c != nil {
		c.Close(&bus.Message{Topic: a.topics.Online(a.id), Payload: []byte("false"), QoS: 1, Retained: true})
	}
}
