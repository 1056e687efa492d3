// Package hub is the server core of modelfleet: it ingests what agents
// report over MQTT (online flag, retained state, telemetry, events) into the
// store, signs and publishes per-device assignments with the hub's online
// director key, keeps them fresh before they expire, and drives staged
// rollouts (hub/rollout) from the store's device registry and telemetry.
//
// Parties and keys: operators push releases signed by the release key
// (offline or on the hub); the hub holds only the director key, with which
// it signs assignments that embed those release-signed manifests. Agents
// trust both through root.json, which the hub publishes retained on
// {prefix}/root.
//
// The HTTP API and the CLI are layered on top: they call the exported
// methods of Hub (StartRollout, Pause, Resume, Abort, Rollback,
// RolloutStatus, ListRollouts) and read the device registry through Store.
// Lifecycle: New (no side effects) → Run (blocks until its context ends) →
// Close (safe after a partial start).
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// Errors callers branch on with errors.Is. Methods also wrap store.ErrNotFound,
// store.ErrConflict, store.ErrInvalid, rollout.ErrInvalidSpec and
// rollout.ErrNotAllowed where documented.
var (
	// ErrNotRunning: the operation needs the broker connection or the store,
	// and Run has not got that far (or the hub was closed).
	ErrNotRunning = errors.New("hub is not running")
	// ErrUnsignedRelease: a rollout names a release whose manifest has not
	// been signed by the release key yet; agents would reject it.
	ErrUnsignedRelease = errors.New("release is not signed")
)

// Store is what the hub needs of hub/store.Store; the SQLite store
// (hub/store/sqlite) satisfies it, and so does any full store.Store.
type Store interface {
	UpsertDevice(ctx context.Context, id string, seen time.Time) error
	SetOnline(ctx context.Context, id string, online bool, at time.Time) error
	SetDeviceState(ctx context.Context, id string, st report.State, at time.Time) error
	GetDevice(ctx context.Context, id string) (store.Device, error)
	ListDevices(ctx context.Context, sel store.Selector) ([]store.Device, error)

	GetRelease(ctx context.Context, name, version string) (store.Release, error)

	CreateRollout(ctx context.Context, r store.Rollout) (store.Rollout, error)
	UpdateRollout(ctx context.Context, r store.Rollout) (store.Rollout, error)
	GetRollout(ctx context.Context, id int64) (store.Rollout, error)
	ListRollouts(ctx context.Context, statuses ...store.RolloutStatus) ([]store.Rollout, error)

	AddTelemetry(ctx context.Context, device string, t report.Telemetry) error
	ListTelemetry(ctx context.Context, q store.TelemetryQuery) ([]store.TelemetryRollup, error)
	QueryTelemetry(ctx context.Context, q store.TelemetryQuery) (store.TelemetrySummary, error)
	AddEvent(ctx context.Context, e store.Event) (store.Event, error)

	NextSequences(ctx context.Context, devices []string) ([]uint64, error)
	SaveAssignments(ctx context.Context, as []store.SignedAssignment) error
	LastAssignment(ctx context.Context, device string) (store.SignedAssignment, error)

	Close() error
}

