package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/hub/devenv"
	"github.com/modelfleet/modelfleet/hub/sim"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/cli"
)

func newSimulateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "simulate --agents N",
		Short: "Measure rollout convergence with N simulated agents in one process",
		Long: `Run N lightweight simulated agents in this process, each with its own MQTT
session, its own trust state and its own state reports, against a real
broker and S3 store; push a release of a random model of --artifact-size,
roll it out to all of them in one wave (100%, no soak) and measure the time
from the rollout's start until each agent reports it active (p50, p99, max)
and until the hub marks the rollout succeeded (total).

Agents verify every assignment and manifest signature and the artifact's
sha256 like the real agent, but create no ONNX Runtime session. With
--download shared (default) the artifact is downloaded and verified once
per sha256 into a store the agents share; with --download per-agent every
agent downloads it, which is the load real devices put on S3.

The hub core runs in-process with generated keys and a temporary SQLite
store, against the broker and S3 given by the flags. With --hub it uses an
existing hub instead: the release is pushed and the rollout started through
its API, and the agents trust --trust-root (the hub's root.json). With
--self-contained (the default when no --broker is given) the embedded
broker and S3 endpoint of 'fleethub dev' run in this process too.

It exits non-zero, naming how many agents and a sample of their last
phases, when agents do not converge within --timeout (default: a minute
plus 100 ms per agent plus the transfers at 20 MB/s).`,
		Example: `  fleethub simulate --agents 100
  fleethub simulate --agents 1000 --artifact-size 10MiB --broker tcp://127.0.0.1:1883 \
    --s3-endpoint 127.0.0.1:9000 --s3-access-key minio --s3-secret-key minio123 -o json
  fleethub simulate --agents 50 --hub http://127.0.0.1:8400 --token "$TOKEN" \
    --trust-root keys/root.json --broker tcp://127.0.0.1:1883 --s3-endpoint 127.0.0.1:9000`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	agents := f.Int("agents", 100, "number of simulated agents")
	sizeStr := f.String("artifact-size", "10MiB", "size of the released model, e.g. 10MiB, 256KiB")
	download := f.String("download", sim.DownloadShared, `artifact downloads: "shared" (once per sha256, agents wait for it) or "per-agent"`)
	broker := f.String("broker", "", "MQTT broker URL, e.g. tcp://127.0.0.1:1883 (empty: --self-contained)")
	mqttUser := f.String("mqtt-username", "", "MQTT username for the hub and every agent")
	mqttPass := f.String("mqtt-password", "", "MQTT password")
	prefix := f.String("topic-prefix", "", "MQTT topic prefix (default: one of the run's own; with --hub "+bus.DefaultPrefix+")")
	s3Endpoint := f.String("s3-endpoint", "", "S3 endpoint host:port or URL")
	s3Region := f.String("s3-region", "us-east-1", "S3 region")
	s3Access := f.String("s3-access-key", "", "S3 access key")
	s3Secret := f.String("s3-secret-key", "", "S3 secret key")
	s3TLS := f.Bool("s3-tls", false, "use HTTPS to S3 (a URL endpoint's scheme wins)")
	bucket := f.String("s3-bucket", "modelfleet-sim", "bucket for the release (created if missing, in-process hub)")
	hubURL := f.String("hub", "", "existing hub API URL: push and roll out through it instead of an in-process hub")
	token := f.String("token", "", "API token of --hub (env MODELFLEET_TOKEN)")
	trustRoot := f.String("trust-root", "", "root.json of --hub, the agents' initial trust")
	selfContained := f.Bool("self-contained", false, "run the embedded broker and S3 of 'fleethub dev' in this process")
	rate := f.Int("connect-rate", 500, "agents that start connecting per second")
	timeout := f.Duration("timeout", 0, "how long the rollout may take (0: scaled with --agents and --artifact-size)")
	workDir := f.String("work-dir", "", "directory for keys, store, artifact and blobs (default: a temporary one, removed)")
	logLevel := f.String("log-level", "warn", "log level of progress messages on stderr: debug, info, warn, error")
	hubLogLevel := f.String("hub-log-level", "warn", "log level of the in-process hub on stderr (info logs every assignment)")
	out := cli.AddOutputFlag(cmd)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		size, err := sim.ParseSize(*sizeStr)
		if err != nil {
			return fmt.Errorf("--artifact-size: %w", err)
		}
		ctx := cmd.Context()
		log := newLogger(cmd.ErrOrStderr(), *logLevel)
		cfg := sim.Config{
			Agents: *agents, ArtifactBytes: size, Download: *download,
			MQTT:        bus.Config{Username: *mqttUser, Password: *mqttPass},
			TopicPrefix: *prefix,
			S3: fetch.ClientOptions{Endpoint: *s3Endpoint, Region: *s3Region, AccessKey: *s3Access,
				SecretKey: *s3Secret, Insecure: !*s3TLS},
			Bucket: *bucket, ConnectPerSecond: *rate, Timeout: *timeout,
			Logger: log.With("component", "simulate"), HubLogger: newLogger(cmd.ErrOrStderr(), *hubLogLevel).With("component", "hub"),
		}
		if *broker != "" {
			cfg.MQTT.Brokers = []string{*broker}
		}
		if *hubURL != "" {
			t := *token
			if t == "" {
				t = os.Getenv("MODELFLEET_TOKEN")
			}
			cfg.Hub = &sim.RemoteHub{URL: *hubURL, Token: t, TrustRoot: *trustRoot}
		}
		if *workDir != "" {
			// The embedded S3 endpoint changes the working directory.
			if cfg.WorkDir, err = filepath.Abs(*workDir); err != nil {
				return err
			}
		}

		stdout := cmd.OutOrStdout()
		embedded := *selfContained || (*broker == "" && *s3Endpoint == "" && *hubURL == "")
		if embedded {
			if *broker != "" || *s3Endpoint != "" || *hubURL != "" {
				return errors.New("--self-contained runs its own broker, S3 and hub: drop --broker, --s3-endpoint and --hub")
			}
			dir, err := os.MkdirTemp("", "modelfleet-sim-env-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			envLog := newLogger(cmd.ErrOrStderr(), "warn")
			b, err := devenv.StartBroker(ctx, devenv.BrokerConfig{Addr: "127.0.0.1:0", Logger: envLog})
			if err != nil {
				return err
			}
			defer b.Close()
			// The embedded S3 gateway prints start-up lines on os.Stdout,
			// which would corrupt -o json: send them to stderr.
			if stdout == os.Stdout {
				os.Stdout = os.Stderr
				defer func() { os.Stdout = stdout.(*os.File) }()
			}
			s3, err := devenv.StartS3(ctx, devenv.S3Config{Addr: "127.0.0.1:0", DataDir: filepath.Join(dir, "s3"), Bucket: *bucket, Logger: envLog})
			if err != nil {
				return err
			}
			defer s3.Close()
			cfg.MQTT.Brokers = []string{b.URL()}
			cfg.S3 = fetch.ClientOptions{Endpoint: s3.Endpoint(), Region: s3.Region(), AccessKey: s3.AccessKey(), SecretKey: s3.SecretKey(), Insecure: true}
			cfg.Bucket = s3.Bucket()
			log.Info("self-contained: embedded broker and S3", "broker", b.URL(), "s3", s3.Endpoint())
		}

		res, runErr := sim.Run(ctx, cfg)
		if res != nil && (runErr == nil || errors.Is(runErr, sim.ErrNotConverged)) {
			if *out == cli.OutputJSON {
				if err := cli.WriteJSON(stdout, res); err != nil {
					return err
				}
			} else {
				where := "broker " + strings.Join(cfg.MQTT.Brokers, ",") + ", S3 " + cfg.S3.Endpoint
				if embedded {
					where = "embedded broker and S3 (self-contained)"
				}
				printSimulation(stdout, res, where, cfg.Hub != nil)
			}
		}
		return runErr
	}
	return cmd
}

