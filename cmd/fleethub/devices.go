package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/cli"
)

func newDevicesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "devices",
		Aliases: []string{"device"},
		Short:   "List, inspect and label the devices that reported to the hub",
		Example: `  fleethub devices list --selector site=plant-a
  fleethub devices show edge-0042
  fleethub devices label edge-0042 line=3`,
	}
	cmd.AddCommand(newDevicesListCommand(), newDevicesShowCommand(), newDevicesLabelCommand())
	cmd.AddCommand(newDevicesEnrollTokenCommand())
	return cmd
}

func labelString(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return orDash(strings.Join(parts, ","))
}

func newDevicesListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List devices, optionally those matching a label selector",
		Example: `  fleethub devices list
  fleethub devices list --selector site=plant-a,line=1 -o json`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	selector := cmd.Flags().String("selector", "", "label selector k=v,k2=v2")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		ds, err := c.Devices(cmd.Context(), *selector)
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), ds)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tONLINE\tLABELS\tMODELS\tLAST SEEN")
		for _, d := range ds {
			var ms []string
			for _, name := range slices.Sorted(maps.Keys(d.Models)) {
				m := d.Models[name]
				ms = append(ms, fmt.Sprintf("%s@%s(%s)", name, orDash(m.Version), m.Phase))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID, yesNo(d.Online), labelString(d.Labels), orDash(strings.Join(ms, " ")), d.LastSeen.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	}
	return cmd
}

func newDevicesShowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device: labels, models, last telemetry, recent events",
		Example: `  fleethub devices show edge-0042
  fleethub devices show edge-0042 -o json`,
		Args: cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		dd, err := c.Device(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), dd)
		}
		w, d := cmd.OutOrStdout(), dd.Device
		fmt.Fprintf(w, "device:     %s\nonline:     %s\nlabels:     %s\nhub labels: %s\nfirst seen: %s\nlast seen:  %s\nsequence:   sent %d, accepted %d\n",
			d.ID, yesNo(d.Online), labelString(d.Labels), labelString(d.HubLabels),
			d.FirstSeen.UTC().Format(time.RFC3339), d.LastSeen.UTC().Format(time.RFC3339), d.Sequence, d.AcceptedSequence)
		fmt.Fprintln(w, "models:")
		for _, name := range slices.Sorted(maps.Keys(d.Models)) {
			m := d.Models[name]
			line := fmt.Sprintf("  %s %s %s", name, orDash(m.Version), m.Phase)
			if m.Pending != "" {
				line += " pending " + m.Pending
			}
			if m.Error != "" {
				line += " error: " + m.Error
			}
			fmt.Fprintln(w, line)
		}
		if len(dd.Telemetry) > 0 {
			fmt.Fprintf(w, "telemetry (minute %s):\n", dd.Telemetry[0].Minute.UTC().Format(time.RFC3339))
			printTelemetry(w, dd.Telemetry)
		}
		if len(dd.Events) > 0 {
			fmt.Fprintln(w, "recent events:")
			for _, e := range dd.Events {
				line := fmt.Sprintf("  %s %s", e.Time.UTC().Format(time.RFC3339), e.Type)
				if e.Model != "" {
					line += " " + e.Model + "@" + e.Version
				}
				if e.Reason != "" {
					line += ": " + e.Reason
				}
				fmt.Fprintln(w, line)
			}
		}
		return nil
	}
	return cmd
}

// printTelemetry writes one minute's rollups as a table, one row per model
// version: requests, errors (by kind), latency p50 and p95 of the minute's
// merged histogram, compute time per execution provider and cold starts;
// then a line per shadow candidate with its comparison.
func printTelemetry(w io.Writer, rollups []store.TelemetryRollup) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  MODEL\tREQUESTS\tERRORS\tP50 MS\tP95 MS\tCOMPUTE CPU MS\tCOMPUTE GPU MS\tCOLD STARTS")
	for _, t := range rollups {
		errs := strconv.FormatUint(t.ErrorCount(), 10)
		if len(t.Errors) > 0 {
			var kinds []string
			for _, k := range slices.Sorted(maps.Keys(t.Errors)) {
				kinds = append(kinds, fmt.Sprintf("%s %d", k, t.Errors[k]))
			}
			errs += " (" + strings.Join(kinds, ", ") + ")"
		}
		cold := strconv.FormatUint(t.ColdStarts, 10)
		if t.ColdStarts > 0 {
			cold += fmt.Sprintf(" (%s ms)", formatMillis(t.ColdStartMillis))
		}
		fmt.Fprintf(tw, "  %s@%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Model, t.Version, t.Requests, errs,
			formatMillis(t.Latency.Quantile(0.5)), formatMillis(t.Latency.Quantile(0.95)),
			formatMillis(t.ComputeMillis.CPU), formatMillis(t.ComputeMillis.GPU), cold)
	}
	_ = tw.Flush()
	for _, t := range rollups {
		if sh := t.Shadow; sh.Compared > 0 {
			fmt.Fprintf(w, "  shadow %s@%s: %d compared, %d agreed (%.1f%%), max abs diff %.4g, latency p95 %s ms\n",
				t.Model, t.Version, sh.Compared, sh.Agreed, 100*float64(sh.Agreed)/float64(sh.Compared), sh.MaxAbsDiff,
				formatMillis(sh.Latency.Quantile(0.95)))
		}
	}
}

// formatMillis returns a duration in milliseconds with the precision that
// matters at its size (0.24, 12.5, 340), "-" when there is none (NaN: no
// successful request in the histogram).
func formatMillis(ms float64) string {
	switch a := math.Abs(ms); {
	case math.IsNaN(ms) || math.IsInf(ms, 0):
		return "-"
	case ms == 0:
		return "0"
	case a < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64)
	case a < 100:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	default:
		return strconv.FormatFloat(ms, 'f', 0, 64)
	}
}

func newDevicesLabelCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "label ID k=v... [k-...]",
		Short: "Set (k=v) or remove (k-) hub labels of a device",
		Long: `Hub labels override the labels a device reports itself; removing one
reveals the device-reported value again. Rollout selectors match the result.`,
		Example: `  fleethub devices label edge-0042 site=plant-a line=3
  fleethub devices label edge-0042 line- -o json`,
		Args: cobra.MinimumNArgs(2),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		req := api.LabelsRequest{Set: map[string]string{}}
		for _, a := range args[1:] {
			if k, v, ok := strings.Cut(a, "="); ok {
				req.Set[k] = v
			} else if k, ok := strings.CutSuffix(a, "-"); ok && k != "" {
				req.Remove = append(req.Remove, k)
			} else {
				return fmt.Errorf("label %q: want key=value to set or key- to remove", a)
			}
		}
		d, err := c.SetLabels(cmd.Context(), args[0], req)
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), d)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "device %s labels: %s\n", d.ID, labelString(d.Labels))
		return nil
	}
	return cmd
}
