package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/internal/cli"
	"github.com/modelfleet/modelfleet/manifest"
)

func newAssignmentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "assignment",
		Short:   "Inspect device assignments (role director)",
		Example: `  fleethub assignment verify --root keys/root.json --device edge-1 assignment.json`,
	}
	cmd.AddCommand(newAssignmentVerifyCommand())
	return cmd
}

type assignmentSummary struct {
	Device   string         `json:"device"`
	Sequence uint64         `json:"sequence"`
	Issued   string         `json:"issued"`
	Expires  string         `json:"expires"`
	Models   []modelSummary `json:"models"`
}

type modelSummary struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Mode      string `json:"mode"`
	Variant   string `json:"variant"`
	Key       string `json:"key"`
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
	Digest    string `json:"digest"`
	Downgrade bool   `json:"downgrade,omitempty"`
}

func newAssignmentVerifyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify --root ROOT --device ID FILE",
		Short: "Verify a signed assignment as the device's agent would",
		Long: `Verify FILE (or - for stdin) exactly as the agent of device ID would:
director signatures against ROOT, device, sequence, expiry, and every
embedded model manifest against the release role, with the artifact the
device's --variants pick. --state names the agent's persisted state (JSON
{"sequence": N, "models": {"name": "version"}}) to check replay and
downgrades too. Prints each check that passed and the one that failed; exits
non-zero on failure.`,
		Example: `  mosquitto_sub -C 1 -t modelfleet/v1/devices/edge-1/assignment > assignment.json
  fleethub assignment verify --root keys/root.json --device edge-1 assignment.json
  fleethub assignment verify --root keys/root.json --device edge-1 --variants cuda,cpu --state state.json assignment.json -o json`,
		Args: cobra.ExactArgs(1),
	}
	out := cli.AddOutputFlag(cmd)
	rootPath := cmd.Flags().String("root", "", "trusted root.json (required)")
	device := cmd.Flags().String("device", "", "device ID (required)")
	variants := cmd.Flags().StringSlice("variants", []string{"cpu"}, "device variants, best first")
	maxArtifact := cmd.Flags().Int64("max-artifact-bytes", manifest.DefaultMaxArtifactBytes, "largest artifact accepted")
	statePath := cmd.Flags().String("state", "", "agent state file to check sequence and versions against")
	_ = cmd.MarkFlagRequired("root")
	_ = cmd.MarkFlagRequired("device")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		cfg := manifest.DefaultConfig()
		cfg.DeviceID = *device
		cfg.Variants = *variants
		cfg.MaxArtifactBytes = *maxArtifact
		v, err := newVerifier(*rootPath, cfg)
		if err != nil {
			return err
		}
		if *statePath != "" {
			st, err := readState(*statePath)
			if err != nil {
				return err
			}
			if err := v.Restore(st); err != nil {
				return fmt.Errorf("%s: %w", *statePath, err)
			}
		}
		raw, err := readInput(cmd, args[0])
		if err != nil {
			return err
		}
		va, verr := v.VerifyAssignment(raw)
		rep := newReport(manifest.KindAssignment, verr)
		if verr == nil {
			rep.Checks = va.Checks
			rep.Name = va.Assignment.Ref()
			rep.Assignment = summarize(va)
		}
		if err := rep.write(cmd, *out); err != nil {
			return err
		}
		return verr
	}
	return cmd
}

func summarize(va *manifest.VerifiedAssignment) *assignmentSummary {
	a := va.Assignment
	s := &assignmentSummary{
		Device: a.Device, Sequence: a.Sequence,
		Issued: a.Issued.Format(time.RFC3339), Expires: a.Expires.Format(time.RFC3339),
		Models: []modelSummary{},
	}
	for _, m := range va.Models {
		s.Models = append(s.Models, modelSummary{
			Name: m.Manifest.Name, Version: m.Manifest.Version, Mode: m.Entry.Mode,
			Variant: m.Artifact.Variant, Key: m.Artifact.Key, SHA256: m.Artifact.SHA256, Size: m.Artifact.Size,
			Digest: m.Digest, Downgrade: m.Downgrade,
		})
	}
	return s
}

func readState(path string) (manifest.State, error) {
	var st manifest.State
	b, err := os.ReadFile(path)
	if err != nil {
		return st, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read state %s: %w", path, err)
	}
	return st, nil
}
