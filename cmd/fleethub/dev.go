package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/hub/devenv"
	"github.com/modelfleet/modelfleet/internal/keys"
)

// devBucket is the bucket `fleethub dev` pushes models to.
const devBucket = "models"

// hubEnv is the environment variable the client commands take the hub URL
// from when --hub is not given (see clientFlags.client).
const hubEnv = "MODELFLEET_HUB"

func newDevCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a self-contained hub for development: embedded MQTT broker, S3 and store",
		Long: `Run the hub with everything embedded, listening on loopback only:
an MQTT broker, an S3-compatible endpoint (objects under DATA_DIR/s3), the
SQLite store (DATA_DIR/hub.db) and, on first start, dev signing keys
(DATA_DIR/keys, root.json included). It prints the fleetagent command line
that joins it. Data persists across restarts of the same --data-dir.

Not for production: the keys are online and the broker authenticates nobody.`,
		Example: `  fleethub dev --data-dir ./fleethub-dev
  fleethub model push examples/models/vibration-anomaly-v1.onnx --name vibration-anomaly --version 1.0.0`,
		Args: cobra.NoArgs,
	}
	dataDir := cmd.Flags().String("data-dir", "fleethub-dev", "directory for keys, store, broker and S3 data")
	apiAddr := cmd.Flags().String("api-addr", defaultAPIAddr, "HTTP API listen address (loopback)")
	brokerAddr := cmd.Flags().String("broker-addr", devenv.DefaultBrokerAddr, "MQTT listen address (loopback; port 0: any free port)")
	s3Addr := cmd.Flags().String("s3-addr", devenv.DefaultS3Addr, "S3 listen address (loopback; port 0: any free port)")
	logLevel := cmd.Flags().String("log-level", "info", "log level: debug, info, warn, error")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		log := newLogger(cmd.ErrOrStderr(), *logLevel)
		// The embedded S3 endpoint changes the working directory: resolve
		// every path first.
		dir, err := filepath.Abs(*dataDir)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		keyDir := filepath.Join(dir, "keys")
		if _, err := os.Stat(filepath.Join(keyDir, keys.RootFile)); errors.Is(err, os.ErrNotExist) {
			res, err := keys.Init(ctx, keyDir, keys.DefaultInitOptions())
			if err != nil {
				return fmt.Errorf("create dev keys: %w", err)
			}
			log.Info("created dev keys", "dir", keyDir, "root", res.RootPath)
		} else if err != nil {
			return err
		}

		broker, err := devenv.StartBroker(ctx, devenv.BrokerConfig{Addr: *brokerAddr, DataDir: filepath.Join(dir, "mqtt"), Logger: log})
		if err != nil {
			return err
		}
		defer broker.Close()
		s3, err := devenv.StartS3(ctx, devenv.S3Config{Addr: *s3Addr, DataDir: filepath.Join(dir, "s3"), Bucket: devBucket, Logger: log})
		if err != nil {
			return err
		}
		defer s3.Close()

		cfg := defaultServerConfig()
		cfg.LogLevel = *logLevel
		cfg.Hub.MQTT.Brokers = []string{broker.URL()}
		cfg.Hub.KeyDir = keyDir
		cfg.Hub.StorePath = filepath.Join(dir, "hub.db")
		cfg.Hub.TickMillis = 1000
		cfg.S3 = serverS3Config{Endpoint: s3.Endpoint(), Region: s3.Region(), AccessKey: s3.AccessKey(),
			SecretKey: s3.SecretKey(), Insecure: true, Bucket: s3.Bucket()}
		cfg.API.Addr = *apiAddr
		cfg.Enroll = serverEnrollConfig{S3AccessKey: s3.AccessKey(), S3SecretKey: s3.SecretKey()} // dev only: the embedded S3 has one key
		if !isLoopbackAddr(cfg.API.Addr) {
			return fmt.Errorf("--api-addr %s: the dev hub has no API token, so it listens on loopback only", cfg.API.Addr)
		}
		return runServer(ctx, cfg, log, func(addr string) {
			printJoin(cmd.OutOrStdout(), addr, os.Getenv(hubEnv), broker.URL(), s3, filepath.Join(keyDir, keys.RootFile), filepath.Join(dir, "agent-dev-1"))
		})
	}
	return cmd
}

// s3Endpoint is what the banner says about the embedded S3 endpoint
// (*devenv.S3).
type s3Endpoint interface {
	Endpoint() string
	Region() string
	AccessKey() string
	SecretKey() string
	Bucket() string
}

// agentCommand is the fleetagent command line that joins a dev hub.
func agentCommand(brokerURL string, s3 s3Endpoint, rootPath, agentDir string) string {
	return strings.Join([]string{
		"fleetagent run",
		"--device-id dev-1 --labels site=dev",
		"--mqtt-brokers " + brokerURL,
		"--s3-endpoint " + s3.Endpoint() + " --s3-region " + s3.Region(),
		"--s3-access-key " + s3.AccessKey() + " --s3-secret-key " + s3.SecretKey() + " --s3-insecure true",
		"--trust-root " + rootPath,
		"--data-dir " + agentDir,
	}, " \\\n    ")
}

// printJoin prints the banner: where the hub listens, the fleetagent
// command line that joins it and the first commands to try. envHub is the
// MODELFLEET_HUB of the environment: when the fleethub CLI would not reach
// the API by default (another --api-addr, or MODELFLEET_HUB pointing
// elsewhere), the banner says how to point it there.
func printJoin(w io.Writer, apiAddr, envHub, brokerURL string, s3 s3Endpoint, rootPath, agentDir string) {
	url := "http://" + apiAddr
	cliURL := envHub
	if cliURL == "" {
		cliURL = defaultHubURL
	}
	apiNote, export := "fleethub CLI default; no token", ""
	switch {
	case strings.TrimSuffix(cliURL, "/") != url:
		apiNote = "no token"
		export = fmt.Sprintf("\nPoint the fleethub CLI at it (it talks to %s now):\n  export %s=%s\n", cliURL, hubEnv, url)
	case envHub != "":
		apiNote = hubEnv + " points here; no token"
	}
	fmt.Fprintf(w, `fleethub dev is running.
  API:    %s   (%s)
  MQTT:   %s
  S3:     %s  bucket %s
%s
Join an agent with:
  %s

Then push a model and roll it out:
  fleethub model push examples/models/vibration-anomaly-v1.onnx --name vibration-anomaly --version 1.0.0
  fleethub rollout start --model vibration-anomaly --version 1.0.0 --waves 100 --soak 0s
`, url, apiNote, brokerURL, s3.Endpoint(), s3.Bucket(), export, agentCommand(brokerURL, s3, rootPath, agentDir))
}
