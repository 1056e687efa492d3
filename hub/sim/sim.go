// Package sim simulates a fleet in one process to measure how fast a
// rollout converges: N lightweight agents, each with its own MQTT session
// against a real broker, its own trust state (manifest.Verifier) and its
// own reported state, install a release pushed to real S3 storage by a
// real hub core (hub.Hub with generated keys and a SQLite store, run
// in-process) or by an existing hub reached through its HTTP API.
//
// A simulated agent does what the real agent (package agent) does on the
// wire — online flag with a last will, retained state reports through the
// phases downloading (with progress), warming and active, an "installed"
// event — and verifies every assignment and manifest signature, the
// artifact's size and sha256 included (agent/fetch). It does not create an
// ONNX Runtime session. Artifacts are downloaded either once per sha256
// into a store shared by all agents (DownloadShared: the others wait for
// the one download and find the verified blob) or by every agent into its
// own store (DownloadPerAgent: N real downloads, the load real devices put
// on S3).
//
// The package is linked into fleethub only (`fleethub simulate`).
package sim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/release"
	"github.com/modelfleet/modelfleet/hub/rollout"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

// Download modes (Config.Download).
const (
	// DownloadShared downloads each artifact once per sha256 into a blob
	// store all agents share; the first agent downloads and verifies it,
	// the others wait for it.
	DownloadShared = "shared"
	// DownloadPerAgent gives every agent its own blob store, so each one
	// downloads and verifies the artifact itself.
	DownloadPerAgent = "per-agent"
)

// RunLabel is the label every simulated device reports, with the run's ID
// as value; the rollout selects on it, so it never reaches other devices.
const RunLabel = "sim-run"

// ErrNotConverged is wrapped by Run's error when agents did not report
// the release active within the timeout.
var ErrNotConverged = errors.New("agents did not converge")

// Config configures a simulation. Zero fields take the defaults named.
type Config struct {
	// Agents is the number of simulated agents; at least 1.
	Agents int
	// ArtifactBytes is the approximate size of the generated model
	// (Result.ArtifactBytes has the exact one); default 1 MiB.
	ArtifactBytes int64
	// Download is DownloadShared (default) or DownloadPerAgent.
	Download string
	// MQTT is the broker connection; Brokers is required, ClientID is
	// ignored (every agent and the hub get their own stable one).
	MQTT bus.Config
	// TopicPrefix is the MQTT topic prefix. Empty means a prefix of its own
	// for an in-process hub (so the run sees no other devices and leaves
	// nothing behind that a real hub would ingest) and bus.DefaultPrefix
	// with Hub.
	TopicPrefix string
	// S3 is the object store the release is pushed to (in-process hub) and
	// the agents download from.
	S3 fetch.ClientOptions
	// Bucket is the bucket for the release; with an in-process hub it is
	// created when missing. Default "modelfleet-sim".
	Bucket string
	// Hub, when set, is an existing hub the release is pushed to and the
	// rollout started through; nil runs a hub core in-process.
	Hub *RemoteHub
	// ConnectPerSecond caps how many agents start connecting per second;
	// default 500. ConnectConcurrency caps connections in progress; default
	// 64.
	ConnectPerSecond   int
	ConnectConcurrency int
	// Timeout bounds the rollout, from its start until every agent reports
	// the release active; 0 means DefaultTimeout(Agents, ArtifactBytes,
	// Download).
	Timeout time.Duration
	// WorkDir holds keys, the store, the artifact and blob stores; empty
	// means a temporary directory removed at the end.
	WorkDir string
	// Logger receives progress (Info) and problems (Warn); nil discards.
	Logger *slog.Logger
	// HubLogger receives the in-process hub's logs; nil discards.
	HubLogger *slog.Logger
}

// RemoteHub is an existing hub reached through its HTTP API.
type RemoteHub struct {
	// URL is the API's base URL, e.g. http://127.0.0.1:8400.
	URL string
	// Token is the API's bearer token, if it needs one.
	Token string
	// TrustRoot is the path of the hub's root.json, the agents' initial
	// trust.
	TrustRoot string
}

