package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/internal/cli"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/pki"
	"github.com/modelfleet/modelfleet/manifest"
)

func newKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create and rotate the signing keys of the trust root",
		Long: `The trust root (root.json) lists the keys of three roles: root signs
root.json itself, release signs model manifests, director (the hub) signs
device assignments. See docs/trust.md.`,
		Example: `  fleethub keys init --dir ./keys
  fleethub keys rotate --dir ./keys --replace director`,
	}
	cmd.AddCommand(newKeysInitCommand(), newKeysRotateCommand())
	return cmd
}

// roleFlags binds --<role>-keys and --<role>-threshold for every role.
type roleFlags map[string]*keys.RoleSpec

func addRoleFlags(cmd *cobra.Command, defaults keys.RoleSpec, what string) roleFlags {
	f := roleFlags{}
	for _, role := range manifest.Roles {
		spec := defaults
		f[role] = &spec
		cmd.Flags().IntVar(&spec.Keys, role+"-keys", defaults.Keys, fmt.Sprintf("number of %s keys%s", role, what))
		cmd.Flags().IntVar(&spec.Threshold, role+"-threshold", defaults.Threshold, fmt.Sprintf("signatures the %s role needs%s", role, what))
	}
	return f
}

func newKeysInitCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Create root, release and director keys and a signed root.json",
		Long: `Create a key directory: private keys (PEM, mode 0600) for the roles root,
release and director, and root.json version 1 signed by the root keys.
Refuses to touch a directory that already holds keys.

It also creates the device CA in DIR/ca (ca.pem, ca-key.pem; ECDSA P-256),
which signs the MQTT client certificates of enrolled devices, and the hub's
own client certificate (hub-client.pem, hub-client-key.pem, CN fleethub) for
hub.mqtt.cert_file and hub.mqtt.key_file. Give ca.pem to the broker as the
CA of client certificates.

Afterwards move the root keys (and, if releases are signed elsewhere, the
release keys) offline; the hub needs only the director key and root.json.`,
		Example: `  fleethub keys init --dir ./keys
  fleethub keys init --dir ./keys --root-keys 3 --root-threshold 2 --expires 8760h -o json`,
		Args: cobra.NoArgs,
	}
	out := cli.AddOutputFlag(cmd)
	dir := cmd.Flags().String("dir", "", "key directory to create (required)")
	expires := cmd.Flags().Duration("expires", 365*24*time.Hour, "how long root.json is valid")
	roles := addRoleFlags(cmd, keys.RoleSpec{Keys: 1, Threshold: 1}, "")
	hubClient := cmd.Flags().String("hub-client-name", pki.DefaultHubClientName, "common name (MQTT user name) of the hub's client certificate")
	_ = cmd.MarkFlagRequired("dir")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		opts := keys.DefaultInitOptions()
		opts.Expires = *expires
		opts.Root, opts.Release, opts.Director = *roles[manifest.RoleRoot], *roles[manifest.RoleRelease], *roles[manifest.RoleDirector]
		res, err := keys.Init(cmd.Context(), *dir, opts)
		if err != nil {
			return err
		}
		ca, err := initDeviceCA(*dir, *hubClient) // enroll.go: device CA and the hub's MQTT client certificate
		if err != nil {
			return err
		}
		if *out == cli.OutputJSON {
			return cli.WriteJSON(cmd.OutOrStdout(), struct {
				*keys.InitResult
				DeviceCA *deviceCAFiles `json:"device_ca"`
			}{res, ca})
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "created %s (version %d, expires %s)\n", res.RootPath, res.Root.Version, res.Root.Expires.Format(time.RFC3339))
		printKeyFiles(cmd, res.Keys)
		fmt.Fprintf(w, "created the device CA %s and the hub's MQTT client certificate %s (CN %s)\n", ca.CACert, ca.HubClientCert, *hubClient)
		fmt.Fprintln(w, "Move the root keys offline; bring a threshold of them back for `fleethub keys rotate`.")
		return nil
	}
	return cmd
}

func newKeysRotateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate --dir DIR [--replace ROLE,...]",
		Short: "Write the next root version, optionally replacing a role's keys",
		Long: `Write root.json version N+1: the roles named by --replace get fresh keys
(--<role>-keys and --<role>-threshold set their number, default: as now),
every rotation also renews the expiry. The new root is signed by a threshold
of the current AND of the new root keys, which must be in --dir, and is
checked the way agents check it before anything is written. The previous root
is kept as root.<N>.json; keys no role lists any more move to retired/.

Publish every root version in order: agents accept only version N+1.`,
		Example: `  fleethub keys rotate --dir ./keys
  fleethub keys rotate --dir ./keys --replace release --release-keys 2 --release-threshold 2 -o json`,
		Args: cobra.NoArgs,
	}
	out := cli.AddOutputFlag(cmd)
	dir := cmd.Flags().String("dir", "", "key directory (required)")
	expires := cmd.Flags().Duration("expires", 365*24*time.Hour, "how long the new root.json is valid")
	replace := cmd.Flags().StringSlice("replace", nil, "roles that get new keys: root, release, director")
	roles := addRoleFlags(cmd, keys.RoleSpec{}, " after --replace (default: as now)")
	_ = cmd.MarkFlagRequired("dir")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		opts := keys.RotateOptions{Expires: *expires, Replace: map[string]keys.RoleSpec{}}
		for _, role := range *replace {
			spec, ok := roles[role]
			if !ok {
				return fmt.Errorf("--replace: unknown role %q (want root, release or director)", role)
			}
			opts.Replace[role] = *spec
		}
		for _, role := range manifest.Roles {
			_, replaced := opts.Replace[role]
			for _, name := range []string{role + "-keys", role + "-threshold"} {
				if cmd.Flags().Changed(name) && !replaced {
					return fmt.Errorf("--%s needs --replace %s", name, role)
				}
			}
		}
		res, err := keys.Rotate(cmd.Context(), *dir, opts)
		if err != nil {
			return err
		}
		if *out == cli.OutputJSON {
			return cli.WriteJSON(cmd.OutOrStdout(), res)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "wrote %s (version %d, expires %s); previous root kept as %s\n",
			res.RootPath, res.Root.Version, res.Root.Expires.Format(time.RFC3339), res.ArchivedRoot)
		if len(res.NewKeys) > 0 {
			fmt.Fprintln(w, "new keys:")
			printKeyFiles(cmd, res.NewKeys)
		}
		if len(res.Retired) > 0 {
			fmt.Fprintln(w, "retired keys:")
			printKeyFiles(cmd, res.Retired)
		}
		return nil
	}
	return cmd
}

func printKeyFiles(cmd *cobra.Command, files []keys.KeyFile) {
	for _, k := range files {
		fmt.Fprintf(cmd.OutOrStdout(), "  %-8s  %s  %s\n", k.Role, k.KeyID[:16], k.Path)
	}
}
