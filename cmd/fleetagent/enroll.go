package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/agent/enrollment"
	"github.com/modelfleet/modelfleet/internal/cli"
)

func newEnrollCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enroll --hub URL --token TOKEN",
		Short: "Enroll this device with a hub: get a certificate and write the agent configuration",
		Long: `Enroll this device with the hub using a one-time token from
` + "`fleethub devices enroll-token`" + `. The device's private key is generated here and
never leaves it; the hub signs a client certificate (common name = device ID,
valid one year unless the hub's enroll.cert_validity_hours says otherwise) and answers with the broker, S3 and trust-root settings.

Written: the configuration (--config; it may hold the S3 secret key) and, in
--cert-dir (default: the configuration's directory), device-key.pem,
device.pem, broker-ca.pem and root.json. The key and the configuration are
mode 0600, or 0640 with the directory's group when that is not root's (the
packages' root:modelfleet /etc/modelfleet, so the service can read them).
An existing enrollment (key or certificate) is replaced only with --force;
that check happens before the token is used. A configuration alone (the
package's template) is replaced and kept as <config>.pre-enroll. With an https hub URL the hub's certificate is verified against
--hub-ca or the system roots; plain http is accepted only to a loopback
address. Afterwards ` + "`fleetagent config validate`" + ` passes and ` + "`fleetagent run`" + ` joins
the fleet.`,
		Example: `  fleetagent enroll --hub https://hub.example.com:8400 --hub-ca /root/hub-ca.pem \
    --token mfe_… --config /etc/modelfleet/agent.yaml
  fleetagent enroll --hub http://127.0.0.1:8400 --token mfe_… --config ./agent.yaml \
    --data-dir ./agent-data --device-id press-01 -o json`,
		Args: cobra.NoArgs,
	}
	var opts enrollment.Options
	cmd.Flags().StringVar(&opts.HubURL, "hub", "", "hub API URL, e.g. https://hub.example.com:8400 (required)")
	cmd.Flags().StringVar(&opts.Token, "token", "", "one-time enrollment token (env MODELFLEET_ENROLL_TOKEN; keeps it out of the process list)")
	cmd.Flags().StringVar(&opts.HubCAFile, "hub-ca", "", "PEM CA bundle to verify the hub's TLS certificate (default: system roots)")
	cmd.Flags().StringVar(&opts.DeviceID, "device-id", "", "device ID to ask for (default: the one the token names, else chosen by the hub)")
	cmd.Flags().StringVarP(&opts.ConfigPath, "config", "c", agent.DefaultConfigPath, "agent configuration file to write")
	cmd.Flags().StringVar(&opts.CertDir, "cert-dir", "", "directory for key, certificate, CA bundle and root.json (default: the directory of --config)")
	cmd.Flags().StringVar(&opts.DataDir, "data-dir", agent.DefaultConfig().DataDir, "agent data directory to put in the configuration")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace an existing enrollment")
	timeout := cmd.Flags().Duration("timeout", enrollment.DefaultTimeout, "how long to wait for the hub")
	logLevel := cmd.Flags().String("log-level", "info", "log level: debug, info, warn, error")
	out := cli.AddOutputFlag(cmd)
	_ = cmd.MarkFlagRequired("hub")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		if opts.Token == "" {
			opts.Token = os.Getenv("MODELFLEET_ENROLL_TOKEN")
		}
		if opts.Token == "" {
			return fmt.Errorf("no enrollment token: pass --token or set MODELFLEET_ENROLL_TOKEN (make one with `fleethub devices enroll-token`)")
		}
		o := opts
		var level slog.Level
		if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
		ctx := cmd.Context()
		if *timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		res, err := enrollment.Enroll(ctx, o)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		if *out == cli.OutputJSON {
			return cli.WriteJSON(cmd.OutOrStdout(), res)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "enrolled as device %s (labels %s)\n", res.DeviceID, labelList(res.Labels))
		fmt.Fprintf(w, "  config:      %s\n  key:         %s\n  certificate: %s (expires %s; enroll again with a new token before then)\n  trust root:  %s\n",
			res.ConfigPath, res.KeyFile, res.CertFile, res.CertificateExpires.Format(time.RFC3339), res.RootFile)
		if res.BrokerCAFile != "" {
			fmt.Fprintf(w, "  broker CA:   %s\n", res.BrokerCAFile)
		}
		for _, warn := range res.Warnings {
			fmt.Fprintf(w, "warning: %s\n", warn)
		}
		fmt.Fprintf(w, "Check it with `fleetagent config validate --config %s`, then start `fleetagent run --config %s`.\n", res.ConfigPath, res.ConfigPath)
		return nil
	}
	return cmd
}

// labelList renders labels as k=v,k2=v2 in key order, "-" for none.
func labelList(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}
