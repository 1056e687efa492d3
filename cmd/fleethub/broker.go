package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/hub/brokerconf"
	"github.com/modelfleet/modelfleet/internal/atomicfile"
	"github.com/modelfleet/modelfleet/internal/cli"
	"github.com/modelfleet/modelfleet/internal/config"
)

func newBrokerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Generate the production MQTT broker's access configuration",
		Long: `The broker is the fleet's only shared channel: locked down, each device can
read only its own assignment and the root, and report only about itself.
See docs/security.md.`,
		Example: `  fleethub broker config --kind mosquitto --out /etc/mosquitto/conf.d/modelfleet`,
	}
	cmd.AddCommand(newBrokerConfigCommand())
	return cmd
}

// brokerFileResult is what `broker config -o json` prints.
type brokerFileResult struct {
	Kind  string   `json:"kind"`
	Auth  string   `json:"auth"`
	Files []string `json:"files"`
	// PasswordsFile holds the generated plain-text passwords (auth password).
	PasswordsFile string `json:"passwords_file,omitempty"`
}

func newBrokerConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config --kind mosquitto --out DIR",
		Short: "Write mosquitto.conf and an ACL that confine every device to its own topics",
		Long: `Write a Mosquitto 2.0 configuration for production into DIR:

  mosquitto.conf     TLS listener (8883), no anonymous clients, persistence,
                     max_queued_messages raised for the retained state of a
                     large fleet (mosquitto #2196)
  modelfleet.acl     per-device rules: a device reads only its own assignment,
                     the root and its inference requests, and publishes only
                     its own state, online flag, telemetry and events; the hub
                     (--hub-identity, default fleethub) has the whole prefix;
                     factory bindings and other clients as configured

With --auth certificate (the default) clients need a certificate from the
device CA (require_certificate) and the certificate's common name is the
user name (use_identity_as_username): the device ID, or fleethub for the hub.
With --auth password every device listed in the config file, the hub and
every client get a random password: modelfleet.passwd (hashed, for
Mosquitto) and passwords.json (plain text, mode 0600: hand each password to
its owner, then delete the file).

Bindings, devices with labels and clients are set in a YAML file (--config);
see examples/mosquitto/broker.yaml. The paths written into mosquitto.conf
(--listener-ca-file, --acl-file, ...) are where the files will be on the
broker host. Existing files are replaced only with --force.`,
		Example: `  fleethub broker config --kind mosquitto --out ./broker
  fleethub broker config --kind mosquitto --config broker.yaml --out ./broker --force
  fleethub broker config --kind mosquitto --auth password --config broker.yaml --out ./broker -o json`,
		Args: cobra.NoArgs,
	}
	out := cli.AddOutputFlag(cmd)
	kind := cmd.Flags().String("kind", "mosquitto", "broker to configure (only mosquitto)")
	dir := cmd.Flags().String("out", "", "directory to write the files into (required)")
	path := cmd.Flags().StringP("config", "c", "", "YAML file with devices, bindings and clients (optional)")
	force := cmd.Flags().Bool("force", false, "replace existing files (with --auth password: new passwords for everyone)")
	defaults := brokerconf.DefaultConfig()
	config.BindFlags(cmd.Flags(), &defaults)
	_ = cmd.MarkFlagRequired("out")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		if *kind != "mosquitto" {
			return fmt.Errorf("--kind %q: only mosquitto is supported; for other brokers, translate the rules in docs/security.md", *kind)
		}
		cfg := brokerconf.DefaultConfig()
		if err := config.Load(&cfg, *path, false, os.LookupEnv, cmd.Flags()); err != nil {
			return err
		}
		files, err := brokerconf.Render(cfg)
		if err != nil {
			return err
		}
		res, err := writeBrokerFiles(*dir, files, *force)
		if err != nil {
			return err
		}
		res.Kind, res.Auth = *kind, cfg.Auth
		if *out == cli.OutputJSON {
			return cli.WriteJSON(cmd.OutOrStdout(), res)
		}
		w := cmd.OutOrStdout()
		for _, f := range res.Files {
			fmt.Fprintln(w, "wrote", f)
		}
		fmt.Fprintf(w, "Install them on the broker host at the paths mosquitto.conf names (acl_file %s).\n", cfg.ACLFile)
		if res.PasswordsFile != "" {
			fmt.Fprintf(w, "Plain-text passwords are in %s: give each to its owner, then delete the file.\n", res.PasswordsFile)
		}
		return nil
	}
	return cmd
}

