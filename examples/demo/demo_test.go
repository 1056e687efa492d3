package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
)

// demoEnv builds the three binaries into a temporary directory and returns
// a short-mode Config on free ports writing into a temporary directory.
func demoEnv(t *testing.T, out *syncBuffer) Config {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the whole demo: real fleethub, fleetagent and factory processes")
	}
	ortLib := runtimetest.LibraryPath(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := buildBinaries(root)
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Root:       root,
		Dir:        filepath.Join(t.TempDir(), "demo"),
		FleetHub:   filepath.Join(bin, "fleethub"),
		FleetAgent: filepath.Join(bin, "fleetagent"),
		Factory:    filepath.Join(bin, "factory"),
		Env:        append(os.Environ(), "MODELFLEET_ORT_LIB="+ortLib),
		Short:      true,
		FreePorts:  true,
		Out:        out,
	}
}

// The binaries are built once per test binary, into binDir.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func buildBinaries(root string) (string, error) {
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "modelfleet-demo-bin-")
		if buildErr != nil {
			return
		}
		build := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "./cmd/fleethub", "./cmd/fleetagent", "./examples/factory")
		build.Dir = root
		if b, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, b)
		}
	})
	return binDir, buildErr
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// TestDemo runs the demo end to end in short mode: every step waits for
// its expected state (v1 everywhere, the canary and the full v2 rollout
// succeeded, the broken v3 rolled back and every agent answering with v2),
// so the demo returning nil is the assertion; the transcript is checked
// for the commands a reader must see.
func TestDemo(t *testing.T) {
	out := &syncBuffer{}
	cfg := demoEnv(t, out)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err := Run(ctx, cfg)
	transcript := unwrap(out.String())
	if err != nil {
		t.Fatalf("demo failed: %v\n--- transcript ---\n%s\n--- logs ---\n%s", err, transcript, logTails(cfg.Dir))
	}
	for _, want := range []string{
		"$ fleethub dev --data-dir ",
		// Nothing before the banner; free ports, so it says how to reach the API.
		"fleethub.log\n  | fleethub dev is running.\n",
		"  |   export MODELFLEET_HUB=http://127.0.0.1:",
		"$ fleetagent run ",
		"--labels site=plant-b,line=1",
		"$ fleethub model push examples/models/vibration-anomaly-v1.onnx --name vibration-anomaly --version 1.0.0",
		"status succeeded",
		"vibration-anomaly@1.0.0 score ",
		"$ curl -s ",
		`"model_version":"1.0.0"`,
		"P50 MS  P95 MS  COMPUTE CPU MS",
		"--selector site=plant-a --waves 50,100",
		"'p95_latency_ms<100'",
		"vibration-anomaly@2.0.0 score ",
		"status rolled-back",
		"ended: rolled-back",
		"install_failures<=0: 1 (failed)",
		"rolled-back vibration-anomaly@3.0.0: load failed: ONNX Runtime cannot load it: ",
		"kept serving: phase rolled-back cleared, now active",
		"edge-b1 (127.0.0.1:",
		"stopping fleethub",
	} {
		if !strings.Contains(transcript, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
	for _, bad := range []struct{ re, what string }{
		{`Using sidecar|No IAM service`, "versitygw's start-up lines"},
		{`: \d+\.\d{5,} \((passed|failed)\)`, "an unrounded gate value"},
		// The device that refused 3.0.0 is active on 2.0.0 after the
		// rollback (the demo waits for that too).
		{`\(rolled-back\)`, "a device left in phase rolled-back"},
		{`status (rolled-back|succeeded)[^\n]*\nwaves:[^\n]*stage `, "a finished rollout with a stage"},
		{`/blobs/sha256/`, "a blob path in an error"},
	} {
		if m := regexp.MustCompile(bad.re).FindString(transcript); m != "" {
			t.Errorf("transcript shows %s: %q", bad.what, m)
		}
	}
	assertStopped(t, transcript)
	if t.Failed() {
		t.Logf("transcript:\n%s", transcript)
	}
}

// TestDemoInterrupted cancels the demo (as Ctrl-C does) once the agents
// run and checks that it reports the interruption and stops every process
// it started.
func TestDemoInterrupted(t *testing.T) {
	out := &syncBuffer{}
	cfg := demoEnv(t, out)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out.onWrite = func(s string) {
		if strings.Contains(s, "━━ 3. ") {
			cancel()
		}
	}
	err := Run(ctx, cfg)
	transcript := unwrap(out.String())
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("Run after cancel = %v, want an interruption error\n%s", err, transcript)
	}
	if !strings.Contains(transcript, "stopping edge-a1") || !strings.Contains(transcript, "stopping fleethub") {
		t.Errorf("transcript does not show the processes being stopped:\n%s", transcript)
	}
	assertStopped(t, transcript)
}

// assertStopped checks that nothing listens any more on the hub API and
// agent ports the transcript shows.
func assertStopped(t *testing.T, transcript string) {
	t.Helper()
	addrs := regexp.MustCompile(`--(?:api-addr|serving-http-addr) (127\.0\.0\.1:\d+)`).FindAllStringSubmatch(transcript, -1)
	if len(addrs) < 2 {
		t.Fatalf("transcript shows %d listen addresses, want the hub's and the agents'", len(addrs))
	}
	for _, m := range addrs {
		if c, err := net.DialTimeout("tcp", m[1], time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the demo ended", m[1])
		}
	}
}

// unwrap undoes wrap on a transcript.
func unwrap(s string) string { return strings.ReplaceAll(s, " \\\n   ", "") }

// logTails returns the end of every log of the demo.
func logTails(dir string) string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(l), strings.Join(lines[max(0, len(lines)-25):], "\n"))
	}
	return b.String()
}

