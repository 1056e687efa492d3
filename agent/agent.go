package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/agent/accel"
	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/serve"
	"github.com/modelfleet/modelfleet/agent/state"
	"github.com/modelfleet/modelfleet/agent/telemetry"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// ErrNoModel is returned by Infer for a model that is not serving; it is
// runtime.ErrNotLoaded.
var ErrNoModel = runtime.ErrNotLoaded

// retryDelay is how long a pending install that failed for a transient
// reason (storage or network outage) waits before the next try.
const retryDelay = 30 * time.Second

// Agent runs the reconcile loop of one device. Create it with New, start it
// with Run; its methods are safe for concurrent use.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	topics bus.Topics

	// Set up by Run.
	client   *bus.Client
	fetcher  *fetch.Fetcher
	store    *fetch.Store
	file     *state.File
	verifier *manifest.Verifier
	ortVer   string
	// inventory is the hardware found at start-up.
	inventory accel.Inventory

	inbox chan inMsg // assignments and roots, handled in order by the loop

	mu       sync.Mutex // guards all following fields
	st       *state.State
	served   map[string]*served
	shadows  map[string]*shadow
	progress map[string]report.Progress
	lastPub  time.Time
	started  bool
	httpAddr string
	front    *serve.MQTT
	rec      *telemetry.Recorder
	broker   *brokerTracker
}

type inMsg struct {
	kind string // bus.KindAssignment or "root"
	raw  []byte
}

// New returns an agent for cfg; it has no side effects. log may be nil.
func New(cfg Config, log *slog.Logger) *Agent {
	if log == nil {
		log = slog.Default()
	}
	return &Agent{
		cfg:      cfg,
		log:      log.With("device", cfg.DeviceID),
		topics:   bus.NewTopics(cfg.MQTT.TopicPrefix),
		inbox:    make(chan inMsg, 16),
		served:   map[string]*served{},
		shadows:  map[string]*shadow{},
		progress: map[string]report.Progress{},
		rec:      newRecorder(),
	}
}

// Run starts the agent and blocks until ctx ends: it loads the persisted
// state and serves the last active models, connects to the broker, and
// reconciles every assignment it receives. It returns nil when ctx ends,
// or the error that prevented start-up.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if err := a.setup(); err != nil {
		return err
	}
	defer a.closeModels()
	a.restore(ctx)
	// Local clients are served from here on, whether or not the broker
	// accepts the agent: a refused or unreachable broker must not stop
	// inference with the installed models.
	stopHTTP, err := a.startHTTP(ctx)
	if err != nil {
		return err
	}
	defer stopHTTP()

	tracker := newBrokerTracker(a.cfg.DataDir, a.cfg.DeviceID, a.cfg.MQTT.Brokers, func(err error) { a.log.Warn("broker status", "err", err) })
	a.mu.Lock()
	a.broker = tracker
	a.mu.Unlock()
	tracker.set(BrokerConnecting)
	defer tracker.set(BrokerStopped)
	online := &bus.Message{Topic: a.topics.Online(a.cfg.DeviceID), Payload: []byte("false"), QoS: 1, Retained: true}
	client, err := bus.Connect(ctx, a.cfg.BusConfig(), bus.Options{
		Will: online,
		OnConnect: func() {
			tracker.set(BrokerConnected)
			a.onConnect()
		},
		OnConnectError: func(err error) {
			if tracker.failed(err, true) == BrokerRefused {
				a.log.Error("the broker refuses this device; installed models keep serving locally. Fix the MQTT credentials and restart the agent (see `fleetagent status`)",
					"brokers", a.cfg.MQTT.Brokers, "err", err)
			}
		},
		OnConnectionLost: func(err error) { tracker.failed(err, false) },
		Logger:           a.log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the broker
		}
		return err
	}
	a.mu.Lock()
	a.client = client
	a.mu.Unlock()
	defer client.Close(online)

	if err := client.Subscribe(ctx, a.topics.Root(), 1, func(m bus.Message) { a.enqueue(ctx, "root", m.Payload) }); err != nil {
		return err
	}
	if err := client.Subscribe(ctx, a.topics.Assignment(a.cfg.DeviceID), 1, func(m bus.Message) { a.enqueue(ctx, bus.KindAssignment, m.Payload) }); err != nil {
		return err
	}
	front := serve.NewMQTT(client, a.topics, a.cfg.DeviceID, a, serve.MQTTOptions{Logger: a.log})
	frontDone := make(chan error, 1)
	go func() { frontDone <- front.Run(ctx) }()
	select {
	case <-front.Ready():
	case err := <-frontDone:
		return err
	}
	defer func() { <-frontDone }()
	a.mu.Lock()
	a.front = front
	a.started = true
	a.mu.Unlock()
	a.applyBindings(ctx)
	stopTelemetry, err := a.startTelemetry(ctx)
	if err != nil {
		return err
	}
	defer stopTelemetry()
	a.onConnect()
	go a.janitor(ctx)
	a.event(ctx, report.Event{Type: report.EventStarted, Sequence: a.verifier.State().Sequence})
	a.loop(ctx)
	return nil
}