// writeBrokerFiles writes the generated files into dir, each atomically.
// Without force it refuses when any of them exists, before writing any.
func writeBrokerFiles(dir string, f brokerconf.Files, force bool) (brokerFileResult, error) {
	type file struct {
		name string
		data []byte
		perm os.FileMode
	}
	files := []file{{"mosquitto.conf", f.MosquittoConf, 0o644}, {"modelfleet.acl", f.ACL, 0o644}}
	if f.PasswordFile != nil {
		pw, err := json.MarshalIndent(f.Passwords, "", "  ")
		if err != nil {
			return brokerFileResult{}, err
		}
		files = append(files,
			file{"modelfleet.passwd", f.PasswordFile, 0o600},
			file{"passwords.json", append(pw, '\n'), 0o600})
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return brokerFileResult{}, fmt.Errorf("--out: %w", err)
	}
	if !force {
		for _, fl := range files {
			p := filepath.Join(dir, fl.name)
			if _, err := os.Stat(p); err == nil {
				return brokerFileResult{}, fmt.Errorf("%s exists: pass --force to replace the generated files", p)
			} else if !errors.Is(err, os.ErrNotExist) {
				return brokerFileResult{}, err
			}
		}
	}
	var res brokerFileResult
	for _, fl := range files {
		p := filepath.Join(dir, fl.name)
		if err := atomicfile.Write(p, fl.data, fl.perm); err != nil {
			return res, err
		}
		res.Files = append(res.Files, p)
		if fl.name == "passwords.json" {
			res.PasswordsFile = p
		}
	}
	return res, nil
}

func newS3Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "s3",
		Short:   "Generate S3 access policies for the artifact store",
		Example: `  fleethub s3 policy --bucket models > agent-policy.json`,
	}
	cmd.AddCommand(newS3PolicyCommand())
	return cmd
}

func newS3PolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy --bucket BUCKET [--prefix PREFIX]",
		Short: "Print the read-only S3 policy for agents' credentials",
		Long: `Print the policy for the credentials agents download artifacts with:
s3:GetObject on BUCKET/PREFIX/* and nothing else (no listing, no writes, no
other buckets). The same JSON works as a MinIO policy and an AWS IAM policy:

  mc admin policy create ALIAS modelfleet-agent agent-policy.json
  mc admin user add ALIAS AGENT_ACCESS_KEY AGENT_SECRET_KEY
  mc admin policy attach ALIAS modelfleet-agent --user AGENT_ACCESS_KEY

  aws iam create-policy --policy-name modelfleet-agent --policy-document file://agent-policy.json
  aws iam attach-user-policy --user-name modelfleet-agent --policy-arn ARN

The hub's own credentials (fleethub model push) need s3:PutObject as well;
see docs/security.md.`,
		Example: `  fleethub s3 policy --bucket models
  fleethub s3 policy --bucket artifacts --prefix modelfleet > agent-policy.json`,
		Args: cobra.NoArgs,
	}
	out := cli.AddOutputFlag(cmd)
	bucket := cmd.Flags().String("bucket", "", "artifact bucket (required)")
	prefix := cmd.Flags().String("prefix", "", "object key prefix the artifacts are under (default: the whole bucket)")
	_ = cmd.MarkFlagRequired("bucket")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// The policy is JSON either way; -o is accepted for consistency.
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		p, err := brokerconf.AgentS3Policy(*bucket, *prefix)
		if err != nil {
			return err
		}
		_, err = cmd.OutOrStdout().Write(p.JSON())
		return err
	}
	return cmd
}
