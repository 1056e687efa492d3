package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/report"
)

// subscribe registers the ingest handlers for every device's online, state,
// telemetry and events topics. The bus runs each subscription's handler on
// its own goroutine, in order, so the store writes happen there and never
// on paho's network goroutine.
//
// Retained online and state messages are replayed by the broker on every
// (re)subscription; Mosquitto may cut that replay short (max_queued_messages),
// so the store, not the replay, is the hub's memory: a device whose retained
// state was not replayed keeps its stored state until it reports again.
func (h *Hub) subscribe(ctx context.Context, c *bus.Client) error {
	for _, k := range []struct {
		kind string
		qos  byte
	}{
		{bus.KindOnline, 1},
		{bus.KindState, 1},
		{bus.KindTelemetry, 0},
		{bus.KindEvents, 1},
	} {
		filter := h.topics.AllDevices(k.kind)
		if err := c.Subscribe(ctx, filter, k.qos, h.ingestHandler(ctx, k.kind)); err != nil {
			return fmt.Errorf("subscribe %s: %w", filter, err)
		}
	}
	return nil
}

// ingestHandler returns the handler of one kind of device message.
func (h *Hub) ingestHandler(ctx context.Context, kind string) bus.Handler {
	return func(m bus.Message) {
		device, k, _, ok := h.topics.ParseDevice(m.Topic)
		if !ok || k != kind {
			h.log.Debug("ignored message on unexpected topic", "topic", m.Topic)
			return
		}
		if len(m.Payload) == 0 {
			return // a cleared retained message
		}
		h.counters.receive(kind)
		if int64(len(m.Payload)) > h.cfg.MaxPayloadBytes {
			h.counters.reject(kind, RejectOversized)
			h.log.Warn("dropped oversized device message", "device", device, "kind", kind,
				"bytes", len(m.Payload), "max_bytes", h.cfg.MaxPayloadBytes)
			return
		}
		if err := h.ingest(ctx, device, kind, m); err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errMalformed) {
				h.counters.reject(kind, RejectMalformed)
			} else {
				h.counters.reject(kind, RejectStore)
			}
			h.log.Warn("could not ingest device message", "device", device, "kind", kind, "err", err)
		}
	}
}

// ingest stores one device message received now.
func (h *Hub) ingest(ctx context.Context, device, kind string, m bus.Message) error {
	st, err := h.store()
	if err != nil {
		return err
	}
	now := h.now()
	// A retained message replayed on subscription may be old: it registers
	// the device but does not prove it is alive now.
	seen := func() error {
		if m.Retained {
			return nil
		}
		return st.UpsertDevice(ctx, device, now)
	}
	switch kind {
	case bus.KindOnline:
		var online bool
		switch strings.TrimSpace(string(m.Payload)) {
		case "true":
			online = true
		case "false":
		default:
			return fmt.Errorf("%w: online payload %q is neither true nor false", errMalformed, truncate(m.Payload))
		}
		return st.SetOnline(ctx, device, online, now)
	case bus.KindState:
		var s report.State
		if err := json.Unmarshal(m.Payload, &s); err != nil {
			return fmt.Errorf("state payload: %w: %w", errMalformed, err)
		}
		if !h.newerState(device, s) {
			h.log.Debug("dropped state report older than one already ingested", "device", device, "sequence", s.Sequence, "time", s.Time)
			h.counters.reject(kind, RejectStale)
			return nil
		}
		if s.Device != "" && s.Device != device {
			h.log.Warn("state payload names another device; the topic wins", "device", device, "payload_device", s.Device)
		}
		// SetDeviceState marks the device seen in the same transaction: a
		// second write for seen() would double the cost of every report.
		if err := st.SetDeviceState(ctx, device, s, now); err != nil {
			return err
		}
		h.wake()
		return nil
	case bus.KindTelemetry:
		var t report.Telemetry
		if err := json.Unmarshal(m.Payload, &t); err != nil {
			return fmt.Errorf("telemetry payload: %w: %w", errMalformed, err)
		}
		if err := st.AddTelemetry(ctx, device, t); err != nil {
			return err
		}
		return seen()
	case bus.KindEvents:
		var e report.Event
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			return fmt.Errorf("events payload: %w: %w", errMalformed, err)
		}
		if e.Time.IsZero() {
			e.Time = now
		}
		if _, err := st.AddEvent(ctx, store.EventFromReport(device, e)); err != nil {
			return err
		}
		h.wake()
		return seen()
	}
	return nil
}

// truncate returns at most 64 bytes of b for a log message.
func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// stateMark is the newest state report ingested from a device.
type stateMark struct {
	sequence uint64
	time     time.Time
}

// newerState reports whether s is at least as new as every state report
// ingested from device so far, and records it if so. The bus may hand
// messages of one subscription to the handler out of order (paho runs each
// message on its own goroutine before the bus queues it), and a state
// report overtaken by its successor would otherwise overwrite it in the
// store: the accepted sequence only grows, and within one sequence the
// device's clock orders the reports.
func (h *Hub) newerState(device string, s report.State) bool {
	h.ingestMu.Lock()
	defer h.ingestMu.Unlock()
	last, ok := h.lastState[device]
	if ok && (s.Sequence < last.sequence || s.Sequence == last.sequence && s.Time.Before(last.time)) {
		return false
	}
	h.lastState[device] = stateMark{sequence: s.Sequence, time: s.Time}
	return true
}
