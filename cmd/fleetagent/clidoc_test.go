package main

import (
	"flag"
	"testing"

	"github.com/modelfleet/modelfleet/internal/clidoc"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/cli/ from the command tree")

// TestCLIReference keeps docs/cli/ in step with the commands: `make docs`
// rewrites it.
func TestCLIReference(t *testing.T) {
	if err := clidoc.Sync("../../docs/cli", newRootCommand(), *updateDocs); err != nil {
		t.Fatal(err)
	}
}
