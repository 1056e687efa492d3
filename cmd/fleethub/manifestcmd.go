package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/internal/cli"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

func newManifestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Sign and verify model manifests (role release)",
		Example: `  fleethub manifest sign --key keys/release-1a2b3c4d5e6f7a8b.pem manifest.json --out manifest.signed.json
  fleethub manifest verify --root keys/root.json manifest.signed.json`,
	}
	cmd.AddCommand(newManifestSignCommand(), newManifestVerifyCommand())
	return cmd
}

func newManifestSignCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sign --key KEY IN",
		Short: "Sign a model manifest with a release key",
		Long: `Sign IN (a file, or - for stdin) with the private key file KEY.

IN is an unsigned model manifest (see docs/trust.md; "schema" and "type" may
be left out), or an already signed manifest envelope, which gets one more
signature (for a release role with a threshold above one).

The signed envelope goes to --out (written atomically) or to stdout; with
--out, a summary is printed in the -o format.`,
		Example: `  fleethub manifest sign --key keys/release-1a2b3c4d5e6f7a8b.pem manifest.json --out manifest.signed.json
  fleethub model manifest detector 2.2.0 | fleethub manifest sign --key release.pem - > detector-2.2.0.signed.json`,
		Args: cobra.ExactArgs(1),
	}
	out := cli.AddOutputFlag(cmd)
	keyPath := cmd.Flags().String("key", "", "private key file of a release key (required)")
	outPath := cmd.Flags().String("out", "", "file to write the signed manifest to (default: stdout)")
	_ = cmd.MarkFlagRequired("key")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		signer, err := keys.LoadSigner(*keyPath)
		if err != nil {
			return err
		}
		raw, err := readInput(cmd, args[0])
		if err != nil {
			return err
		}
		signed, m, err := manifest.SignModelManifest(cmd.Context(), raw, signer)
		if err != nil {
			return fmt.Errorf("%s: %w", args[0], err)
		}
		signed = append(signed, '\n')
		if *outPath == "" {
			_, err := cmd.OutOrStdout().Write(signed)
			return err
		}
		if err := keys.WriteFileAtomic(*outPath, signed, 0o644); err != nil {
			return err
		}
		summary := struct {
			Model   string `json:"model"`
			Version string `json:"version"`
			KeyID   string `json:"keyid"`
			Path    string `json:"path"`
		}{m.Name, m.Version, signer.KeyID(), *outPath}
		if *out == cli.OutputJSON {
			return cli.WriteJSON(cmd.OutOrStdout(), summary)
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "signed %s with key %s -> %s\n", m.Ref(), signer.KeyID()[:16], *outPath)
		return err
	}
	return cmd
}

func newManifestVerifyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify --root ROOT FILE",
		Short: "Verify a signed model manifest against a trust root",
		Long: `Verify FILE (or - for stdin) as an agent would: size, format, release
signatures against ROOT (a root.json), artifact sizes. Prints each check that
passed and the one that failed; exits non-zero on failure.`,
		Example: `  fleethub manifest verify --root keys/root.json manifest.signed.json
  fleethub manifest verify --root keys/root.json --variants cuda,cpu manifest.signed.json -o json`,
		Args: cobra.ExactArgs(1),
	}
	out := cli.AddOutputFlag(cmd)
	rootPath := cmd.Flags().String("root", "", "trusted root.json (required)")
	variants := cmd.Flags().StringSlice("variants", nil, "device variants, best first, to pick an artifact (default: check all artifacts)")
	maxArtifact := cmd.Flags().Int64("max-artifact-bytes", manifest.DefaultMaxArtifactBytes, "largest artifact accepted")
	_ = cmd.MarkFlagRequired("root")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		cfg := manifest.DefaultConfig()
		cfg.Variants = *variants
		cfg.MaxArtifactBytes = *maxArtifact
		v, err := newVerifier(*rootPath, cfg)
		if err != nil {
			return err
		}
		raw, err := readInput(cmd, args[0])
		if err != nil {
			return err
		}
		vm, verr := v.VerifyManifest(raw)
		rep := newReport(manifest.KindModel, verr)
		if verr == nil {
			rep.Checks = vm.Checks
			rep.Name = vm.Manifest.Ref()
			rep.Model = vm.Manifest
			rep.Digest = vm.Digest
			rep.Artifact = vm.Artifact
		}
		if err := rep.write(cmd, *out); err != nil {
			return err
		}
		return verr
	}
	return cmd
}

