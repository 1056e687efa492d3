package main

import (
	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/internal/buildinfo"
	"github.com/modelfleet/modelfleet/internal/cli"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "fleetagent",
		Short: "Run signed ML models on this edge device",
		Long: `fleetagent is the edge side of modelfleet. It receives signed model
assignments over MQTT, downloads and verifies model artifacts from
S3-compatible storage, and serves them locally with ONNX Runtime.`,
		Version:       buildinfo.Read().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newEnrollCommand())
	root.AddCommand(cli.VersionCommand("fleetagent"), newRunCommand(), newConfigCommand(), newDoctorCommand(), newStatusCommand(), newInferCommand())
	return root
}
