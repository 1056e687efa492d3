package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/agent/state"
	"github.com/modelfleet/modelfleet/internal/cli"
)

func newStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the models installed on this device, from the agent's state file",
		Long: `Show what the agent has installed and serves, read from the state file in
the data directory. It works whether or not the agent is running.`,
		Example: `  fleetagent status --config /etc/modelfleet/agent.yaml
  fleetagent status --data-dir /var/lib/modelfleet -o json`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	out := cli.AddOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		path := filepath.Join(cfg.DataDir, "state.json")
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("no agent state at %s (has the agent run with data_dir %s?): %w", path, cfg.DataDir, err)
		}
		f, err := state.NewFile(path)
		if err != nil {
			return err
		}
		st, err := f.Load()
		if err != nil {
			return err
		}
		if *out == cli.OutputJSON {
			return cli.WriteJSON(cmd.OutOrStdout(), st)
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
		fmt.Fprintf(w, "device:\t%s\ndata dir:\t%s\n\n", cfg.DeviceID, cfg.DataDir)
		if len(st.Models) == 0 {
			fmt.Fprintln(w, "no models installed")
			return w.Flush()
		}
		fmt.Fprintln(w, "MODEL\tACTIVE\tPHASE\tPENDING\tPREVIOUS\tERROR")
		for _, name := range st.Names() {
			m := st.Models[name]
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", name, ver(m.Active), m.Phase, ver(m.Pending), ver(m.Previous), m.Error)
		}
		return w.Flush()
	}
	return cmd
}

func ver(in *state.Install) string {
	if in == nil {
		return "-"
	}
	return in.Version
}
