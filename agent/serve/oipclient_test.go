package serve_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/agent/serve"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
)

// oipClientScript is the Node client of examples/oip-client.
var oipClientScript = filepath.Join("..", "..", "examples", "oip-client", "oip-client.mjs")

// runNode runs the example client with args and returns its stdout and
// stderr, and its exit code.
func runNode(t *testing.T, node string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(node, append([]string{oipClientScript}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", node, err)
	}
	return out.String(), errOut.String(), code
}

// TestOIPClientNode runs a client that is not Go, the example Node script,
// against the HTTP front end: health, metadata, and inference whose scores
// must be the reference ones. It is skipped where node is not installed.
func TestOIPClientNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the example OIP client cannot run")
	}
	if out, err := exec.Command(node, "-e", "process.exit(typeof fetch === 'function' ? 0 : 1)").CombinedOutput(); err != nil {
		t.Skipf("node has no built-in fetch (Node 18 or newer needed): %v %s", err, out)
	}
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	fl.serve("vibration-batch", models.FileBatch, v1)
	srv := startHTTP(t, fl, serve.HTTPOptions{ServerVersion: "test"})

	t.Run("batch of windows, nested", func(t *testing.T) {
		windows := randomWindows(rand.New(rand.NewPCG(11, 11)), 3)
		stdout, stderr, code := runNode(t, node, "--url", srv.URL, "--model", "vibration-batch", "--id", "node-1", "--data", string(mustMarshal(nested(windows))))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var r inferResponse
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("output is not the response JSON: %s", stdout)
		}
		if r.ID != "node-1" || r.ModelName != "vibration-batch" || r.ModelVersion != v1 {
			t.Errorf("response %+v", r)
		}
		checkScores(t, r.ModelVersion, windows, r.Outputs[0].Data)
		if !strings.Contains(stderr, "server ready: yes") || !strings.Contains(stderr, `versions ["1.0.0"] on onnxruntime_onnx`) {
			t.Errorf("client progress: %s", stderr)
		}
	})
	t.Run("default window", func(t *testing.T) {
		stdout, stderr, code := runNode(t, node, "--url", srv.URL, "--model", "vibration")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var r inferResponse
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("output is not the response JSON: %s", stdout)
		}
		window := make([]float32, mlp.InputSize)
		for i := range window {
			window[i] = float32(math.Sin(float64(i) / 4)) // as the script computes it
		}
		checkScores(t, r.ModelVersion, window, r.Outputs[0].Data)
	})
	t.Run("server errors reach the user", func(t *testing.T) {
		_, stderr, code := runNode(t, node, "--url", srv.URL, "--model", "nope")
		if code != 1 || !strings.Contains(stderr, `HTTP 404: no model "nope" on this device`) {
			t.Errorf("exit %d: %s", code, stderr)
		}
		_, stderr, code = runNode(t, node, "--url", srv.URL, "--model", "vibration", "--data", `[["NaN"]]`)
		if code != 2 || !strings.Contains(stderr, "1 values do not fit input window of shape [1,64]") {
			t.Errorf("exit %d: %s", code, stderr)
		}
		_, stderr, code = runNode(t, node, "--url", srv.URL, "--model", "vibration", "--data", string(mustMarshal([]any{append([]any{"NaN"}, make([]any, 63)...)})))
		if code != 1 || !strings.Contains(stderr, "HTTP 400") || !strings.Contains(stderr, "JSON has no NaN") {
			t.Errorf("exit %d: %s", code, stderr)
		}
	})
}
