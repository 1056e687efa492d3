package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/internal/cli"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

func newModelCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Push, list, show and sign model releases",
		Long: `A model release is a name, a semantic version and one ONNX file per hardware
variant (cpu, cuda, …), described by a manifest signed with the release key.
Releases never change: push a new version instead.`,
		Example: `  fleethub model push model.onnx --name detector --version 1.0.0
  fleethub model list
  fleethub model show detector 1.0.0`,
	}
	cmd.AddCommand(newModelPushCommand(), newModelListCommand(), newModelShowCommand(),
		newModelManifestCommand(), newModelAttachSignatureCommand())
	return cmd
}

func newModelPushCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "push FILE --name N --version V",
		Short: "Upload an ONNX model, sign its manifest and register the release",
		Long: `Upload FILE (the cpu variant) and any --variant files to the hub, which
stores them in its S3 bucket while hashing them, reads the input and output
tensors from the ONNX files, signs the manifest with the release key and
registers the release. With --sign-later the release is registered unsigned
for an offline signing step (fleethub model manifest, fleethub manifest sign,
fleethub model attach-signature; see docs/trust.md); rollouts refuse it until
it is signed.

Nothing is left half-registered when a step fails: uploaded objects are
deleted again. If the object store fails so that even that is impossible,
the error names the objects left behind; push the same version again with
--force to overwrite them (a registered release is never overwritten).`,
		Example: `  fleethub model push vibration-anomaly-v1.onnx --name vibration-anomaly --version 1.0.0
  fleethub model push cpu.onnx --variant cuda=cuda.onnx --name detector --version 2.1.0
  fleethub model push model.onnx --name detector --version 2.2.0 --sign-later -o json`,
		Args: cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	name := cmd.Flags().String("name", "", "model name (required)")
	version := cmd.Flags().String("version", "", "semantic version of the release (required)")
	variants := cmd.Flags().StringArray("variant", nil, "another variant: VARIANT=FILE, e.g. cuda=model-cuda.onnx (repeatable)")
	signLater := cmd.Flags().Bool("sign-later", false, "register the release unsigned, for offline signing")
	force := cmd.Flags().Bool("force", false, "overwrite objects a failed push of this version left in S3")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("version")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		req := api.PushModelRequest{Name: *name, Version: *version, SignLater: *signLater, Force: *force,
			Files: []api.PushFile{{Variant: "cpu", Path: args[0]}}}
		for _, v := range *variants {
			variant, path, ok := strings.Cut(v, "=")
			if !ok || variant == "" || path == "" {
				return fmt.Errorf("--variant %q: want VARIANT=FILE, e.g. cuda=model-cuda.onnx", v)
			}
			for _, f := range req.Files {
				if f.Variant == variant {
					return fmt.Errorf("--variant %s: variant given twice (FILE is the cpu variant)", variant)
				}
			}
			req.Files = append(req.Files, api.PushFile{Variant: variant, Path: path})
		}
		if isTerminal(cmd.ErrOrStderr()) && !cf.json() {
			var total int64
			for _, f := range req.Files {
				if st, err := os.Stat(f.Path); err == nil {
					total += st.Size()
				}
			}
			req.Progress = progressPrinter(cmd, total)
		}
		m, err := c.PushModel(cmd.Context(), req)
		if req.Progress != nil {
			fmt.Fprintln(cmd.ErrOrStderr())
		}
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), m)
		}
		state := "signed"
		if !m.Signed {
			state = "UNSIGNED (sign it before a rollout)"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "pushed %s@%s, %s\n", m.Name, m.Version, state)
		for _, a := range m.Artifacts {
			fmt.Fprintf(cmd.OutOrStdout(), "  %-6s %s  %d bytes  sha256:%s\n", a.Variant, a.Key, a.Size, a.SHA256)
		}
		return nil
	}
	return cmd
}

