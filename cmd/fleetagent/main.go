// Command fleetagent is the modelfleet edge agent: it receives signed model
// assignments over MQTT, fetches and verifies model artifacts from S3 and runs
// them locally with ONNX Runtime.
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
		fmt.Fprintln(os.Stderr, "fleetagent:", err)
		os.Exit(1)
	}
}