// Deps are the hub's optional collaborators.
type Deps struct {
	// Store is the store to use. When nil, Run opens the SQLite database at
	// Config.StorePath and Close closes it; an injected store is left open.
	Store Store
	// Logger receives the hub's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Hub is the modelfleet server core. Its exported methods are safe for
// concurrent use.
type Hub struct {
	cfg    Config
	base   *slog.Logger // the injected logger, for the bus client
	log    *slog.Logger
	now    func() time.Time
	topics bus.Topics
	ready  chan struct{}
	wakeC  chan struct{}

	mu       sync.Mutex // guards all following fields
	st       Store
	ownStore bool
	client   *bus.Client
	rootJSON []byte
	signers  []manifest.Signer
	started  bool
	closed   bool

	ingestMu  sync.Mutex // guards lastState
	lastState map[string]stateMark

	// ctl serialises everything that issues assignments or writes rollouts:
	// controller steps, operator commands, the refresher.
	ctl sync.Mutex
	// expiry caches each device's last assignment expiry (zero: none);
	// guarded by ctl.
	expiry map[string]time.Time
	// lastRefresh is when the refresher last ran; guarded by ctl.
	lastRefresh time.Time

	counters counters // ingest and publish metrics (metrics.go)
}

// New returns a hub for cfg. It has no side effects: nothing is opened or
// validated until Run.
func New(cfg Config, deps Deps) *Hub {
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	return &Hub{
		cfg:       cfg,
		base:      log,
		log:       log.With("component", "hub"),
		now:       now,
		topics:    bus.NewTopics(cfg.TopicPrefix),
		ready:     make(chan struct{}),
		wakeC:     make(chan struct{}, 1),
		st:        deps.Store,
		expiry:    map[string]time.Time{},
		lastState: map[string]stateMark{},
	}
}

// Ready is closed once Run has opened the store, connected to the broker,
// subscribed and reconciled: from then on every method works.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Store returns the store in use: the injected one, or the one Run opened
// (nil before). The API layer reads the device registry, releases and
// events through it.
func (h *Hub) Store() Store {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

// Run opens the store (unless injected), loads root.json and the director
// key, connects to the broker with a persistent session, publishes the root
// retained, subscribes to every device's online, state, telemetry and
// events topics, republishes what stored rollouts want but devices were not
// sent, and then runs the rollout controller and the assignment refresher
// until ctx ends. It returns nil when ctx ends, or the error that stopped
// the start. Run disconnects from the broker when it returns; call Close to
// release the store. Run may be called once.
func (h *Hub) Run(ctx context.Context) error {
	h.mu.Lock()
	if h.started || h.closed {
		h.mu.Unlock()
		return errors.New("hub: Run called twice or after Close")
	}
	h.started = true
	h.mu.Unlock()

	if err := h.cfg.Validate(); err != nil {
		return fmt.Errorf("hub config: %w", err)
	}
	rootJSON, signers, err := loadDirector(h.cfg.KeyDir)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.rootJSON, h.signers = rootJSON, signers
	needStore := h.st == nil
	h.mu.Unlock()
	if needStore {
		if h.cfg.StorePath == "" {
			return errors.New("hub config: store_path: required when no store is injected")
		}
		s, err := sqlite.Open(ctx, h.cfg.StorePath)
		if err != nil {
			return fmt.Errorf("open store %s: %w", h.cfg.StorePath, err)
		}
		h.mu.Lock()
		h.st, h.ownStore = s, true
		h.mu.Unlock()
	}

	mqttCfg := h.cfg.MQTT
	client, err := bus.Connect(ctx, mqttCfg, bus.Options{
		Logger: h.base,
		// Retained, so once would do; again after a reconnect in case the
		// broker lost its retained store.
		OnConnect: func() {
			if err := h.publishRoot(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrNotRunning) {
				h.log.Warn("republish root after reconnect", "err", err)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("connect to broker: %w", err)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		client.Close(nil)
		return ErrNotRunning
	}
	h.client = client
	h.mu.Unlock()
	defer h.disconnect()

	if err := h.publishRoot(ctx); err != nil {
		return err
	}
	if err := h.subscribe(ctx, client); err != nil {
		return err
	}
	h.reconcileAll(ctx)
	close(h.ready)
	h.log.Info("hub running", "brokers", mqttCfg.Brokers, "prefix", h.topics.Prefix())
	h.controlLoop(ctx)
	return nil
}

// Close disconnects from the broker and closes the store Run opened. It is
// safe to call more than once and after a partial start.
func (h *Hub) Close() error {
	h.disconnect()
	h.mu.Lock()
	h.closed = true
	st, own := h.st, h.ownStore
	if own {
		h.st, h.ownStore = nil, false
	}
	h.mu.Unlock()
	if own && st != nil {
		return st.Close()
	}
	return nil
}

// disconnect closes the broker connection, waiting for the ingest
// handlers to drain.
func (h *Hub) disconnect() {
	h.mu.Lock()
	c := h.client
	h.client = nil
	h.mu.Unlock()
	if c != nil {
		c.Close(nil)
	}
}

// bus returns the connected client, or ErrNotRunning.
func (h *Hub) bus() (*bus.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client == nil {
		return nil, ErrNotRunning
	}
	return h.client, nil
}

// store returns the store, or ErrNotRunning before Run opened it.
func (h *Hub) store() (Store, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.st == nil {
		return nil, ErrNotRunning
	}
	return h.st, nil
}

// publishRoot publishes root.json retained on {prefix}/root.
func (h *Hub) publishRoot(ctx context.Context) error {
	c, err := h.bus()
	if err != nil {
		return err
	}
	h.mu.Lock()
	raw := h.rootJSON
	h.mu.Unlock()
	if err := c.Publish(ctx, h.topics.Root(), 1, true, raw); err != nil {
		return fmt.Errorf("publish root on %s: %w", h.topics.Root(), err)
	}
	return nil
}

// wake makes the controller step soon, without waiting for its tick.
func (h *Hub) wake() {
	select {
	case h.wakeC <- struct{}{}:
	default:
	}
}
