package agent

import (
	"context"
	"encoding/json"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// publishTimeout bounds one publish; a broker outage must not stall the
// reconcile loop (the retained state is republished on reconnect).
const publishTimeout = 5 * time.Second

// onConnect announces the device and republishes its state after every
// (re)connection.
func (a *Agent) onConnect() {
	a.mu.Lock()
	started := a.started
	a.mu.Unlock()
	if !started {
		return // Run publishes once its subscriptions are in place
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := a.client.Publish(ctx, a.topics.Online(a.cfg.DeviceID), 1, true, []byte("true")); err != nil {
		a.log.Warn("publish online", "err", err)
	}
	a.publishState(ctx)
}

// stateReport builds the retained state payload.
func (a *Agent) stateReport() report.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := report.State{
		Schema:   report.Schema,
		Device:   a.cfg.DeviceID,
		Time:     time.Now().UTC(),
		Labels:   a.cfg.Labels,
		Sequence: a.verifier.State().Sequence,
		Runtime:  report.Runtime{ORTVersion: a.ortVer, Variants: a.variants()},
		Models:   map[string]report.Model{},
	}
	for name, m := range a.st.Models {
		rm := report.Model{Phase: string(m.Phase), Error: m.Error}
		if sv := a.served[name]; sv != nil {
			sv.mu.Lock()
			rm.Provider, rm.Loaded = sv.provider, sv.loaded
			sv.mu.Unlock()
		}
		if m.Active != nil {
			rm.Version = m.Active.Version
		}
		if m.Pending != nil {
			rm.Pending = m.Pending.Version
			if p, ok := a.progress[name]; ok {
				rm.Progress = &p
			}
		}
		if m.Previous != nil {
			rm.Previous = m.Previous.Version
		}
		r.Models[name] = rm
	}
	return r
}

// publishState publishes the retained state report. Failures are logged:
// the report is sent again on the next change and on reconnect.
func (a *Agent) publishState(ctx context.Context) {
	a.mu.Lock()
	client := a.client
	a.lastPub = time.Now()
	a.mu.Unlock()
	if client == nil {
		return
	}
	b, err := json.Marshal(a.stateReport())
	if err != nil {
		a.log.Error("encode state report", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := client.Publish(ctx, a.topics.State(a.cfg.DeviceID), 1, true, b); err != nil {
		a.log.Warn("publish state", "err", err)
	}
}

// event publishes one event (QoS 1, not retained).
func (a *Agent) event(ctx context.Context, ev report.Event) {
	ev.Schema, ev.Device, ev.Time = report.Schema, a.cfg.DeviceID, time.Now().UTC()
	a.mu.Lock()
	client := a.client
	a.mu.Unlock()
	if client == nil {
		return
	}
	b, err := json.Marshal(ev)
	if err != nil {
		a.log.Error("encode event", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := client.Publish(ctx, a.topics.Events(a.cfg.DeviceID), 1, false, b); err != nil {
		a.log.Warn("publish event", "type", ev.Type, "err", err)
	}
}
