package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/agent/state"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/internal/testenv"
	"github.com/modelfleet/modelfleet/manifest"
)

// TestKillDuringInstall SIGKILLs a real fleetagent process at random points
// while it downloads and installs a 32 MiB model, restarting it each time,
// and checks after every kill that the state on disk is consistent, that
// the active version's blob is complete and verified and answers, and in
// the end that the new version became active and the download resumed
// rather than restarted. MODELFLEET_CHAOS_ITERATIONS raises the number of
// kills (make chaos).
func TestKillDuringInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills real agent processes")
	}
	iterations := 20
	if s := os.Getenv("MODELFLEET_CHAOS_ITERATIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("MODELFLEET_CHAOS_ITERATIONS: %v", err)
		}
		iterations = n
	}
	ortLib := runtimetest.LibraryPath(t)
	runtimetest.Init(t)
	bin := buildAgent(t)
	broker := testenv.Mosquitto(t)
	s3 := testenv.MinIO(t)
	// The agent reaches S3 through a proxy that counts the bytes and slows
	// the transfer, so kills land in the middle of the download.
	proxy := testenv.NewProxy(t, s3.Endpoint, 24<<20)
	dir := t.TempDir()
	// The trust root comes from the same code as `fleethub keys init`.
	trust := fleettest.TrustFromKeyDir(t, filepath.Join(dir, "keys"))
	dataDir := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfgPath, agentConfig("edge-chaos", broker.URL, proxy.Addr, s3, dataDir, filepath.Join(dir, "keys", "root.json"), ortLib)+`fetch:
  concurrency: 1
  retry_base_millis: 50
  retry_max_millis: 500
log_level: debug
`)

	const name = "vibration-anomaly"
	big := fleettest.PaddedModel(models.SeedV2, 32<<20)
	v1 := trust.Publish(t, s3.Client, s3.Bucket, name, "1.0.0", models.FileV1)
	v2 := fleettest.Sign(t, fleettest.VibrationManifest(name, "2.0.0",
		fleettest.Upload(t, s3.Client, s3.Bucket, "models/big/2.0.0.onnx", big)), trust.Release)
	seeds := map[string]uint64{"1.0.0": models.SeedV1, "2.0.0": models.SeedV2}

	hub, err := bus.Connect(context.Background(), bus.Config{Brokers: []string{broker.URL}, ClientID: "chaos-hub"}, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close(nil)
	topics := bus.NewTopics("")
	publish := func(raw []byte) {
		if err := hub.Publish(context.Background(), topics.Assignment("edge-chaos"), 1, true, raw); err != nil {
			t.Fatal(err)
		}
	}
	stateFile, err := state.NewFile(filepath.Join(dataDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}

	// Install v1 and stop.
	publish(trust.Assignment(t, "edge-chaos", 1, v1))
	p := startAgent(t, bin, cfgPath, dir, 0)
	waitActive(t, stateFile, name, "1.0.0")
	p.kill(t)
	proxy.Reset()

	publish(trust.Assignment(t, "edge-chaos", 2, v2))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for i := range iterations {
		p := startAgent(t, bin, cfgPath, dir, i+1)
		time.Sleep(time.Duration(50+rng.IntN(1200)) * time.Millisecond)
		p.kill(t)
		version := checkConsistent(t, stateFile, dataDir, name, seeds)
		t.Logf("kill %d: active %s, %d bytes from S3 so far", i+1, version, proxy.Served())
	}

	p = startAgent(t, bin, cfgPath, dir, iterations+1)
	waitActive(t, stateFile, name, "2.0.0")
	p.waitLog(t, "connected to broker") // a SIGTERM before signal handling is set up would kill it
	p.stop(t)
	checkConsistent(t, stateFile, dataDir, name, seeds)
	served := proxy.Served()
	t.Logf("S3 sent %d bytes in total for a %d-byte model over %d kills", served, len(big), iterations)
	if served >= int64(2*len(big)) {
		t.Errorf("S3 sent %d bytes for a %d-byte model: downloads restarted instead of resuming", served, len(big))
	}
}

// checkConsistent loads the state as a restarting agent would and checks
// the active version: its blob is present with the signed digest, and it
// loads and answers like the reference network of its version.
func checkConsistent(t *testing.T, f *state.File, dataDir, name string, seeds map[string]uint64) string {
	t.Helper()
	st, err := f.Load()
	if err != nil {
		t.Fatalf("state after kill: %v", err)
	}
	m := st.Models[name]
	if m == nil || m.Active == nil {
		t.Fatalf("state after kill has no active %s: %+v", name, st.Models)
	}
	blob := filepath.Join(dataDir, "blobs", "sha256", m.Active.Digest)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatalf("active blob: %v", err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != m.Active.Digest {
		t.Fatalf("active blob %s is corrupt", blob)
	}
	if _, err := manifest.ParseEnvelope(m.Active.Manifest); err != nil {
		t.Fatalf("stored manifest: %v", err)
	}
	spec := func(n string, shape ...int64) []runtime.TensorSpec {
		return []runtime.TensorSpec{{Name: n, ElemType: runtime.Float32, Shape: shape}}
	}
	sess, err := runtime.Open(context.Background(), blob, spec(mlp.InputName, 1, mlp.InputSize), spec(mlp.OutputName, 1, 1), runtime.Options{})
	if err != nil {
		t.Fatalf("active blob does not load: %v", err)
	}
	defer sess.Close()
	in := make([]float32, mlp.InputSize)
	for i := range in {
		in[i] = float32(math.Cos(float64(i)))
	}
	out, err := sess.Run(context.Background(), map[string]runtime.Tensor{mlp.InputName: runtime.NewTensor([]int64{1, mlp.InputSize}, in)})
	if err != nil {
		t.Fatal(err)
	}
	want := mlp.Reference(mlp.NewWeights(seeds[m.Active.Version]), in, 1)[0]
	if got := out[mlp.OutputName].Float32()[0]; math.Abs(float64(got-want)) > 1e-5 {
		t.Fatalf("active %s answers %v, want %v", m.Active.Version, got, want)
	}
	return m.Active.Version
}

func waitActive(t *testing.T, f *state.File, name, version string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := f.Load(); err == nil {
			if m := st.Models[name]; m != nil && m.Active != nil && m.Active.Version == version && m.Pending == nil {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s %s did not become active", name, version)
}

func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fleetagent")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fleetagent: %v\n%s", err, out)
	}
	return bin
}

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startAgent(t *testing.T, bin, cfg, dir string, n int) *agentProc {
	t.Helper()
	logPath := filepath.Join(dir, fmt.Sprintf("agent-%02d.log", n))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s:\n%s", logPath, tail(b, 4000))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (p *agentProc) waitLog(t *testing.T, text string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(p.log); strings.Contains(string(b), text) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("agent log %s never said %q", p.log, text)
}

func (p *agentProc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *agentProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("agent did not stop on SIGTERM within 30s")
		p.kill(t)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		b, _ := os.ReadFile(p.log)
		t.Errorf("agent exited with %d after SIGTERM:\n%s", code, tail(b, 2000))
	}
}

// agentConfig is the configuration file of a fleetagent process in these
// tests: device ID, broker, S3 reached at s3Endpoint (s3's own, or a proxy
// in front of it) with s3's credentials, data dir, trust root and ONNX
// Runtime library. Callers append further keys.
func agentConfig(device, brokerURL, s3Endpoint string, s3 *testenv.ObjectStore, dataDir, rootPath, ortLib string) string {
	return fmt.Sprintf(`device_id: %s
mqtt:
  brokers: [%s]
s3:
  endpoint: %s
  access_key: %s
  secret_key: %s
  region: %s
  insecure: true
data_dir: %s
trust_root: %s
ort_lib: %s
`, device, brokerURL, s3Endpoint, s3.AccessKey, s3.SecretKey, s3.Region, dataDir, rootPath, ortLib)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
