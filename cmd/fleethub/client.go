package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/internal/cli"
)

// defaultHubURL is the hub the client commands talk to unless --hub or
// MODELFLEET_HUB says otherwise.
const defaultHubURL = "http://127.0.0.1:8400"

// clientFlags are --hub, --token and -o of the commands that call the API.
type clientFlags struct {
	hub, token string
	out        *string
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	cf := &clientFlags{}
	cmd.Flags().StringVar(&cf.hub, "hub", "", "hub API URL (env MODELFLEET_HUB; default "+defaultHubURL+")")
	cmd.Flags().StringVar(&cf.token, "token", "", "API token (env MODELFLEET_TOKEN)")
	cf.out = cli.AddOutputFlag(cmd)
	return cf
}

// client checks -o and returns the API client the flags and environment
// describe.
func (cf *clientFlags) client() (*api.Client, error) {
	if err := cli.CheckOutput(*cf.out); err != nil {
		return nil, err
	}
	c := &api.Client{BaseURL: cf.hub, Token: cf.token}
	if c.BaseURL == "" {
		c.BaseURL = os.Getenv("MODELFLEET_HUB")
	}
	if c.BaseURL == "" {
		c.BaseURL = defaultHubURL
	}
	if c.Token == "" {
		c.Token = os.Getenv("MODELFLEET_TOKEN")
	}
	return c, nil
}

// json reports whether -o json was asked for.
func (cf *clientFlags) json() bool { return *cf.out == cli.OutputJSON }
