package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/agent/state"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// loop owns reconciliation: it handles inbox messages in order and runs at
// most one install pass at a time. A new assignment cancels the install in
// progress; partial downloads are kept, so work for an artifact that is still
// wanted resumes where it stopped.
func (a *Agent) loop(ctx context.Context) {
	var (
		cancelInstall context.CancelFunc
		installDone   chan struct{}
		retry         <-chan time.Time
	)
	stopInstall := func() {
		if cancelInstall != nil {
			cancelInstall()
			<-installDone
			cancelInstall, installDone = nil, nil
		}
	}
	startInstall := func() {
		stopInstall()
		ictx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		cancelInstall, installDone = cancel, done
		go func() {
			defer close(done)
			a.installPending(ictx)
		}()
	}
	defer stopInstall()

	if a.hasPending() {
		startInstall()
	}
	for {
		var finished chan struct{}
		if installDone != nil {
			finished = installDone
		}
		select {
		case <-ctx.Done():
			return
		case msg := <-a.inbox:
			changed := false
			switch msg.kind {
			case "root":
				a.handleRoot(ctx, msg.raw)
			default:
				changed = a.handleAssignment(ctx, msg.raw)
			}
			if changed {
				startInstall()
			}
		case <-finished:
			cancelInstall, installDone = nil, nil
			if a.hasPending() {
				// Something failed for a transient reason: try again later.
				retry = time.After(retryDelay)
			}
		case <-retry:
			retry = nil
			if installDone == nil && a.hasPending() {
				startInstall()
			}
		}
	}
}

func (a *Agent) hasPending() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range a.st.Models {
		if m.Pending != nil {
			return true
		}
	}
	return false
}

// handleRoot applies a new signed root (key rotation).
func (a *Agent) handleRoot(ctx context.Context, raw []byte) {
	if bytes.Equal(bytes.TrimSpace(raw), bytes.TrimSpace(a.verifier.RootJSON())) {
		return
	}
	root, err := a.verifier.UpdateRoot(raw)
	if err != nil {
		if errors.Is(err, manifest.ErrRollback) {
			return // the retained root we already have (or an older one)
		}
		a.log.Warn("rejected root", "err", err)
		a.event(ctx, rejection(err, report.Event{}))
		return
	}
	a.update(func(st *state.State) {
		st.Root = a.verifier.RootJSON()
		st.Trust = mustJSON(a.verifier.State())
	})
	a.log.Info("trusted root updated", "version", root.Version)
	a.event(ctx, report.Event{Type: report.EventRootUpdated, Reason: fmt.Sprintf("root version %d", root.Version)})
}

