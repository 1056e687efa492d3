package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/agent/state"
	"github.com/modelfleet/modelfleet/internal/cli"
)

func newStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the models installed on this device and the broker connection",
		Long: `Show what the agent has installed and serves, and the state of its MQTT
connection (connected, connecting, refused, with the last error), read from
the files the agent keeps in the data directory. It works whether or not the
agent is running; "updated" says when the agent last wrote the broker state.`,
		Example: `  fleetagent status --config /etc/modelfleet/agent.yaml
  fleetagent status --data-dir /var/lib/modelfleet/agent -o json`,
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
		broker, berr := agent.ReadBrokerStatus(cfg.DataDir)
		if *out == cli.OutputJSON {
			out := struct {
				*state.State
				Broker *agent.BrokerStatus `json:"broker,omitempty"`
			}{State: st}
			if berr == nil {
				out.Broker = &broker
			}
			return cli.WriteJSON(cmd.OutOrStdout(), out)
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
		device := cfg.DeviceID
		if berr == nil && broker.Device != "" {
			device = broker.Device // what the agent ran as, whatever this command's flags say
		}
		fmt.Fprintf(w, "device:\t%s\ndata dir:\t%s\n", device, cfg.DataDir)
		printBroker(w, broker, berr)
		fmt.Fprintln(w)
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

// printBroker prints the broker connection lines of `status`.
func printBroker(w io.Writer, b agent.BrokerStatus, err error) {
	switch {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintln(w, "broker:\tunknown (the agent has not recorded a connection state yet)")
		return
	case err != nil:
		fmt.Fprintf(w, "broker:\tunknown (%v)\n", err)
		return
	}
	fmt.Fprintf(w, "broker:\t%s since %s (%s)\n", b.State, b.Since.Local().Format(time.RFC3339), strings.Join(b.Brokers, ", "))
	if b.LastError != "" && b.LastErrorAt != nil {
		fmt.Fprintf(w, "last broker error:\t%s at %s", b.LastError, b.LastErrorAt.Local().Format(time.RFC3339))
		if b.FailedAttempts > 0 {
			fmt.Fprintf(w, " (%d failed attempts)", b.FailedAttempts)
		}
		fmt.Fprintln(w)
	}
	if b.Hint != "" {
		fmt.Fprintf(w, "what to do:\t%s\n", b.Hint)
	}
	fmt.Fprintf(w, "updated:\t%s\n", b.Updated.Local().Format(time.RFC3339))
}

func ver(in *state.Install) string {
	if in == nil {
		return "-"
	}
	return in.Version
}