// Result is what a simulation measured. Its JSON form is the output of
// `fleethub simulate -o json`, which benchmark scripts parse: keep it.
type Result struct {
	// Agents is the number of simulated agents.
	Agents int `json:"agents"`
	// ArtifactBytes is the exact size of the released model.
	ArtifactBytes int64 `json:"artifact_bytes"`
	// Download is the download mode, DownloadShared or DownloadPerAgent.
	Download string `json:"download"`
	// ConnectSeconds is how long connecting every agent took: MQTT
	// session, subscriptions, online flag and first state report.
	ConnectSeconds float64 `json:"connect_seconds"`
	// TotalSeconds is from the rollout's start until the hub reported it
	// succeeded (every agent's active state ingested).
	TotalSeconds float64 `json:"total_seconds"`
	// P50Seconds, P99Seconds and MaxSeconds summarise the per-agent times
	// from the rollout's start until the agent's active state report was
	// acknowledged by the broker.
	P50Seconds float64 `json:"p50_seconds"`
	P99Seconds float64 `json:"p99_seconds"`
	MaxSeconds float64 `json:"max_seconds"`
	// S3BytesServed counts the response bytes the agents read from S3;
	// 0 (omitted) when not measured (see Config.S3).
	S3BytesServed int64 `json:"s3_bytes_served,omitempty"`
	// GoroutinesPeak is the most goroutines seen in this process.
	GoroutinesPeak int `json:"goroutines_peak"`
	// RSSPeakBytes is this process's peak resident memory.
	RSSPeakBytes int64 `json:"rss_peak_bytes"`

	// Converged counts the agents that reported the release active (the
	// rest timed out); not part of the JSON form.
	Converged int `json:"-"`
	// AssignedP50Seconds and AssignedMaxSeconds summarise the times from
	// the rollout's start until the agents received their assignment: when
	// they are close to P50Seconds and MaxSeconds, the hub's publishing of
	// assignments, not the installs, sets the pace. Not part of the JSON
	// form.
	AssignedP50Seconds float64 `json:"-"`
	AssignedMaxSeconds float64 `json:"-"`
}

// DefaultTimeout is the rollout timeout for a run of agents with an
// artifact of size bytes: a minute, plus 100 ms per agent, plus the
// transfers at a pessimistic 20 MB/s (once, or once per agent).
func DefaultTimeout(agents int, size int64, download string) time.Duration {
	transfers := int64(1)
	if download == DownloadPerAgent {
		transfers = int64(agents)
	}
	return time.Minute + time.Duration(agents)*100*time.Millisecond +
		time.Duration(transfers*size/(20<<20))*time.Second
}

