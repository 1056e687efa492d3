package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

const exampleModel = "../../examples/models/vibration-anomaly-v1.onnx"

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitHealthy polls /healthz until the API answers.
func waitHealthy(t *testing.T, url string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("fleethub exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz did not answer: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runServe runs `fleethub serve` in-process with args until the test ends,
// with its output in log (printed if the test fails), and returns once the
// API at url answers.
func runServe(t *testing.T, url string, log *testenv.Buffer, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan error, 1)
	go func() {
		root := newRootCommand()
		root.SetOut(log)
		root.SetErr(log)
		root.SetArgs(append([]string{"serve"}, args...))
		exited <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30s of its context ending")
		}
		if t.Failed() {
			t.Logf("fleethub serve log:\n%s", log.String())
		}
	})
	waitHealthy(t, url, exited)
}

// TestServeAndCLI runs `fleethub serve` in-process against real Mosquitto
// and MinIO, configured through a file, the environment and flags, and
// drives it with the client commands.
func TestServeAndCLI(t *testing.T) {
	broker := testenv.Mosquitto(t)
	s3 := testenv.MinIO(t)
	dir := t.TempDir()
	keyDir := filepath.Join(dir, "keys")
	if _, err := keys.Init(context.Background(), keyDir, keys.DefaultInitOptions()); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "hub.yaml")
	cfgYAML := fmt.Sprintf(`hub:
  mqtt:
    brokers: [%s]
  key_dir: %s
  tick_millis: 200
s3:
  endpoint: %s
  region: %s
  access_key: %s
  secret_key: %s
  insecure: true
  bucket: %s
log_level: warn
`, broker.URL, keyDir, s3.Endpoint, s3.Region, s3.AccessKey, s3.SecretKey, s3.Bucket)
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "cli-test-token"
	t.Setenv("MODELFLEET_API_TOKEN", token)
	addr := freeAddr(t)
	hubURL := "http://" + addr

	runServe(t, hubURL, &testenv.Buffer{}, "--config", cfgPath, "--hub-store-path", filepath.Join(dir, "hub.db"), "--api-addr", addr)

	cli := func(args ...string) []string { return append(args, "--hub", hubURL, "--token", token) }

	// Without the token the API refuses.
	if _, err := run(t, "model", "list", "--hub", hubURL); !api.IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("model list without token: %v; want 401", err)
	}

	out := mustRun(t, cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.0")...)
	if !strings.Contains(out, "pushed vibration-anomaly@1.0.0, signed") {
		t.Errorf("push output:\n%s", out)
	}
	out = mustRun(t, cli("model", "list")...)
	if !regexpLine(out, "vibration-anomaly", "1.0.0", "yes", "cpu") {
		t.Errorf("model list does not show the signed release:\n%s", out)
	}
	var models []api.ModelInfo
	mustJSON(t, mustRun(t, cli("model", "list", "-o", "json")...), &models)
	if len(models) != 1 || !models[0].Signed {
		t.Errorf("model list -o json = %+v", models)
	}
	out = mustRun(t, cli("model", "show", "vibration-anomaly", "1.0.0")...)
	if !strings.Contains(out, "signed:   yes") || !strings.Contains(out, "sha256:") {
		t.Errorf("model show:\n%s", out)
	}
	if _, err := run(t, cli("model", "show", "vibration-anomaly", "7.0.0")...); !api.IsStatus(err, http.StatusNotFound) {
		t.Errorf("model show of an unknown version: %v; want 404", err)
	}

	_, err := run(t, cli("rollout", "start", "--model", "vibration-anomaly", "--version", "1.0.0", "--gate", "error_rat<0.01")...)
	if !api.IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), `unknown metric "error_rat"`) {
		t.Fatalf("rollout with a bad gate: %v; want a 400 naming the metric", err)
	}

	out = mustRun(t, cli("rollout", "start", "--model", "vibration-anomaly", "--version", "1.0.0", "--selector", "site=plant-a",
		"--waves", "1,10,50,100", "--soak", "5m", "--gate", "error_rate<0.01", "--gate", "install_failures<=0")...)
	if !strings.Contains(out, "started rollout 1 of vibration-anomaly@1.0.0") {
		t.Fatalf("rollout start:\n%s", out)
	}
	out = mustRun(t, cli("rollout", "status", "1")...)
	if !strings.Contains(out, "rollout 1: vibration-anomaly@1.0.0") || !strings.Contains(out, "error_rate<0.01") {
		t.Errorf("rollout status:\n%s", out)
	}
	var info struct {
		Rollout struct {
			ID    int64    `json:"id"`
			Gates []string `json:"gates"`
		} `json:"rollout"`
	}
	mustJSON(t, mustRun(t, cli("rollout", "status", "1", "-o", "json")...), &info)
	if info.Rollout.ID != 1 || len(info.Rollout.Gates) != 2 {
		t.Errorf("rollout status -o json = %+v", info)
	}
	out = mustRun(t, cli("rollout", "list")...)
	if !regexpLine(out, "1", "vibration-anomaly", "1.0.0") {
		t.Errorf("rollout list:\n%s", out)
	}
	// No device matches site=plant-a: the controller fails the rollout
	// at its first step, after which pause is not allowed.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(mustRun(t, cli("rollout", "status", "1")...), "status failed") {
		if time.Now().After(deadline) {
			t.Fatal("rollout without devices did not fail")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// --watch returns once the rollout is finished.
	if out := mustRun(t, cli("rollout", "status", "1", "--watch", "--interval", "50ms")...); !strings.Contains(out, "status failed") {
		t.Errorf("rollout status --watch:\n%s", out)
	}
	if _, err := run(t, cli("rollout", "pause", "1")...); !api.IsStatus(err, http.StatusConflict) {
		t.Errorf("pause of a failed rollout: %v; want 409", err)
	}
	if _, err := run(t, cli("rollout", "status", "x1")...); err == nil || !strings.Contains(err.Error(), "rollout ID") {
		t.Errorf("status of a bad ID: %v", err)
	}

	out = mustRun(t, cli("devices", "list")...)
	if !strings.HasPrefix(out, "DEVICE") {
		t.Errorf("devices list:\n%s", out)
	}
	if _, err := run(t, cli("devices", "show", "ghost")...); !api.IsStatus(err, http.StatusNotFound) {
		t.Errorf("devices show ghost: %v; want 404", err)
	}
	if _, err := run(t, cli("devices", "label", "ghost", "nolabel")...); err == nil || !strings.Contains(err.Error(), "key=value") {
		t.Errorf("devices label with a bad argument: %v", err)
	}
}