func (a *Agent) enqueue(ctx context.Context, kind string, raw []byte) {
	if len(raw) == 0 {
		return // a cleared retained message
	}
	select {
	case a.inbox <- inMsg{kind: kind, raw: bytes.Clone(raw)}:
	case <-ctx.Done():
	}
}

// setup opens the state, the verifier, ONNX Runtime and S3.
func (a *Agent) setup() error {
	var err error
	a.inventory = accel.Detect(context.Background(), accel.Options{Logger: a.log})
	if a.file, err = state.NewFile(a.cfg.statePath()); err != nil {
		return err
	}
	if a.st, err = a.file.Load(); err != nil {
		return fmt.Errorf("%w (move it away to start from scratch; the agent will re-download its models)", err)
	}
	rootJSON := []byte(a.st.Root)
	if len(rootJSON) == 0 {
		if rootJSON, err = os.ReadFile(a.cfg.TrustRoot); err != nil {
			return fmt.Errorf("trust_root: %w", err)
		}
	}
	vcfg := manifest.DefaultConfig()
	vcfg.DeviceID = a.cfg.DeviceID
	vcfg.Variants = a.variants()
	vcfg.MaxArtifactBytes = a.cfg.MaxArtifactBytes
	vcfg.ClockSkew = time.Duration(a.cfg.ClockSkewSeconds) * time.Second
	if a.verifier, err = manifest.NewVerifier(rootJSON, vcfg); err != nil {
		return fmt.Errorf("trust root: %w", err)
	}
	if len(a.st.Trust) > 0 {
		var ts manifest.State
		if err := json.Unmarshal(a.st.Trust, &ts); err != nil {
			return fmt.Errorf("state: trust: %w", err)
		}
		if err := a.verifier.Restore(ts); err != nil {
			return fmt.Errorf("state: trust: %w", err)
		}
	}
	lib, err := runtime.Init(runtime.LibraryConfig{Path: a.cfg.ORTLib, Logger: a.log})
	if err != nil && !errors.Is(err, runtime.ErrAlreadyLoaded) {
		return err
	}
	a.ortVer = lib.Version
	if a.store, err = fetch.NewStore(a.cfg.blobDir()); err != nil {
		return err
	}
	s3, err := fetch.NewClient(fetch.ClientOptions{
		Endpoint: a.cfg.S3.Endpoint, Region: a.cfg.S3.Region,
		AccessKey: a.cfg.S3.AccessKey, SecretKey: a.cfg.S3.SecretKey, SessionToken: a.cfg.S3.SessionToken,
		Insecure: a.cfg.S3.Insecure, CAFile: a.cfg.S3.CAFile,
	})
	if err != nil {
		return err
	}
	a.fetcher = fetch.New(s3, a.store, a.cfg.Fetch, a.log)
	return nil
}

// variants returns the artifact variants this device runs, best first:
// the configured list, or what the hardware inventory supports.
func (a *Agent) variants() []string {
	if len(a.cfg.Variants) > 0 {
		return a.cfg.Variants
	}
	return a.inventory.Variants()
}

// restore serves the models the persisted state says are active, falling
// back to the previous version when the active one no longer loads.
func (a *Agent) restore(ctx context.Context) {
	for _, name := range a.st.Names() {
		m := a.st.Models[name]
		if m.Active == nil {
			continue
		}
		err := a.activate(ctx, name, m.Active)
		if err == nil {
			continue
		}
		a.log.Error("active model does not load after restart", "model", name, "version", m.Active.Version, "err", err)
		if m.Previous != nil && a.activate(ctx, name, m.Previous) == nil {
			a.update(func(st *state.State) {
				m := st.Models[name]
				m.Error = fmt.Sprintf("version %s did not load after restart: %v", m.Active.Version, err)
				m.Active, m.Previous, m.Phase = m.Previous, nil, state.PhaseRolledBack
			})
			continue
		}
		a.update(func(st *state.State) {
			m := st.Models[name]
			m.Phase, m.Error = state.PhaseFailed, fmt.Sprintf("version %s did not load after restart: %v", m.Active.Version, err)
		})
	}
}

// open loads the verified blob of an install into ONNX Runtime and warms it up.
func (a *Agent) open(ctx context.Context, in *state.Install) (*runtime.Session, error) {
	env, err := manifest.ParseEnvelope(in.Manifest)
	if err != nil {
		return nil, fmt.Errorf("stored manifest: %w", err)
	}
	var m manifest.ModelManifest
	if err := json.Unmarshal(env.Signed, &m); err != nil {
		return nil, fmt.Errorf("stored manifest: %w", err)
	}
	if !a.store.Has(in.Digest) {
		return nil, fmt.Errorf("blob %s is missing", in.Digest)
	}
	return openModel(ctx, a.store.Path(in.Digest), &m, in.Variant, a.log)
}

// Status returns a snapshot of the persisted state.
func (a *Agent) Status() *state.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Clone()
}

// update applies fn to the state under the lock, persists it atomically and
// publishes the new state report.
func (a *Agent) update(fn func(*state.State)) {
	a.mu.Lock()
	fn(a.st)
	err := a.file.Save(a.st)
	a.mu.Unlock()
	if err != nil {
		// The in-memory state is still right; the next successful save
		// persists it. Reported so the operator can free disk space.
		a.log.Error("persist state", "err", err)
	}
	a.publishState(context.Background())
}