func (c Config) withDefaults() Config {
	if c.ArtifactBytes <= 0 {
		c.ArtifactBytes = 1 << 20
	}
	if c.Download == "" {
		c.Download = DownloadShared
	}
	if c.Bucket == "" {
		c.Bucket = "modelfleet-sim"
	}
	if c.ConnectPerSecond <= 0 {
		c.ConnectPerSecond = 500
	}
	if c.ConnectConcurrency <= 0 {
		c.ConnectConcurrency = 64
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout(c.Agents, c.ArtifactBytes, c.Download)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HubLogger == nil {
		c.HubLogger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Agents < 1 {
		errs = append(errs, fmt.Errorf("agents: %d; want at least 1", c.Agents))
	}
	if c.Download != DownloadShared && c.Download != DownloadPerAgent {
		errs = append(errs, fmt.Errorf("download: %q; want %q or %q", c.Download, DownloadShared, DownloadPerAgent))
	}
	if len(c.MQTT.Brokers) == 0 {
		errs = append(errs, errors.New("mqtt brokers: required, e.g. tcp://127.0.0.1:1883 (fleethub simulate --broker)"))
	}
	if c.S3.Endpoint == "" {
		errs = append(errs, errors.New("s3 endpoint: required, e.g. 127.0.0.1:9000 (fleethub simulate --s3-endpoint)"))
	}
	if c.Hub != nil && (c.Hub.URL == "" || c.Hub.TrustRoot == "") {
		errs = append(errs, errors.New("hub: the API URL and the hub's root.json are both required (fleethub simulate --hub and --trust-root)"))
	}
	return errors.Join(errs...)
}

// Run runs one simulation: it starts (or reaches) the hub, connects the
// agents, pushes a release of a random model of Config.ArtifactBytes,
// rolls it out to every agent in one wave of 100% without soak, and
// measures until every agent reports it active. It always returns the
// result measured so far with a non-nil error; the error wraps
// ErrNotConverged when agents timed out, naming how many and a sample of
// their last phases.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("simulation config: %w", err)
	}
	res := &Result{Agents: cfg.Agents, Download: cfg.Download}
	if err := raiseFileLimit(cfg.Agents, cfg.Download); err != nil {
		return res, err
	}
	peaks := startSampler()
	defer func() {
		res.GoroutinesPeak, res.RSSPeakBytes = peaks.stop()
	}()

	workDir := cfg.WorkDir
	if workDir == "" {
		d, err := os.MkdirTemp("", "modelfleet-sim-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(d)
		workDir = d
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &run{cfg: cfg, res: res, dir: workDir, log: cfg.Logger, id: randomID(), cancel: cancel}
	defer r.close()
	err := r.run(ctx)
	return res, err
}

// run is the state of one simulation.
type run struct {
	cfg Config
	res *Result
	dir string
	log *slog.Logger
	id  string
	// cancel ends the agents' work (downloads in progress) and the hub.
	cancel context.CancelFunc

	topics   bus.Topics
	rootJSON []byte
	model    string
	version  string
	s3       *minio.Client
	served   atomic.Int64

	// in-process hub
	hub       *hub.Hub
	st        *sqlite.Store
	hubCancel context.CancelFunc
	hubDone   chan error
	signers   []manifest.Signer
	// remote hub
	api *api.Client

	agents []*simAgent
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (r *run) run(ctx context.Context) error {
	cfg := r.cfg
	r.model, r.version = "sim-"+r.id, "1.0.0"
	prefix := cfg.TopicPrefix
	if prefix == "" && cfg.Hub == nil {
		prefix = "modelfleet-sim/" + r.id
	}
	r.topics = bus.NewTopics(prefix)

	s3, err := newS3Client(cfg.S3, &r.served)
	if err != nil {
		return err
	}
	r.s3 = s3
	if cfg.Hub == nil {
		if err := r.startHub(ctx); err != nil {
			return err
		}
	} else {
		raw, err := os.ReadFile(cfg.Hub.TrustRoot)
		if err != nil {
			return fmt.Errorf("trust root: %w", err)
		}
		r.rootJSON = raw
		r.api = &api.Client{BaseURL: strings.TrimSuffix(cfg.Hub.URL, "/"), Token: cfg.Hub.Token}
	}

	artifact := filepath.Join(r.dir, "model.onnx")
	size, err := writeArtifact(artifact, uint64(time.Now().UnixNano()), cfg.ArtifactBytes)
	if err != nil {
		return err
	}
	r.res.ArtifactBytes = size

	if err := r.connectAgents(ctx); err != nil {
		return err
	}
	if err := r.push(ctx, artifact, size); err != nil {
		return err
	}
	if err := r.waitRegistered(ctx); err != nil {
		return err
	}
	return r.rollout(ctx)
}

// newS3Client returns a minio client for the agents. With static
// credentials and no private CA its transport counts the response bytes
// read into served; otherwise served stays 0 (not measured).
func newS3Client(opts fetch.ClientOptions, served *atomic.Int64) (*minio.Client, error) {
	c, err := fetch.NewClient(opts)
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	if opts.CAFile != "" || opts.AccessKey == "" {
		return c, nil
	}
	u := c.EndpointURL()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Thousands of agents download at once from one endpoint.
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 1024
	c, err = minio.New(u.Host, &minio.Options{
		Creds:     credentials.NewStaticV4(opts.AccessKey, opts.SecretKey, opts.SessionToken),
		Secure:    u.Scheme == "https",
		Region:    opts.Region,
		Transport: &countingTransport{next: tr, n: served},
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	return c, nil
}

// countingTransport counts response body bytes.
type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: t.n}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// startHub generates keys, opens a SQLite store and runs the hub core.
func (r *run) startHub(ctx context.Context) error {
	keyDir := filepath.Join(r.dir, "keys")
	created, err := keys.Init(ctx, keyDir, keys.DefaultInitOptions())
	if err != nil {
		return fmt.Errorf("generate keys: %w", err)
	}
	raw, err := os.ReadFile(created.RootPath)
	if err != nil {
		return err
	}
	r.rootJSON = raw
	loaded, err := keys.LoadDir(keyDir)
	if err != nil {
		return err
	}
	for _, k := range loaded {
		if k.Role == manifest.RoleRelease {
			r.signers = append(r.signers, k.Signer)
		}
	}
	st, err := sqlite.Open(ctx, filepath.Join(r.dir, "hub.db"))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	r.st = st

	hcfg := hub.DefaultConfig()
	hcfg.MQTT = r.cfg.MQTT
	hcfg.MQTT.ClientID = "modelfleet-sim-hub-" + r.id
	hcfg.TopicPrefix = r.topics.Prefix()
	hcfg.KeyDir = keyDir
	hcfg.TickMillis = 500
	h := hub.New(hcfg, hub.Deps{Store: st, Logger: r.cfg.HubLogger})
	hctx, cancel := context.WithCancel(ctx)
	r.hub, r.hubCancel, r.hubDone = h, cancel, make(chan error, 1)
	go func() { r.hubDone <- h.Run(hctx) }()
	select {
	case <-h.Ready():
	case err := <-r.hubDone:
		r.hubDone <- err
		return fmt.Errorf("start hub: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	r.log.Info("hub running in-process", "prefix", r.topics.Prefix())

	exists, err := r.s3.BucketExists(ctx, r.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("s3 bucket %s: %w", r.cfg.Bucket, err)
	}
	if !exists {
		if err := r.s3.MakeBucket(ctx, r.cfg.Bucket, minio.MakeBucketOptions{Region: r.cfg.S3.Region}); err != nil {
			return fmt.Errorf("create s3 bucket %s: %w", r.cfg.Bucket, err)
		}
	}
	return nil
}

// connectAgents creates the agents and connects them at the configured
// rate, measuring the time until all are connected and announced.
func (r *run) connectAgents(ctx context.Context) error {
	cfg := r.cfg
	vcfg := manifest.DefaultConfig()
	vcfg.MaxArtifactBytes = max(vcfg.MaxArtifactBytes, r.res.ArtifactBytes)

	var shared *fetch.Fetcher
	newFetcher := func(dir string) (*fetch.Fetcher, error) {
		bs, err := fetch.NewStore(dir)
		if err != nil {
			return nil, err
		}
		return fetch.New(r.s3, bs, fetch.Config{}, r.log), nil
	}
	if cfg.Download == DownloadShared {
		f, err := newFetcher(filepath.Join(r.dir, "blobs"))
		if err != nil {
			return err
		}
		shared = f
	}
	target := func() string { return r.version }
	// Per-connection info logs of thousands of sessions would drown the
	// progress messages: agents log warnings and errors only.
	agentLog := slog.New(minLevel{Handler: r.log.Handler(), min: slog.LevelWarn})
	width := len(fmt.Sprint(cfg.Agents))
	for i := range cfg.Agents {
		id := fmt.Sprintf("sim-%s-%0*d", r.id, width, i+1)
		vc := vcfg
		vc.DeviceID = id
		v, err := manifest.NewVerifier(r.rootJSON, vc)
		if err != nil {
			return fmt.Errorf("trust root: %w", err)
		}
		f := shared
		if f == nil {
			if f, err = newFetcher(filepath.Join(r.dir, "agents", id)); err != nil {
				return err
			}
		}
		r.agents = append(r.agents, &simAgent{
			id: id, labels: map[string]string{RunLabel: r.id}, topics: r.topics, verifier: v, fetcher: f,
			perAgent: shared == nil, target: target, log: agentLog, done: make(chan struct{}),
		})
	}

	r.log.Info("connecting agents", "agents", cfg.Agents, "per_second", cfg.ConnectPerSecond)
	start := time.Now()
	interval := time.Second / time.Duration(cfg.ConnectPerSecond)
	sem := make(chan struct{}, cfg.ConnectConcurrency)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		failed   int
	)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, a := range r.agents {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-time.After(d):
			case <-cctx.Done():
			}
		}
		select {
		case sem <- struct{}{}:
		case <-cctx.Done():
		}
		if cctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			bc := cfg.MQTT
			bc.ClientID = "modelfleet-" + a.id
			if err := a.connect(cctx, ctx, bc); err != nil {
				mu.Lock()
				failed++
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	r.res.ConnectSeconds = time.Since(start).Seconds()
	if firstErr != nil {
		return fmt.Errorf("connect agents: %d failed, first: %w", failed, firstErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.log.Info("agents connected", "agents", cfg.Agents, "seconds", r.res.ConnectSeconds)
	return nil
}

// push releases the artifact, signed, through the in-process hub's
// release path or the remote hub's API.
func (r *run) push(ctx context.Context, path string, size int64) error {
	start := time.Now()
	if r.hub != nil {
		_, err := release.Push(ctx, r.s3, r.st, release.PushRequest{
			Name: r.model, Version: r.version, Bucket: r.cfg.Bucket,
			Artifacts:        []release.ArtifactFile{{Variant: "cpu", Path: path}},
			Signers:          r.signers,
			MaxArtifactBytes: max(manifest.DefaultMaxArtifactBytes, size),
		})
		if err != nil {
			return fmt.Errorf("push release: %w", err)
		}
	} else {
		if _, err := r.api.PushModel(ctx, api.PushModelRequest{
			Name: r.model, Version: r.version, Files: []api.PushFile{{Variant: "cpu", Path: path}},
		}); err != nil {
			return fmt.Errorf("push release to %s: %w", r.cfg.Hub.URL, err)
		}
	}
	r.log.Info("release pushed", "model", r.model, "version", r.version, "bytes", size, "seconds", time.Since(start).Seconds())
	return nil
}

// waitRegistered waits until the hub lists every agent, so the rollout's
// selector matches all of them.
func (r *run) waitRegistered(ctx context.Context) error {
	wait := max(r.cfg.Timeout, DefaultTimeout(r.cfg.Agents, 0, DownloadShared))
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	sel := store.Selector{RunLabel: r.id}
	start := time.Now()
	for {
		var n int
		if r.hub != nil {
			ds, err := r.st.ListDevices(ctx, sel)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("list devices: %w", err)
			}
			n = len(ds)
		} else {
			ds, err := r.api.Devices(ctx, RunLabel+"="+r.id)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("list devices on %s: %w", r.cfg.Hub.URL, err)
			}
			n = len(ds)
		}
		if n >= r.cfg.Agents {
			r.log.Info("hub registered every agent", "agents", n, "seconds", time.Since(start).Seconds())
			return nil
		}
		select {
		case <-ctx.Done():
			if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return fmt.Errorf("the hub registered only %d of %d agents within %s: is it subscribed to the same broker and topic prefix (%s)?",
				n, r.cfg.Agents, wait, r.topics.Prefix())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// rollout starts the rollout and waits for every agent and then the hub.
func (r *run) rollout(ctx context.Context) error {
	cfg := r.cfg
	var id int64
	if r.hub != nil {
		rid, err := r.hub.StartRollout(ctx, rollout.Spec{
			Model: r.model, Version: r.version, Selector: map[string]string{RunLabel: r.id},
			Waves: []int{100}, Soak: 0, InstallTimeout: cfg.Timeout,
		})
		if err != nil {
			return fmt.Errorf("start rollout: %w", err)
		}
		id = rid
	} else {
		info, err := r.api.StartRollout(ctx, api.RolloutRequest{
			Model: r.model, Version: r.version, Selector: RunLabel + "=" + r.id, Waves: "100", Soak: "0s",
			InstallTimeout: cfg.Timeout.String(),
		})
		if err != nil {
			return fmt.Errorf("start rollout on %s: %w", cfg.Hub.URL, err)
		}
		id = info.Rollout.ID
	}
	start := time.Now()
	r.log.Info("rollout started", "rollout", id, "agents", cfg.Agents, "timeout", cfg.Timeout)

	deadline := time.NewTimer(cfg.Timeout)
	defer deadline.Stop()
	timedOut := false
wait:
	for _, a := range r.agents {
		select {
		case <-a.done:
		case <-deadline.C:
			timedOut = true
			break wait
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	var times, assigned []float64
	var stragglers []string
	for _, a := range r.agents {
		phase, lastErr, gotAt, doneAt := a.status()
		if !gotAt.IsZero() {
			assigned = append(assigned, gotAt.Sub(start).Seconds())
		}
		if !doneAt.IsZero() {
			times = append(times, doneAt.Sub(start).Seconds())
			continue
		}
		if len(stragglers) < 5 {
			s := a.id + ": " + phase
			if lastErr != "" {
				s += " (" + lastErr + ")"
			}
			stragglers = append(stragglers, s)
		}
	}
	r.res.Converged = len(times)
	slices.Sort(times)
	slices.Sort(assigned)
	r.res.AssignedP50Seconds, r.res.AssignedMaxSeconds = quantile(assigned, 0.5), quantile(assigned, 1)
	r.res.P50Seconds, r.res.P99Seconds = quantile(times, 0.50), quantile(times, 0.99)
	if len(times) > 0 {
		r.res.MaxSeconds = times[len(times)-1]
	}
	r.res.S3BytesServed = r.served.Load()
	if timedOut {
		r.res.TotalSeconds = time.Since(start).Seconds()
		return fmt.Errorf("%w: %d of %d agents did not report %s@%s active within %s; for example %s",
			ErrNotConverged, cfg.Agents-len(times), cfg.Agents, r.model, r.version, cfg.Timeout, strings.Join(stragglers, "; "))
	}
	r.log.Info("every agent active", "seconds", r.res.MaxSeconds)

	// The hub has the last word: the rollout is done once it has ingested
	// every active state.
	for {
		status, err := r.rolloutStatus(ctx, id)
		if err != nil {
			return err
		}
		switch status {
		case store.StatusSucceeded:
			r.res.TotalSeconds = time.Since(start).Seconds()
			r.log.Info("rollout succeeded", "rollout", id, "seconds", r.res.TotalSeconds)
			return nil
		case store.StatusFailed, store.StatusAborted, store.StatusPaused:
			return fmt.Errorf("rollout %d ended %s although every agent reported the release active", id, status)
		}
		select {
		case <-deadline.C:
			r.res.TotalSeconds = time.Since(start).Seconds()
			return fmt.Errorf("%w: every agent reported %s@%s active, but the hub did not mark rollout %d succeeded within %s (status %s)",
				ErrNotConverged, r.model, r.version, id, cfg.Timeout, status)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *run) rolloutStatus(ctx context.Context, id int64) (store.RolloutStatus, error) {
	if r.hub != nil {
		info, err := r.hub.RolloutStatus(ctx, id)
		if err != nil {
			return "", fmt.Errorf("rollout %d status: %w", id, err)
		}
		return info.Rollout.Status, nil
	}
	info, err := r.api.Rollout(ctx, id)
	if err != nil {
		return "", fmt.Errorf("rollout %d status: %w", id, err)
	}
	return info.Rollout.Status, nil
}

// quantile returns the q-quantile of sorted values (nearest rank), 0 for
// none.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// close disconnects the agents and stops the hub.
func (r *run) close() {
	r.cancel()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, a := range r.agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a.close()
		}()
	}
	wg.Wait()
	if r.hubCancel != nil {
		r.hubCancel()
		if err := <-r.hubDone; err != nil {
			r.log.Warn("hub stopped with an error", "err", err)
		}
		_ = r.hub.Close()
	}
	if r.st != nil {
		_ = r.st.Close()
	}
}

// minLevel passes on records at min or above only.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{Handler: h.Handler.WithAttrs(as), min: h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{Handler: h.Handler.WithGroup(name), min: h.min}
}