// handleAssignment verifies an assignment and, when it is new and valid,
// records it as the desired state. It reports whether anything is to be
// installed or removed.
func (a *Agent) handleAssignment(ctx context.Context, raw []byte) bool {
	a.mu.Lock()
	same := bytes.Equal(raw, a.st.Assignment)
	a.mu.Unlock()
	if same {
		return false // duplicate delivery of what we already accepted
	}
	va, err := a.verifier.VerifyAssignment(raw)
	if err != nil {
		var seq uint64
		if env, perr := manifest.ParseEnvelope(raw); perr == nil {
			var as manifest.Assignment
			if json.Unmarshal(env.Signed, &as) == nil {
				seq = as.Sequence
				if errors.Is(err, manifest.ErrRollback) && seq == a.verifier.State().Sequence && a.sameSigned(raw) {
					return false // the accepted assignment, re-encoded: not an attack
				}
			}
		}
		a.log.Warn("rejected assignment", "sequence", seq, "err", err)
		a.event(ctx, rejection(err, report.Event{Sequence: seq}))
		return false
	}
	if err := a.verifier.Accept(va); err != nil {
		a.log.Error("accept assignment", "err", err)
		return false
	}
	seq := va.Assignment.Sequence
	a.log.Info("accepted assignment", "sequence", seq, "models", len(va.Models))

	var removed []string
	var confirmed []report.Event
	a.update(func(st *state.State) {
		st.Trust = mustJSON(a.verifier.State())
		st.Assignment = raw
		want := map[string]bool{}
		for _, vm := range va.Models {
			name := stateKey(vm.Manifest.Name, vm.Entry.Mode)
			want[name] = true
			m := st.Models[name]
			if m == nil {
				m = &state.Model{}
				st.Models[name] = m
			}
			in := &state.Install{
				Version:  vm.Manifest.Version,
				Digest:   vm.Artifact.SHA256,
				Variant:  vm.Artifact.Variant,
				Manifest: vm.Entry.Manifest,
				Mode:     vm.Entry.Mode,
				// Shadow entries: the share of requests also run on it.
				ShadowSamplePPM: vm.Entry.ShadowSamplePPM,
			}
			if m.Active != nil && m.Active.Digest == in.Digest && m.Active.Version == in.Version && m.Active.ShadowSamplePPM == in.ShadowSamplePPM {
				// The assignment asks for what serves: that is settled. An
				// install in progress is dropped, and a failure of another
				// version (rolled-back or failed, e.g. the agent already
				// went back from a broken version the hub now rolls back
				// too) is history: the phase is active again, without the
				// old error, and an event says so.
				if m.Phase == state.PhaseFailed || m.Phase == state.PhaseRolledBack {
					confirmed = append(confirmed, report.Event{Type: report.EventInstalled, Model: name, Version: in.Version, Sequence: seq,
						Reason: fmt.Sprintf("assignment %d asks for the version that kept serving: phase %s cleared, now active", seq, m.Phase)})
				}
				m.Pending = nil
				m.Phase, m.Error = state.PhaseActive, ""
				continue
			}
			if m.Pending != nil && m.Pending.Digest == in.Digest && m.Pending.Version == in.Version {
				continue // already being installed
			}
			m.Pending = in
			m.Phase, m.Error = state.PhaseDownloading, ""
		}
		for name := range st.Models {
			if !want[name] {
				removed = append(removed, name)
				delete(st.Models, name)
			}
		}
	})
	a.applyBindings(ctx)
	for _, ev := range confirmed {
		a.log.Info("assignment confirms the serving version", "model", ev.Model, "version", ev.Version, "sequence", seq)
		a.event(ctx, ev)
	}
	for _, name := range removed {
		a.unload(name)
		a.event(ctx, report.Event{Type: report.EventRemoved, Model: name, Sequence: seq})
	}
	if len(removed) > 0 {
		a.gc()
	}
	return a.hasPending()
}

// sameSigned reports whether raw carries the same signed assignment as the
// accepted one (signatures and encoding aside).
func (a *Agent) sameSigned(raw []byte) bool {
	a.mu.Lock()
	cur := a.st.Assignment
	a.mu.Unlock()
	e1, err1 := manifest.ParseEnvelope(raw)
	e2, err2 := manifest.ParseEnvelope(cur)
	return err1 == nil && err2 == nil && bytes.Equal(e1.Signed, e2.Signed)
}

// installPending installs every pending version, one model at a time.
func (a *Agent) installPending(ctx context.Context) {
	for _, name := range a.Status().Names() {
		if ctx.Err() != nil {
			return
		}
		a.mu.Lock()
		m := a.st.Models[name]
		var pending *state.Install
		if m != nil && m.Pending != nil {
			p := *m.Pending
			pending = &p
		}
		a.mu.Unlock()
		if pending != nil {
			a.install(ctx, name, pending)
		}
	}
	a.gc()
}

