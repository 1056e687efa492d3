package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/internal/cli"
	"github.com/modelfleet/modelfleet/internal/config"
)

// configFlags holds --config and the per-field flags shared by the commands
// that read the agent configuration.
type configFlags struct {
	path string
	fs   *pflag.FlagSet
}

func addConfigFlags(cmd *cobra.Command) *configFlags {
	cf := &configFlags{fs: cmd.Flags()}
	cmd.Flags().StringVarP(&cf.path, "config", "c", "", "configuration file (default "+agent.DefaultConfigPath+" if it exists; env MODELFLEET_CONFIG)")
	defaults := agent.DefaultConfig()
	config.BindFlags(cmd.Flags(), &defaults)
	return cf
}

// load builds the configuration: defaults, file, environment, flags; then
// fills a derived device ID.
func (cf *configFlags) load() (agent.Config, error) {
	cfg := agent.DefaultConfig()
	path, optional := cf.path, false
	if path == "" {
		path = os.Getenv("MODELFLEET_CONFIG")
	}
	if path == "" {
		path, optional = agent.DefaultConfigPath, true
	}
	if err := config.Load(&cfg, path, optional, os.LookupEnv, cf.fs); err != nil {
		return cfg, err
	}
	if cfg.DeviceID == "" {
		id, err := agent.DefaultDeviceID()
		if err != nil {
			return cfg, err
		}
		cfg.DeviceID = id
	}
	return cfg, nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func newRunCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: receive assignments, install and serve models",
		Example: `  # as the systemd unit does
  fleetagent run --config /etc/modelfleet/agent.yaml

  # against a hub started with fleethub dev (it prints this line for you)
  fleetagent run --device-id press-01 --labels site=plant-a \
    --mqtt-brokers tcp://127.0.0.1:1883 --s3-endpoint http://127.0.0.1:9000 \
    --trust-root fleethub-dev/keys/root.json --data-dir /tmp/press-01`,
		Long: `Run the agent daemon. It connects to the MQTT broker, receives this device's
signed assignment, downloads and verifies the model artifacts from S3 and
serves them with ONNX Runtime. It keeps serving the last active models
while the hub, the broker or S3 are unreachable.

Configuration comes from the YAML file (--config), MODELFLEET_* environment
variables and the flags below, later ones winning.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("invalid configuration (see `fleetagent config validate`):\n%w", err)
		}
		log := newLogger(cfg.LogLevel)
		log.Info("starting fleetagent", "device", cfg.DeviceID, "brokers", strings.Join(cfg.MQTT.Brokers, ","), "data_dir", cfg.DataDir)
		return agent.New(cfg, log).Run(cmd.Context())
	}
	return cmd
}

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check and show the agent configuration"}

	validate := &cobra.Command{
		Use:     "validate",
		Short:   "Report every problem in the configuration, naming the field",
		Example: `  fleetagent config validate --config /etc/modelfleet/agent.yaml`,
		Args:    cobra.NoArgs,
	}
	vcf := addConfigFlags(validate)
	validate.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := vcf.load()
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			return fmt.Errorf("configuration has problems:\n%w", err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), "configuration OK")
		return nil
	}

	show := &cobra.Command{
		Use:   "show",
		Short: "Print the effective configuration (secrets masked)",
		Example: `  fleetagent config show --config /etc/modelfleet/agent.yaml
  MODELFLEET_LOG_LEVEL=debug fleetagent config show -o json`,
		Args: cobra.NoArgs,
	}
	scf := addConfigFlags(show)
	out := cli.AddOutputFlag(show)
	show.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		cfg, err := scf.load()
		if err != nil {
			return err
		}
		if *out == cli.OutputJSON {
			m := map[string]string{}
			for _, line := range config.Dump(&cfg, agent.SecretKeys...) {
				k, v, _ := strings.Cut(line, " = ")
				m[k] = v
			}
			return cli.WriteJSON(cmd.OutOrStdout(), m)
		}
		for _, line := range config.Dump(&cfg, agent.SecretKeys...) {
			fmt.Fprintln(cmd.OutOrStdout(), line)
		}
		return nil
	}
	cmd.AddCommand(validate, show)
	return cmd
}
