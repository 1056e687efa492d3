package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// servedHub is a `fleethub serve` running in-process for a test.
type servedHub struct {
	url, token, keyDir string
	log                *testenv.Buffer
}

// cli returns args with --hub and --token of h.
func (h *servedHub) cli(args ...string) []string {
	return append(args, "--hub", h.url, "--token", h.token)
}

// startServe runs `fleethub serve` with the broker URL and the object store
// (flags only) until the test ends. It returns once the API answers, which
// does not wait for the broker.
func startServe(t *testing.T, brokerURL string, s3 *testenv.ObjectStore, extra ...string) *servedHub {
	t.Helper()
	dir := t.TempDir()
	h := &servedHub{url: "", token: "fault-test-token", keyDir: filepath.Join(dir, "keys"), log: &testenv.Buffer{}}
	if _, err := keys.Init(context.Background(), h.keyDir, keys.DefaultInitOptions()); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	h.url = "http://" + addr
	args := []string{"--config", filepath.Join(dir, "none.yaml"),
		"--hub-mqtt-brokers", brokerURL, "--hub-key-dir", h.keyDir, "--hub-store-path", filepath.Join(dir, "hub.db"),
		"--hub-tick-millis", "200", "--api-addr", addr, "--api-token", h.token,
		"--s3-endpoint", s3.Endpoint, "--s3-region", s3.Region, "--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey,
		"--s3-insecure", "true", "--s3-bucket", s3.Bucket}
	args = append(args, extra...)
	if err := os.WriteFile(filepath.Join(dir, "none.yaml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	runServe(t, h.url, h.log, args...)
	return h
}

// get returns the status and body of a GET on the hub.
func (h *servedHub) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(h.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds, for up to 90 s.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok, note := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, note)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServeBrokerDown: `fleethub serve` whose broker is down keeps its API
// up, says in its log why it is not ready, reports it on /readyz and
// /metrics, refuses what needs the broker with 503, and becomes ready once
// the broker is there.
func TestServeBrokerDown(t *testing.T) {
	broker := testenv.Mosquitto(t)
	broker.Stop(t)
	h := startServe(t, broker.URL, testenv.MinIO(t))

	waitFor(t, "the not-ready warning in the log", func() (bool, string) {
		l := h.log.String()
		return strings.Contains(l, "hub not ready: cannot connect to the MQTT broker") && strings.Contains(l, "connection refused"), l
	})
	if code, body := h.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "MQTT broker") {
		t.Errorf("/readyz with the broker down: %d %q", code, body)
	}
	if _, body := h.get(t, "/metrics"); !strings.Contains(body, "\nmodelfleet_hub_ready 0\n") || !strings.Contains(body, "\nmodelfleet_broker_connected 0\n") {
		t.Errorf("/metrics with the broker down:\n%s", body)
	}
	// The store-backed API works meanwhile: a release is pushed and a
	// rollout registered, which the controller takes up once connected.
	mustRun(t, h.cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.0")...)
	mustRun(t, h.cli("rollout", "start", "--model", "vibration-anomaly", "--version", "1.0.0", "--selector", "site=nowhere")...)
	if out := mustRun(t, h.cli("rollout", "status", "1")...); !strings.Contains(out, "status pending") {
		t.Errorf("rollout while the broker is down:\n%s", out)
	}

	broker.Start(t)
	waitFor(t, "/readyz once the broker is up", func() (bool, string) {
		code, body := h.get(t, "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	if _, body := h.get(t, "/metrics"); !strings.Contains(body, "\nmodelfleet_hub_ready 1\n") {
		t.Errorf("/metrics once connected:\n%s", body)
	}
	// No device matches: the controller, now running, fails the rollout.
	waitFor(t, "the controller to take up the rollout", func() (bool, string) {
		out, err := run(t, h.cli("rollout", "status", "1")...)
		return err == nil && strings.Contains(out, "status failed"), out
	})

	// A broker lost later is reported too, and the hub reconnects.
	broker.Stop(t)
	waitFor(t, "/readyz to report the lost connection", func() (bool, string) {
		code, body := h.get(t, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "lost"), fmt.Sprintf("%d %s", code, body)
	})
	broker.Start(t)
	waitFor(t, "/readyz after the reconnection", func() (bool, string) {
		code, body := h.get(t, "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// TestServeBadInput: the errors an operator meets at the API through the
// CLI are clear, and nothing is registered or left in S3 by a failed push.
func TestServeBadInput(t *testing.T) {
	broker := testenv.Mosquitto(t)
	s3 := testenv.MinIO(t)
	h := startServe(t, broker.URL, s3)
	waitFor(t, "readiness", func() (bool, string) {
		code, body := h.get(t, "/readyz")
		return code == http.StatusOK, body
	})
	ctx := context.Background()
	objects := func() []string {
		var names []string
		for o := range s3.Client.ListObjects(ctx, s3.Bucket, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			names = append(names, o.Key)
		}
		return names
	}

	t.Run("push with S3 down", func(t *testing.T) {
		s3.Stop(t)
		_, err := run(t, h.cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.0")...)
		s3.Start(t)
		t.Logf("the operator sees: %v", err)
		if !api.IsStatus(err, http.StatusBadGateway) || !strings.Contains(err.Error(), "object store") || !strings.Contains(err.Error(), "reachable") {
			t.Fatalf("push with S3 down: %v; want an error saying the object store is not reachable", err)
		}
		if out := mustRun(t, h.cli("model", "list")...); strings.Contains(out, "vibration-anomaly") {
			t.Errorf("a failed push registered a release:\n%s", out)
		}
		if objs := objects(); len(objs) > 0 {
			t.Errorf("a failed push left objects in S3: %v", objs)
		}
	})

	t.Run("push of a non-ONNX file", func(t *testing.T) {
		notONNX := filepath.Join(t.TempDir(), "model.onnx")
		if err := os.WriteFile(notONNX, []byte("PK\x03\x04 a zip file, not a model"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, h.cli("model", "push", notONNX, "--name", "vibration-anomaly", "--version", "1.0.0")...)
		if !api.IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "not an ONNX model") {
			t.Fatalf("push of a non-ONNX file: %v; want 400 not an ONNX model", err)
		}
		if objs := objects(); len(objs) > 0 {
			t.Errorf("a refused push left objects in S3: %v", objs)
		}
	})

	mustRun(t, h.cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.0")...)
	if objs := objects(); len(objs) != 1 || objs[0] != "vibration-anomaly/1.0.0/cpu.onnx" {
		t.Errorf("objects after a push: %v; want vibration-anomaly/1.0.0/cpu.onnx (no models/models/)", objs)
	}

	t.Run("orphan left by a failed push", func(t *testing.T) {
		// What a push leaves when S3 fails even the clean-up: an object
		// and no release.
		orphan := []byte("half of an upload")
		if _, err := s3.Client.PutObject(ctx, s3.Bucket, "vibration-anomaly/1.0.1/cpu.onnx", bytes.NewReader(orphan), int64(len(orphan)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, h.cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.1")...)
		if !api.IsStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "object already exists") {
			t.Fatalf("push over an orphan: %v; want 409 object already exists", err)
		}
		out := mustRun(t, h.cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.1", "--force")...)
		if !strings.Contains(out, "pushed vibration-anomaly@1.0.1, signed") {
			t.Errorf("push --force:\n%s", out)
		}
		// A registered release is never overwritten, --force or not.
		if _, err := run(t, h.cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.1", "--force")...); !api.IsStatus(err, http.StatusConflict) {
			t.Errorf("push --force of a registered version: %v; want 409", err)
		}
	})

	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		wantMsg string
	}{
		{"unknown model", []string{"--model", "no-such-model", "--version", "1.0.0"}, http.StatusNotFound, "no-such-model@1.0.0"},
		{"unknown version", []string{"--model", "vibration-anomaly", "--version", "9.0.0"}, http.StatusNotFound, "vibration-anomaly@9.0.0"},
		{"malformed selector", []string{"--model", "vibration-anomaly", "--version", "1.0.0", "--selector", "site"}, http.StatusBadRequest, "selector: "},
		{"malformed gate", []string{"--model", "vibration-anomaly", "--version", "1.0.0", "--gate", "error_rate<<1"}, http.StatusBadRequest, "gate: "},
		{"unknown gate metric", []string{"--model", "vibration-anomaly", "--version", "1.0.0", "--gate", "errors<1"}, http.StatusBadRequest, `unknown metric "errors"`},
	} {
		t.Run("rollout start "+tc.name, func(t *testing.T) {
			_, err := run(t, h.cli(append([]string{"rollout", "start"}, tc.args...)...)...)
			t.Logf("the operator sees: %v", err)
			if !api.IsStatus(err, tc.code) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v; want HTTP %d mentioning %q", err, tc.code, tc.wantMsg)
			}
		})
	}
	if out := mustRun(t, h.cli("rollout", "list")...); strings.Count(out, "\n") != 1 {
		t.Errorf("refused rollouts were registered:\n%s", out)
	}
}

// TestServeOfflineSigning: the --sign-later flow with the CLI only: fetch
// the unsigned manifest, sign it with `fleethub manifest sign`, attach it;
// a foreign signature is refused and changes nothing; then the rollout
// starts.
func TestServeOfflineSigning(t *testing.T) {
	s3 := testenv.MinIO(t)
	h := startServe(t, testenv.Mosquitto(t).URL, s3, "--s3-prefix", "/ml/")
	waitFor(t, "readiness", func() (bool, string) {
		code, body := h.get(t, "/readyz")
		return code == http.StatusOK, body
	})
	dir := t.TempDir()
	out := mustRun(t, h.cli("model", "push", exampleModel, "--name", "vibration-anomaly", "--version", "1.0.0", "--sign-later")...)
	if !strings.Contains(out, "UNSIGNED") {
		t.Errorf("push --sign-later:\n%s", out)
	}
	// s3.prefix places the objects under it, the bucket named once.
	if want := s3.Bucket + "/ml/vibration-anomaly/1.0.0/cpu.onnx"; !strings.Contains(out, " "+want+" ") {
		t.Errorf("push with --s3-prefix /ml/: want key %s:\n%s", want, out)
	}
	unsigned := filepath.Join(dir, "m.json")
	mustRun(t, h.cli("model", "manifest", "vibration-anomaly", "1.0.0", "--out", unsigned)...)
	// Without --out the envelope goes to stdout, the same bytes.
	stdout := mustRun(t, h.cli("model", "manifest", "vibration-anomaly", "1.0.0")...)
	if b, _ := os.ReadFile(unsigned); string(b) != stdout {
		t.Errorf("--out and stdout differ:\n%s\n%s", b, stdout)
	}
	if _, err := run(t, h.cli("rollout", "start", "--model", "vibration-anomaly", "--version", "1.0.0")...); !api.IsStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "not signed") {
		t.Fatalf("rollout of the unsigned release: %v; want 409 not signed", err)
	}

	// A key of another trust root: refused, nothing changes.
	otherKeys := filepath.Join(dir, "other-keys")
	if _, err := keys.Init(context.Background(), otherKeys, keys.DefaultInitOptions()); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.json")
	mustRun(t, "manifest", "sign", "--key", keyOf(t, otherKeys, "release"), unsigned, "--out", foreign)
	_, err := run(t, h.cli("model", "attach-signature", "vibration-anomaly", "1.0.0", foreign)...)
	t.Logf("the operator sees: %v", err)
	if !api.IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "signature not accepted") {
		t.Fatalf("attach of a foreign signature: %v; want 400 signature not accepted", err)
	}
	if out := mustRun(t, h.cli("model", "list")...); !regexpLine(out, "vibration-anomaly", "1.0.0", "no") {
		t.Errorf("after a refused attach:\n%s", out)
	}

	signed := filepath.Join(dir, "m.signed.json")
	mustRun(t, "manifest", "sign", "--key", keyOf(t, h.keyDir, "release"), unsigned, "--out", signed)
	out = mustRun(t, h.cli("model", "sign-attach", "vibration-anomaly", "1.0.0", signed)...)
	if !strings.Contains(out, "vibration-anomaly@1.0.0 is signed") {
		t.Errorf("attach-signature:\n%s", out)
	}
	if out := mustRun(t, h.cli("model", "list")...); !regexpLine(out, "vibration-anomaly", "1.0.0", "yes") {
		t.Errorf("after attach:\n%s", out)
	}
	out = mustRun(t, h.cli("rollout", "start", "--model", "vibration-anomaly", "--version", "1.0.0", "--waves", "100", "--soak", "0s")...)
	if !strings.Contains(out, "started rollout 1 of vibration-anomaly@1.0.0") {
		t.Errorf("rollout start after attach:\n%s", out)
	}
}