// install downloads, verifies, loads, warms up and activates one pending
// version. On failure the active version keeps serving.
func (a *Agent) install(ctx context.Context, name string, in *state.Install) {
	log := a.log.With("model", name, "version", in.Version)
	var m manifest.ModelManifest
	env, err := manifest.ParseEnvelope(in.Manifest)
	if err == nil {
		err = json.Unmarshal(env.Signed, &m)
	}
	if err != nil {
		a.fail(ctx, name, in, fmt.Errorf("stored manifest: %w", err), true)
		return
	}
	art, ok := m.Artifact([]string{in.Variant})
	if !ok {
		a.fail(ctx, name, in, fmt.Errorf("manifest has no %q artifact", in.Variant), true)
		return
	}
	a.setPhase(name, in, state.PhaseDownloading, "")
	log.Info("downloading", "artifact", art.Key, "bytes", art.Size)
	res, err := a.fetcher.Fetch(ctx, fetch.Artifact{Bucket: art.Bucket(), Object: art.Object(), SHA256: art.SHA256, Size: art.Size},
		func(done, total int64) { a.setProgress(ctx, name, done, total) })
	a.clearProgress(name)
	if err != nil {
		if ctx.Err() != nil {
			return // superseded or shutting down; the .part file stays for resumption
		}
		permanent := errors.Is(err, fetch.ErrDigestMismatch) || errors.Is(err, fetch.ErrSizeMismatch) ||
			errors.Is(err, fetch.ErrNotFound) || errors.Is(err, fetch.ErrBadArtifact)
		a.fail(ctx, name, in, err, permanent)
		return
	}
	log.Info("downloaded and verified", "bytes_downloaded", res.Downloaded, "resumed", res.Resumed)

	a.setPhase(name, in, state.PhaseWarming, "")
	if err := a.activate(ctx, name, in); err != nil {
		if ctx.Err() != nil {
			return
		}
		a.fail(ctx, name, in, err, true)
		return
	}
	a.update(func(st *state.State) {
		m := st.Models[name]
		if m == nil {
			return
		}
		if m.Active != nil && m.Active.Digest != in.Digest {
			m.Previous = m.Active
		}
		m.Active, m.Pending = in, nil
		m.Phase, m.Error = state.PhaseActive, ""
	})
	log.Info("active")
	a.event(ctx, report.Event{Type: report.EventInstalled, Model: name, Version: in.Version})
}

// fail records a failed install. Permanent failures drop the pending
// version (the hub must send a new assignment); transient ones keep it for
// a later retry. The active version, if any, keeps serving.
func (a *Agent) fail(ctx context.Context, name string, in *state.Install, err error, permanent bool) {
	var active string
	a.update(func(st *state.State) {
		m := st.Models[name]
		if m == nil || m.Pending == nil || m.Pending.Digest != in.Digest {
			return
		}
		if permanent {
			m.Pending = nil
		}
		m.Phase, m.Error = state.PhaseFailed, err.Error()
		if m.Active != nil {
			active = m.Active.Version
			if permanent {
				m.Phase = state.PhaseRolledBack
			}
		}
	})
	typ := report.EventFailed
	if active != "" && permanent {
		typ = report.EventRolledBack
	}
	reason := err.Error()
	if se := (*stepError)(nil); errors.As(err, &se) {
		reason = se.reason() // the event names the model version itself
	}
	if active != "" {
		reason += fmt.Sprintf(" (version %s keeps serving)", active)
	}
	if !permanent {
		reason += fmt.Sprintf("; retrying in %s", retryDelay)
	}
	a.log.Error("install failed", "model", name, "version", in.Version, "permanent", permanent, "err", err)
	a.event(ctx, report.Event{Type: typ, Model: name, Version: in.Version, Reason: reason})
}

func (a *Agent) setPhase(name string, in *state.Install, phase state.Phase, msg string) {
	a.update(func(st *state.State) {
		if m := st.Models[name]; m != nil && m.Pending != nil && m.Pending.Digest == in.Digest {
			m.Phase, m.Error = phase, msg
		}
	})
}

// setProgress records download progress; the state report is published at
// most once a second for it.
func (a *Agent) setProgress(ctx context.Context, name string, done, total int64) {
	a.mu.Lock()
	a.progress[name] = report.Progress{Done: done, Total: total}
	due := time.Since(a.lastPub) >= time.Second
	a.mu.Unlock()
	if due {
		a.publishState(ctx)
	}
}

func (a *Agent) clearProgress(name string) {
	a.mu.Lock()
	delete(a.progress, name)
	a.mu.Unlock()
}

// gc removes blobs that no active, previous or pending version references.
func (a *Agent) gc() {
	a.mu.Lock()
	keep := a.st.Digests()
	a.mu.Unlock()
	removed, err := a.store.GC(keep)
	if err != nil {
		a.log.Warn("blob garbage collection", "err", err)
	}
	for _, d := range removed {
		a.log.Info("removed unused blob", "digest", d)
	}
}

// rejection turns a verification error into a rejected event.
func rejection(err error, ev report.Event) report.Event {
	ev.Type = report.EventRejected
	ev.Reason = err.Error()
	var ve *manifest.VerifyError
	if errors.As(err, &ve) {
		ev.Check = ve.Check
	}
	return ev
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("agent: marshal %T: %v", v, err))
	}
	return b
}