func printSimulation(w io.Writer, r *sim.Result, where string, remote bool) {
	hubKind := "in-process hub core"
	if remote {
		hubKind = "remote hub (API)"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "agents\t%d (%d converged)\n", r.Agents, r.Converged)
	fmt.Fprintf(tw, "artifact\t%d bytes\n", r.ArtifactBytes)
	fmt.Fprintf(tw, "download\t%s\n", r.Download)
	fmt.Fprintf(tw, "setup\t%s, %s\n", hubKind, where)
	fmt.Fprintf(tw, "connect\t%s\n", seconds(r.ConnectSeconds))
	fmt.Fprintf(tw, "assignment received p50\t%s\n", seconds(r.AssignedP50Seconds))
	fmt.Fprintf(tw, "assignment received max\t%s\n", seconds(r.AssignedMaxSeconds))
	fmt.Fprintf(tw, "rollout p50\t%s\n", seconds(r.P50Seconds))
	fmt.Fprintf(tw, "rollout p99\t%s\n", seconds(r.P99Seconds))
	fmt.Fprintf(tw, "rollout max\t%s\n", seconds(r.MaxSeconds))
	fmt.Fprintf(tw, "rollout total\t%s (until the hub marked it succeeded)\n", seconds(r.TotalSeconds))
	if r.S3BytesServed > 0 {
		fmt.Fprintf(tw, "S3 bytes served\t%d\n", r.S3BytesServed)
	} else {
		fmt.Fprintf(tw, "S3 bytes served\tnot measured\n")
	}
	fmt.Fprintf(tw, "goroutines peak\t%d\n", r.GoroutinesPeak)
	fmt.Fprintf(tw, "RSS peak\t%.1f MiB\n", float64(r.RSSPeakBytes)/(1<<20))
	tw.Flush()
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}
