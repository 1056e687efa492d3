// Package cli holds the small pieces both command-line binaries share:
// the version command and output-format handling. It contains no business
// logic; cmd/ wires commands, the packages they call do the work.
package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/internal/buildinfo"
)

// Output formats accepted by -o/--output.
const (
	OutputText = "text"
	OutputJSON = "json"
)

// AddOutputFlag registers -o/--output on cmd and returns the bound value.
func AddOutputFlag(cmd *cobra.Command) *string {
	var out string
	cmd.Flags().StringVarP(&out, "output", "o", OutputText, `output format: "text" or "json"`)
	return &out
}

// CheckOutput returns an error naming the flag when format is not supported.
func CheckOutput(format string) error {
	switch format {
	case OutputText, OutputJSON:
		return nil
	}
	return fmt.Errorf(`--output: unknown format %q (want "text" or "json")`, format)
}

// WriteJSON writes v as indented JSON followed by a newline.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// VersionCommand returns the `version` command for the binary called name.
func VersionCommand(name string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version of " + name,
		Example: "  " + name + " version -o json",
		Args:    cobra.NoArgs,
	}
	out := AddOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := CheckOutput(*out); err != nil {
			return err
		}
		info := buildinfo.Read()
		if *out == OutputJSON {
			return WriteJSON(cmd.OutOrStdout(), info)
		}
		_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", name, info)
		return err
	}
	return cmd
}
