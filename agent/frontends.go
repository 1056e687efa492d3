package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"

	"github.com/modelfleet/modelfleet/agent/serve"
	"github.com/modelfleet/modelfleet/internal/buildinfo"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// BindingConfig routes MQTT messages through a model, configured locally on
// the device (bindings can also come with the assignment).
type BindingConfig struct {
	// Model is the model name.
	Model string `yaml:"model"`
	// Input is an MQTT topic filter; wildcards allowed.
	Input string `yaml:"input"`
	// Output is the result topic template; {N} is level N (1-based) of the
	// topic the reading arrived on. Empty: results are not published.
	Output string `yaml:"output"`
	// Format of the readings: "json" (default) or "f32le" (raw
	// little-endian float32).
	Format string `yaml:"format"`
	// ErrorTopic receives a message for every reading that cannot be served.
	ErrorTopic string `yaml:"error_topic"`
	// QoS of the subscription and of the results (0 or 1).
	QoS byte `yaml:"qos"`
}

// Model implements serve.Inferer: the serving version and tensors of name.
func (a *Agent) Model(name string) (serve.ModelInfo, bool) {
	s := a.lookup(name)
	if s == nil {
		return serve.ModelInfo{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.install == nil {
		return serve.ModelInfo{Name: name}, true
	}
	return serve.ModelInfo{
		Name:    name,
		Version: s.install.Version,
		Ready:   true, // an idle-unloaded model reloads on the next request
		Inputs:  s.inputs,
		Outputs: s.outputs,
	}, true
}

// Models implements serve.Inferer: every model the agent serves, by name.
func (a *Agent) Models() []serve.ModelInfo {
	a.mu.Lock()
	names := slices.Sorted(maps.Keys(a.served))
	a.mu.Unlock()
	out := make([]serve.ModelInfo, 0, len(names))
	for _, n := range names {
		if m, ok := a.Model(n); ok {
			out = append(out, m)
		}
	}
	return out
}

// startHTTP listens on the configured address (so a port conflict stops the
// start-up with a clear error) and serves the inference API and /metrics.
func (a *Agent) startHTTP(ctx context.Context) (func(), error) {
	if a.cfg.Serving.HTTPAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", a.cfg.Serving.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("serving.http_addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", serve.NewHTTP(a, serve.HTTPOptions{ServerName: "modelfleet", ServerVersion: buildinfo.Read().Version, Logger: a.log}))
	a.mountMetrics(mux)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serve.Serve(ctx, ln, mux, serve.ServerOptions{Logger: a.log}); err != nil {
			a.log.Error("inference API stopped", "err", err)
		}
	}()
	a.log.Info("serving inference over HTTP", "addr", ln.Addr().String())
	a.mu.Lock()
	a.httpAddr = ln.Addr().String()
	a.mu.Unlock()
	return func() { <-done }, nil
}

// HTTPAddr returns the address the inference API listens on ("" before
// Run has started it, or when disabled).
func (a *Agent) HTTPAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.httpAddr
}

// bindings returns the bindings in force: the configured ones and those of
// the accepted assignment's active models.
func (a *Agent) bindings() []serve.Binding {
	var out []serve.Binding
	for _, b := range a.cfg.Serving.Bindings {
		out = append(out, serve.Binding{Model: b.Model, Input: b.Input, Output: b.Output, Format: b.Format, ErrorTopic: b.ErrorTopic, QoS: b.QoS})
	}
	a.mu.Lock()
	raw := a.st.Assignment
	a.mu.Unlock()
	if len(raw) == 0 {
		return out
	}
	env, err := manifest.ParseEnvelope(raw)
	if err != nil {
		return out
	}
	var as manifest.Assignment
	if err := json.Unmarshal(env.Signed, &as); err != nil {
		return out
	}
	for _, m := range as.Models {
		if m.Mode != manifest.ModeActive || len(m.Bindings) == 0 {
			continue
		}
		menv, err := manifest.ParseEnvelope(m.Manifest)
		if err != nil {
			continue
		}
		var mm manifest.ModelManifest
		if json.Unmarshal(menv.Signed, &mm) != nil {
			continue
		}
		for _, b := range m.Bindings {
			out = append(out, serve.Binding{Model: mm.Name, Input: b.Input, Output: b.Output})
		}
	}
	return out
}

// applyBindings hands the bindings in force to the MQTT front end. Invalid
// ones change nothing and are reported.
func (a *Agent) applyBindings(ctx context.Context) {
	if a.front == nil {
		return
	}
	if err := a.front.SetBindings(ctx, a.bindings()); err != nil {
		a.log.Error("bindings refused", "err", err)
		a.event(ctx, report.Event{Type: report.EventWarning, Reason: "bindings refused: " + err.Error()})
	}
}
