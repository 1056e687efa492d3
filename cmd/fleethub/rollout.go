package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/cli"
)

func newRolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Start, watch and steer staged rollouts",
		Long: `A rollout sends one model release to the devices a label selector picks, in
cumulative waves (percentages of those devices). Each wave installs, soaks,
and must pass its gates on the wave's live telemetry before the next starts;
a failed gate pauses the rollout or rolls the wave's devices back.`,
		Example: `  fleethub rollout start --model detector --version 1.1.0 --selector site=plant-a --gate 'error_rate<0.01'
  fleethub rollout status 7 --watch
  fleethub rollout pause 7`,
	}
	cmd.AddCommand(newRolloutStartCommand(), newRolloutStatusCommand(), newRolloutListCommand())
	for _, c := range []struct{ name, short string }{
		{api.CommandPause, "Pause a rollout: no further waves until resumed"},
		{api.CommandResume, "Resume a paused rollout: its current wave starts over"},
		{api.CommandAbort, "Stop a rollout for good, leaving devices as they are"},
		{api.CommandRollback, "Send every device of a rollout back to its previous version"},
	} {
		cmd.AddCommand(newRolloutVerbCommand(c.name, c.short))
	}
	return cmd
}

func newRolloutStartCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "start --model N --version V",
		Short: "Start a staged rollout of a signed release",
		Long: `Start a rollout. Gates are conditions on the wave's telemetry, metric OP
number with OP one of < <= > >= ==: error_rate, p95_latency_ms,
install_failures, shadow_agreement (mode shadow only) and the others listed
in docs. Without --gate, install_failures<=0 applies.`,
		Example: `  fleethub rollout start --model vibration-anomaly --version 1.1.0 --selector site=plant-a \
    --waves 1,10,50,100 --soak 5m --gate 'error_rate<0.01' --gate 'p95_latency_ms<50'
  fleethub rollout start --model detector --version 2.0.0 --mode shadow \
    --gate 'shadow_agreement>=0.99' --on-failure rollback -o json`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	var req api.RolloutRequest
	cmd.Flags().StringVar(&req.Model, "model", "", "model name (required)")
	cmd.Flags().StringVar(&req.Version, "version", "", "release version (required)")
	cmd.Flags().StringVar(&req.Selector, "selector", "", "device label selector k=v,k2=v2 (default: all devices)")
	cmd.Flags().StringVar(&req.Waves, "waves", "1,10,50,100", "cumulative wave percentages")
	cmd.Flags().StringVar(&req.Soak, "soak", "5m", "time each wave runs before its gates are evaluated")
	cmd.Flags().StringArrayVar(&req.Gates, "gate", nil, "gate on the wave's telemetry, e.g. 'error_rate<0.01' (repeatable)")
	cmd.Flags().StringVar(&req.Mode, "mode", "active", "active, or shadow (runs next to the current version, answers not used)")
	cmd.Flags().StringVar(&req.OnFailure, "on-failure", "pause", "what a failed gate does: pause or rollback")
	cmd.Flags().StringVar(&req.InstallTimeout, "install-timeout", "15m", "time a device has to install before it counts as failed")
	_ = cmd.MarkFlagRequired("model")
	_ = cmd.MarkFlagRequired("version")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		info, err := c.StartRollout(cmd.Context(), req)
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), info)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "started rollout %d of %s@%s; follow it with: fleethub rollout status %d --watch\n",
			info.Rollout.ID, info.Rollout.Model, info.Rollout.Version, info.Rollout.ID)
		return nil
	}
	return cmd
}

func parseRolloutID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("rollout ID %q: want the number `fleethub rollout list` shows", s)
	}
	return id, nil
}

func newRolloutStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a rollout: wave, devices per phase, gate values",
		Example: `  fleethub rollout status 7
  fleethub rollout status 7 --watch
  fleethub rollout status 7 -o json`,
		Args: cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	watch := cmd.Flags().Bool("watch", false, "redraw every --interval until the rollout finishes")
	interval := cmd.Flags().Duration("interval", 2*time.Second, "refresh interval of --watch")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		id, err := parseRolloutID(args[0])
		if err != nil {
			return err
		}
		for {
			info, err := c.Rollout(cmd.Context(), id)
			if err != nil {
				return err
			}
			if cf.json() {
				if err := cli.WriteJSON(cmd.OutOrStdout(), info); err != nil {
					return err
				}
			} else {
				if *watch && isTerminal(cmd.OutOrStdout()) {
					fmt.Fprint(cmd.OutOrStdout(), "\033[H\033[2J")
				}
				printRollout(cmd.OutOrStdout(), info)
			}
			if !*watch || info.Rollout.Status.Finished() {
				return nil
			}
			select {
			case <-cmd.Context().Done():
				return nil
			case <-time.After(*interval):
			}
		}
	}
	return cmd
}

func printRollout(w io.Writer, info *hub.RolloutInfo) {
	r, st := info.Rollout, info.State
	fmt.Fprintf(w, "rollout %d: %s@%s  status %s", r.ID, r.Model, r.Version, r.Status)
	if st.Reason != "" {
		fmt.Fprintf(w, " (%s)", st.Reason)
	}
	fmt.Fprintln(w)
	waves := make([]string, len(r.Waves))
	for i, p := range r.Waves {
		waves[i] = strconv.Itoa(p) + "%"
		if i == r.Wave {
			waves[i] = "[" + waves[i] + "]"
		}
	}
	// A finished rollout has no wave in progress: show how it ended, not the
	// stage it was in (hubs before the state machine cleared it kept one).
	stage := "stage " + orDash(string(st.Stage))
	if r.Status.Finished() {
		stage = "ended: " + string(r.Status)
	}
	fmt.Fprintf(w, "waves:    %s  %s\n", strings.Join(waves, " "), stage)
	fmt.Fprintf(w, "selector: %s  mode %s  on failure %s  soak %s\n", orDash(r.Selector.String()), r.Mode, r.OnFailure, time.Duration(r.SoakSeconds)*time.Second)
	if len(info.Results) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(info.Results)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, info.Results[k]))
		}
		fmt.Fprintf(w, "devices:  %s\n", strings.Join(parts, ", "))
	} else {
		fmt.Fprintln(w, "devices:  none assigned yet")
	}
	if len(st.Gates) > 0 {
		fmt.Fprintln(w, "gates:")
		for _, g := range st.Gates {
			fmt.Fprintf(w, "  %s\n", g)
		}
	} else {
		fmt.Fprintf(w, "gates:    %s (not evaluated yet)\n", strings.Join(r.Gates, ", "))
	}
	if len(st.Devices) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tWAVE\tPHASE\tRESULT\tPREVIOUS")
		for _, id := range slices.Sorted(maps.Keys(st.Devices)) {
			d := st.Devices[id]
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", id, d.Wave+1, orDash(d.Phase), d.Result, orDash(d.Previous))
		}
		_ = tw.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newRolloutListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List rollouts, newest first",
		Example: `  fleethub rollout list
  fleethub rollout list --status running,paused -o json`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	statuses := cmd.Flags().StringSlice("status", nil, "only these statuses: pending, running, paused, succeeded, failed, rolled-back, aborted")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var ss []store.RolloutStatus
		for _, s := range *statuses {
			ss = append(ss, store.RolloutStatus(s))
		}
		infos, err := c.Rollouts(cmd.Context(), ss...)
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), infos)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tMODEL\tVERSION\tSTATUS\tWAVE\tSELECTOR\tCREATED")
		for _, i := range infos {
			r := i.Rollout
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", r.ID, r.Model, r.Version, r.Status, r.Wave+1, len(r.Waves),
				orDash(r.Selector.String()), r.Created.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	}
	return cmd
}

func newRolloutVerbCommand(verb, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     verb + " ID",
		Short:   short,
		Example: fmt.Sprintf("  fleethub rollout %s 7\n  fleethub rollout %s 7 -o json", verb, verb),
		Args:    cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		id, err := parseRolloutID(args[0])
		if err != nil {
			return err
		}
		info, err := c.RolloutCommand(cmd.Context(), id, verb)
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), info)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "rollout %d: %s; status now %s\n", id, verb, info.Rollout.Status)
		return nil
	}
	return cmd
}