// syncBuffer is a transcript buffer that may call onWrite with each write.
type syncBuffer struct {
	mu      sync.Mutex // guards buf
	buf     bytes.Buffer
	onWrite func(string)
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.buf.Write(p)
	s.mu.Unlock()
	if s.onWrite != nil {
		s.onWrite(string(p))
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func TestParseJoin(t *testing.T) {
	banner := strings.Split(`fleethub dev is running.
  MQTT:   tcp://127.0.0.1:41000

Join an agent with:
  fleetagent run \
    --device-id dev-1 --labels site=dev \
    --mqtt-brokers tcp://127.0.0.1:41000 \
    --trust-root /x/keys/root.json \
    --data-dir /x/agent-dev-1

Then push a model and roll it out:
  fleethub rollout start --model m --version 1.0.0`, "\n")
	tests := []struct {
		name       string
		lines      []string
		wantFlags  string
		wantBroker string
		wantErr    string
	}{
		{"banner", banner, "--device-id dev-1 --labels site=dev --mqtt-brokers tcp://127.0.0.1:41000 --trust-root /x/keys/root.json --data-dir /x/agent-dev-1", "tcp://127.0.0.1:41000", ""},
		{"no command", []string{"fleethub dev is running."}, "", "", "no `fleetagent run`"},
		{"no broker", []string{"  fleetagent run --device-id x"}, "", "", "no --mqtt-brokers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, broker, err := parseJoin(tt.lines)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseJoin = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(flags, " "); got != tt.wantFlags || broker != tt.wantBroker {
				t.Errorf("parseJoin = %q, %q; want %q, %q", got, broker, tt.wantFlags, tt.wantBroker)
			}
		})
	}
}

func TestShellQuoteAndWrap(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"site=plant-a,line=1", "site=plant-a,line=1"},
		{"error_rate<0.01", "'error_rate<0.01'"},
		{"it's", `'it'\''s'`},
		{"", "''"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	long := commandLine("fleetagent", strings.Fields("run --mqtt-brokers tcp://127.0.0.1:1883 --s3-endpoint http://127.0.0.1:9000 --s3-region us-east-1 --device-id edge-a1 --labels site=plant-a,line=1"))
	w := wrap(long)
	if strings.ReplaceAll(w, " \\\n   ", "") != long {
		t.Errorf("wrap changed the command:\n%s\n%s", w, long)
	}
	for _, l := range strings.Split(w, "\n") {
		if len(l) > 100 {
			t.Errorf("wrapped line too long (%d): %s", len(l), l)
		}
	}
	if short := "fleethub devices list"; wrap(short) != short {
		t.Errorf("wrap(%q) = %q", short, wrap(short))
	}
}
