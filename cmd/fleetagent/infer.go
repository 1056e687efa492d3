package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/internal/cli"
)

func newInferCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "infer MODEL",
		Short: "Run one inference request through the local agent's HTTP API",
		Long: `Send a KServe v2 (Open Inference Protocol) request to the agent running on
this device and print the result. The input file holds the request body:

  {"inputs": [{"name": "window", "shape": [1, 64], "datatype": "FP32", "data": [0.1, …]}]}

Use --input - to read it from standard input.`,
		Example: `  fleetagent infer vibration-anomaly --input request.json
  echo '{"inputs":[…]}' | fleetagent infer vibration-anomaly --input - -o json`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd)
	input := cmd.Flags().StringP("input", "i", "", "request body file, or - for standard input (required)")
	addr := cmd.Flags().String("addr", "", "agent API address host:port (default: serving.http_addr of the configuration)")
	timeout := cmd.Flags().Duration("timeout", 30*time.Second, "how long to wait for the answer")
	out := cli.AddOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		if *input == "" {
			return fmt.Errorf("--input is required (a request file, or - for standard input)")
		}
		if *addr == "" {
			cfg, err := cf.load()
			if err != nil {
				return err
			}
			if *addr = cfg.Serving.HTTPAddr; *addr == "" {
				return fmt.Errorf("serving.http_addr is empty in the configuration: the HTTP API is off; pass --addr")
			}
		}
		var body []byte
		var err error
		if *input == "-" {
			body, err = io.ReadAll(cmd.InOrStdin())
		} else {
			body, err = os.ReadFile(*input)
		}
		if err != nil {
			return fmt.Errorf("--input: %w", err)
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+*addr+"/v2/models/"+args[0]+"/infer", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("agent API at %s: %w (is `fleetagent run` running?)", *addr, err)
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(rb, &e) == nil && e.Error != "" {
				return fmt.Errorf("%s: %s", resp.Status, e.Error)
			}
			return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(rb))
		}
		if *out == cli.OutputJSON {
			_, err = cmd.OutOrStdout().Write(append(bytes.TrimSpace(rb), '\n'))
			return err
		}
		var r struct {
			Model   string `json:"model_name"`
			Version string `json:"model_version"`
			Outputs []struct {
				Name     string          `json:"name"`
				Shape    []int64         `json:"shape"`
				Datatype string          `json:"datatype"`
				Data     json.RawMessage `json:"data"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal(rb, &r); err != nil {
			return fmt.Errorf("agent answer: %w", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", r.Model, r.Version)
		for _, o := range r.Outputs {
			fmt.Fprintf(cmd.OutOrStdout(), "  %s %s %v: %s\n", o.Name, o.Datatype, o.Shape, o.Data)
		}
		return nil
	}
	return cmd
}
