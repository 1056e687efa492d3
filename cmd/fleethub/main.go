// Command fleethub is the modelfleet hub: the server that publishes signed
// model assignments to edge agents, and the operator CLI that drives it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleethub:", err)
		os.Exit(1)
	}
}