// regexpLine reports whether a line of out holds all fields in order.
func regexpLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if slicesEqualPrefix(strings.Fields(line), fields) {
			return true
		}
	}
	return false
}

func slicesEqualPrefix(have, want []string) bool {
	if len(have) < len(want) {
		return false
	}
	for i := range want {
		if have[i] != want[i] {
			return false
		}
	}
	return true
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
}

func TestServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := run(t, "serve", "--config", filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing config file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("hub:\n  mqt: {}\n"), 0o600)
	if _, err := run(t, "serve", "--config", bad); err == nil || !strings.Contains(err.Error(), "mqt") {
		t.Errorf("unknown field: %v", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	_, err = run(t, "serve", "--config", empty, "--api-addr", "0.0.0.0:8400")
	for _, want := range []string{"hub.store_path", "key_dir", "api.token"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("empty config: %v; want a problem naming %s", err, want)
		}
	}
}

// TestDev runs a built fleethub binary's `dev` command (the embedded S3
// endpoint changes the process's working directory and allows one per
// process, so not in the test process) and pushes a model to it.
func TestDev(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the fleethub binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fleethub")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "dev", "--data-dir", filepath.Join(dir, "data"), "--api-addr", addr,
		"--broker-addr", "127.0.0.1:0", "--s3-addr", "127.0.0.1:0", "--log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	})
	var printed strings.Builder
	timeout := time.After(60 * time.Second)
	agentDir := filepath.Join(dir, "data", "agent-dev-1")
	for !strings.Contains(printed.String(), "--data-dir "+agentDir) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("fleethub dev exited: %v\n%s", <-exited, stderr.String())
			}
			printed.WriteString(l + "\n")
		case <-timeout:
			t.Fatalf("fleethub dev printed no agent command line:\n%s\n%s", printed.String(), stderr.String())
		}
	}
	for _, want := range []string{"fleetagent run", "--mqtt-brokers tcp://127.0.0.1:", "--s3-insecure true",
		"--trust-root " + filepath.Join(dir, "data", "keys", "root.json")} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("agent command line lacks %q:\n%s", want, printed.String())
		}
	}
	hubURL := "http://" + addr
	waitHealthy(t, hubURL, nil)
	model, _ := filepath.Abs(exampleModel)
	out := mustRun(t, "model", "push", model, "--name", "vibration-anomaly", "--version", "1.0.0", "--hub", hubURL)
	if !strings.Contains(out, "signed") {
		t.Errorf("push to dev hub:\n%s", out)
	}
	out = mustRun(t, "model", "list", "--hub", hubURL)
	if !regexpLine(out, "vibration-anomaly", "1.0.0", "yes") {
		t.Errorf("model list on dev hub:\n%s", out)
	}

	// An agent joins with exactly the printed command line (plus the
	// ONNX Runtime library and a free local API port) and gets the model.
	ortLib := runtimetest.LibraryPath(t)
	agentBin := filepath.Join(dir, "fleetagent")
	if out, err := exec.Command("go", "build", "-o", agentBin, "../fleetagent").CombinedOutput(); err != nil {
		t.Fatalf("go build fleetagent: %v\n%s", err, out)
	}
	line := printed.String()
	line = line[strings.Index(line, "fleetagent run"):]
	line = line[:strings.Index(line, agentDir)+len(agentDir)]
	args := strings.Fields(strings.ReplaceAll(line, "\\\n", " "))[1:]
	args = append(args, "--ort-lib", ortLib, "--serving-http-addr", "", "--telemetry-interval-seconds", "1")
	agent := exec.Command(agentBin, args...)
	var agentLog bytes.Buffer
	agent.Stdout, agent.Stderr = &agentLog, &agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Wait() }()
	defer func() {
		agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-agentDone:
		case <-time.After(20 * time.Second):
			agent.Process.Kill()
			<-agentDone
		}
		if t.Failed() {
			t.Logf("fleetagent log:\n%s", agentLog.String())
		}
	}()
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			select {
			case err := <-agentDone:
				agentDone <- err
				t.Fatalf("fleetagent exited while waiting for %s: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	eventually("the agent to register", func() bool {
		out, err := run(t, "devices", "list", "--hub", hubURL, "--selector", "site=dev")
		return err == nil && regexpLine(out, "dev-1", "yes")
	})
	mustRun(t, "rollout", "start", "--model", "vibration-anomaly", "--version", "1.0.0", "--waves", "100", "--soak", "0s", "--hub", hubURL)
	eventually("the rollout to succeed", func() bool {
		out, err := run(t, "rollout", "status", "1", "--hub", hubURL)
		return err == nil && strings.Contains(out, "status succeeded")
	})
	out = mustRun(t, "devices", "show", "dev-1", "--hub", hubURL)
	if !strings.Contains(out, "vibration-anomaly 1.0.0 active") {
		t.Errorf("devices show dev-1:\n%s", out)
	}
	out = mustRun(t, "devices", "label", "dev-1", "line=3", "--hub", hubURL)
	if !strings.Contains(out, "line=3,site=dev") {
		t.Errorf("devices label:\n%s", out)
	}
	var devs []struct {
		ID     string            `json:"id"`
		Labels map[string]string `json:"labels"`
	}
	mustJSON(t, mustRun(t, "devices", "list", "--selector", "line=3", "-o", "json", "--hub", hubURL), &devs)
	if len(devs) != 1 || devs[0].ID != "dev-1" {
		t.Errorf("devices list --selector line=3 -o json = %+v", devs)
	}

	stopped = true
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("fleethub dev after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("fleethub dev did not stop within 30s of SIGTERM")
	}
}

// TestHelpExamples: `fleethub --help` documents every command with an
// example: each runnable command, whoever added it, has an Example and a
// Short; one that talks to the hub also supports -o json.
func TestHelpExamples(t *testing.T) {
	root := newRootCommand()
	var runnable int
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if !sub.Hidden {
				walk(sub)
			}
		}
		if !c.Runnable() {
			return
		}
		runnable++
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no Example", c.CommandPath())
		} else if !strings.Contains(c.Example, "fleethub ") {
			t.Errorf("%s: Example %q does not show a fleethub command line", c.CommandPath(), c.Example)
		}
		if c.Short == "" {
			t.Errorf("%s has no Short", c.CommandPath())
		}
		if c.Flags().Lookup("hub") != nil && c.Flags().Lookup("output") == nil {
			t.Errorf("%s has --hub but no -o", c.CommandPath())
		}
	}
	walk(root)
	// The walk itself must reach the tree: the commands of this file at least.
	if runnable < 20 {
		t.Errorf("walked %d runnable commands; the command tree looks empty", runnable)
	}
}