// progressPrinter returns a progress callback that redraws one line on the
// terminal at most every 200 ms.
func progressPrinter(cmd *cobra.Command, total int64) func(int64) {
	var last time.Time
	return func(sent int64) {
		if time.Since(last) < 200*time.Millisecond && sent < total {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = min(100, float64(sent)*100/float64(total))
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "\ruploading %.1f MiB of %.1f MiB (%3.0f%%)", float64(sent)/(1<<20), float64(total)/(1<<20), pct)
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newModelListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [NAME]",
		Short: "List the registered releases, of one model or of all",
		Example: `  fleethub model list
  fleethub model list vibration-anomaly -o json`,
		Args: cobra.MaximumNArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		name := ""
		if len(args) == 1 {
			name = args[0]
		}
		ms, err := c.Models(cmd.Context(), name)
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), ms)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tSIGNED\tVARIANTS\tCREATED")
		for _, m := range ms {
			var vs []string
			for _, a := range m.Artifacts {
				vs = append(vs, a.Variant)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Version, yesNo(m.Signed), strings.Join(vs, ","), m.Created.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	}
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func newModelShowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NAME VERSION",
		Short: "Show one release: artifacts and manifest",
		Example: `  fleethub model show vibration-anomaly 1.0.0
  fleethub model show vibration-anomaly 1.0.0 -o json`,
		Args: cobra.ExactArgs(2),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		m, err := c.Model(cmd.Context(), args[0], args[1])
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), m)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "model:    %s\nversion:  %s\nsigned:   %s\ncreated:  %s\nartifacts:\n", m.Name, m.Version, yesNo(m.Signed), m.Created.UTC().Format(time.RFC3339))
		for _, a := range m.Artifacts {
			fmt.Fprintf(w, "  %-6s %s  %d bytes  sha256:%s\n", a.Variant, a.Key, a.Size, a.SHA256)
		}
		return nil
	}
	return cmd
}

func newModelManifestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest NAME VERSION",
		Short: "Print a release's manifest envelope, e.g. to sign it offline",
		Long: `Print the manifest envelope of a release exactly as the hub stores it:
unsigned for a release pushed with --sign-later. Take it to the machine that
holds the release key, sign it there with fleethub manifest sign, and give the
result back with fleethub model attach-signature.

With --out the envelope is written to that file (atomically) and a summary is
printed in the -o format; otherwise the envelope itself goes to stdout.`,
		Example: `  fleethub model manifest detector 2.2.0 > detector-2.2.0.json
  fleethub model manifest detector 2.2.0 --out detector-2.2.0.json -o json`,
		Args: cobra.ExactArgs(2),
	}
	cf := addClientFlags(cmd)
	outPath := cmd.Flags().String("out", "", "file to write the envelope to (default: stdout)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		env, err := c.Manifest(cmd.Context(), args[0], args[1])
		if err != nil {
			return err
		}
		env = append(env, '\n')
		if *outPath == "" {
			_, err := cmd.OutOrStdout().Write(env)
			return err
		}
		if err := keys.WriteFileAtomic(*outPath, env, 0o644); err != nil {
			return err
		}
		signed := false
		if e, err := manifest.ParseEnvelope(env); err == nil {
			signed = len(e.Signatures) > 0
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), struct {
				Model   string `json:"model"`
				Version string `json:"version"`
				Signed  bool   `json:"signed"`
				Path    string `json:"path"`
			}{args[0], args[1], signed, *outPath})
		}
		state := "unsigned"
		if signed {
			state = "signed"
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote the %s manifest of %s@%s to %s\n", state, args[0], args[1], *outPath)
		return err
	}
	return cmd
}

func newModelAttachSignatureCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "attach-signature NAME VERSION FILE",
		Aliases: []string{"sign-attach"},
		Short:   "Attach an offline signature to a release pushed with --sign-later",
		Long: `Give the hub the signed manifest envelope of an unsigned release: FILE (or -
for stdin) as fleethub manifest sign wrote it. The hub checks that FILE is
signed by a threshold of the release keys of its current root.json and that
it signs exactly the manifest registered for NAME VERSION, then marks the
release signed; rollouts can use it from then on. A bad, foreign or
insufficient signature, or a manifest that differs, is refused and nothing
changes.`,
		Example: `  fleethub model manifest detector 2.2.0 > detector-2.2.0.json
  fleethub manifest sign --key keys/release-1a2b3c4d5e6f7a8b.pem detector-2.2.0.json --out detector-2.2.0.signed.json
  fleethub model attach-signature detector 2.2.0 detector-2.2.0.signed.json`,
		Args: cobra.ExactArgs(3),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		raw, err := readInput(cmd, args[2])
		if err != nil {
			return err
		}
		m, err := c.AttachSignature(cmd.Context(), args[0], args[1], raw)
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), m)
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s@%s is signed; start a rollout with: fleethub rollout start --model %s --version %s\n",
			m.Name, m.Version, m.Name, m.Version)
		return err
	}
	return cmd
}