// report is the output of the verify commands.
type report struct {
	OK   bool   `json:"ok"`
	Kind string `json:"kind"`
	Name string `json:"name,omitempty"`
	// Checks lists the checks that passed, in order.
	Checks []string `json:"checks"`
	Failed *failure `json:"failed,omitempty"`

	Model    *manifest.ModelManifest `json:"model,omitempty"`
	Digest   string                  `json:"digest,omitempty"`
	Artifact *manifest.Artifact      `json:"artifact,omitempty"`

	Assignment *assignmentSummary `json:"assignment,omitempty"`
}

type failure struct {
	Check   string `json:"check"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

func newReport(kind string, err error) *report {
	rep := &report{OK: err == nil, Kind: kind, Checks: []string{}}
	var ve *manifest.VerifyError
	if errors.As(err, &ve) {
		rep.Kind, rep.Name = ve.Kind, ve.Name
		rep.Checks = append(rep.Checks, ve.Passed...)
		rep.Failed = &failure{Check: ve.Check, Error: ve.Err.Error(), Message: ve.Msg}
	} else if err != nil {
		rep.Failed = &failure{Error: err.Error()}
	}
	return rep
}

func (r *report) write(cmd *cobra.Command, format string) error {
	if format == cli.OutputJSON {
		return cli.WriteJSON(cmd.OutOrStdout(), r)
	}
	w := cmd.OutOrStdout()
	for _, c := range r.Checks {
		fmt.Fprintf(w, "ok    %s\n", c)
	}
	if r.Failed != nil {
		fmt.Fprintf(w, "FAIL  %s: %s: %s\n", r.Failed.Check, r.Failed.Error, r.Failed.Message)
		return nil
	}
	switch {
	case r.Model != nil:
		fmt.Fprintf(w, "verified model %s (digest %s)\n", r.Name, r.Digest)
		for _, a := range r.Model.Artifacts {
			mark := " "
			if r.Artifact != nil && a.Variant == r.Artifact.Variant {
				mark = "*"
			}
			fmt.Fprintf(w, " %s %-6s %s sha256:%s %d bytes\n", mark, a.Variant, a.Key, a.SHA256, a.Size)
		}
	case r.Assignment != nil:
		a := r.Assignment
		fmt.Fprintf(w, "verified assignment for device %s, sequence %d, expires %s\n", a.Device, a.Sequence, a.Expires)
		for _, m := range a.Models {
			note := ""
			if m.Downgrade {
				note = " (downgrade allowed by the hub)"
			}
			fmt.Fprintf(w, "  %-6s %s@%s %s %s%s\n", m.Mode, m.Name, m.Version, m.Variant, m.Key, note)
		}
	}
	return nil
}

func newVerifier(rootPath string, cfg manifest.Config) (*manifest.Verifier, error) {
	raw, err := os.ReadFile(rootPath)
	if err != nil {
		return nil, fmt.Errorf("read trusted root: %w", err)
	}
	v, err := manifest.NewVerifier(raw, cfg)
	if err != nil {
		return nil, fmt.Errorf("trusted root %s: %w", rootPath, err)
	}
	return v, nil
}

// readInput reads a file argument, "-" meaning stdin, capped at the default
// document size limit (plus one byte, so the verifier reports oversize).
func readInput(cmd *cobra.Command, name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = cmd.InOrStdin()
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, manifest.DefaultMaxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}
