package main

import (
	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/internal/buildinfo"
	"github.com/modelfleet/modelfleet/internal/cli"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "fleethub",
		Short: "Publish signed ML models to edge agents and run staged rollouts",
		Long: `fleethub is the cloud side of modelfleet. It signs model manifests and
device assignments, publishes them over MQTT to fleetagent on edge devices,
and collects their state and telemetry.`,
		Version:       buildinfo.Read().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(cli.VersionCommand("fleethub"))
	root.AddCommand(newKeysCommand(), newManifestCommand(), newAssignmentCommand())
	root.AddCommand(newServeCommand(), newDevCommand(), newModelCommand(), newRolloutCommand(), newDevicesCommand())
	root.AddCommand(newBrokerCommand(), newS3Command())
	root.AddCommand(newSimulateCommand())
	return root
}
