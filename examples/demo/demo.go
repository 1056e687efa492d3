package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/hub/rollout"
	"github.com/modelfleet/modelfleet/hub/store"
)

// Model is the name the demo pushes the example models under.
const Model = "vibration-anomaly"

// Config is what the demo runs on.
type Config struct {
	// Root is the module root: examples/models is read from there and
	// every command runs there.
	Root string
	// Dir holds everything the demo writes (data, logs, configs); it is
	// emptied first.
	Dir string
	// FleetHub, FleetAgent and Factory are the binaries to run. An empty
	// Factory is built from examples/factory into Dir/bin.
	FleetHub, FleetAgent, Factory string
	// Env is the environment of every process (MODELFLEET_ORT_LIB for the
	// agents).
	Env []string
	// Short soaks less and prints less (the test).
	Short bool
	// FreePorts uses free ports instead of the defaults of fleethub dev
	// (127.0.0.1:8400, :1883, :9000), as the test does.
	FreePorts bool
	// Out receives the transcript.
	Out io.Writer
}

// device is one simulated edge device.
type device struct {
	id     string
	site   string
	line   string
	port   int // KServe v2 HTTP port
	config string
	data   string
}

func (d device) labels() string { return "site=" + d.site + ",line=" + d.line }

// topicLine is the device's production line in factory topics.
func (d device) topicLine() string { return d.site + "/line-" + d.line }

// demo is one run.
type demo struct {
	cfg    Config
	out    io.Writer
	logDir string
	env    []string // Env plus MODELFLEET_HUB

	hubURL  string
	join    []string // the flags of the join command fleethub dev printed
	broker  string
	devices []device

	mu    sync.Mutex // guards procs
	procs []*proc

	factory    *proc
	factoryOff int64 // bytes of the factory log already shown
}

// stepError is a failed step; the message names it and the logs.
type stepError struct {
	n     int
	title string
	err   error
	logs  string
}

func (e *stepError) Error() string {
	return fmt.Sprintf("step %d (%s) failed: %v\n  logs: %s", e.n, e.title, e.err, e.logs)
}

func (e *stepError) Unwrap() error { return e.err }

// Run runs the demo and stops everything it started before returning,
// whether it succeeded, failed or ctx was cancelled (Ctrl-C).
func Run(ctx context.Context, cfg Config) (err error) {
	d := &demo{cfg: cfg, out: cfg.Out, logDir: filepath.Join(cfg.Dir, "logs")}
	defer func() {
		d.section(8, "stop everything")
		d.stopAll()
		d.say("Data:  %s (hub store, keys, broker and S3 under hub/, agents under agents/)", d.rel(cfg.Dir))
		d.say("Logs:  %s (fleethub.log, edge-*.log, factory.log)", d.rel(d.logDir))
		if err == nil {
			d.say("\nDone: a plain rollout, a gated canary, and a bad release stopped by its\n"+
				"gates with every device still serving. Next: run the same by hand (README.md,\n"+
				"\"Trying it by hand\"), docs/agent.md, examples/factory/README.md.\n"+
				"`make demo` starts afresh; `make clean` removes %s.", d.rel(cfg.Dir))
		}
	}()
	steps := []struct {
		title   string
		timeout time.Duration
		run     func(context.Context) error
	}{
		{"start the hub", 2 * time.Minute, d.startHub},
		{"start three agents", 2 * time.Minute, d.startAgents},
		{"start the factory simulator", time.Minute, d.startFactory},
		{"push and roll out v1", 4 * time.Minute, d.rolloutV1},
		{"inference: bindings, KServe v2, telemetry", 3 * time.Minute, d.showServing},
		{"canary v2 to plant-a, then to all", 8 * time.Minute, d.canaryV2},
		{"a broken v3 is rolled back", 5 * time.Minute, d.brokenV3},
	}
	if err := d.prepare(); err != nil {
		return &stepError{0, "prepare", err, d.rel(d.logDir)}
	}
	for i, s := range steps {
		n := i + 1
		d.section(n, s.title)
		sctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := s.run(sctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("step %d (%s): interrupted", n, s.title)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("%w (step budget %s)", err, s.timeout)
			}
			return &stepError{n, s.title, err, d.rel(d.logDir)}
		}
	}
	return nil
}

// prepare empties the demo directory and checks the binaries.
func (d *demo) prepare() error {
	if d.cfg.Dir == "" || d.cfg.Dir == "/" || d.cfg.Dir == d.cfg.Root {
		return fmt.Errorf("refusing to empty demo directory %q", d.cfg.Dir)
	}
	if err := os.RemoveAll(d.cfg.Dir); err != nil {
		return err
	}
	for _, dir := range []string{d.logDir, filepath.Join(d.cfg.Dir, "agents"), filepath.Join(d.cfg.Dir, "bin")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	for _, b := range []string{d.cfg.FleetHub, d.cfg.FleetAgent} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w: run `make build` first", err)
		}
	}
	d.env = append(slices.Clone(d.cfg.Env), "MODELFLEET_HUB=") // set in startHub
	return nil
}

// ---- output ----

func (d *demo) section(n int, title string) {
	fmt.Fprintf(d.out, "\n━━ %d. %s %s\n", n, title, strings.Repeat("━", max(0, 60-len(title))))
}

// say prints narration.
func (d *demo) say(format string, a ...any) {
	fmt.Fprintf(d.out, "# "+strings.ReplaceAll(format, "\n", "\n# ")+"\n", a...)
}

// rel shows path relative to the module root when it is inside it.
func (d *demo) rel(path string) string {
	if r, err := filepath.Rel(d.cfg.Root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// ---- running commands ----

// cli runs a fleethub or fleetagent command to completion. With echo it
// prints the command line as a user would type it and its output.
func (d *demo) cli(ctx context.Context, echo bool, bin string, args ...string) (string, error) {
	name := filepath.Base(bin)
	if echo {
		fmt.Fprintf(d.out, "$ %s\n", wrap(commandLine(name, args)))
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.Dir = d.cfg.Root
	cmd.Env = d.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if echo {
		d.out.Write(stdout.Bytes())
		if err != nil {
			d.out.Write(stderr.Bytes())
		}
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", commandLine(name, args), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (d *demo) hubCLI(ctx context.Context, echo bool, args ...string) (string, error) {
	return d.cli(ctx, echo, d.cfg.FleetHub, args...)
}

// hubJSON runs a fleethub command with -o json, silently, into v.
func (d *demo) hubJSON(ctx context.Context, v any, args ...string) error {
	out, err := d.hubCLI(ctx, false, append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("fleethub %s -o json: %w", strings.Join(args, " "), err)
	}
	return nil
}

// start starts a long-running process, echoing its command line.
func (d *demo) start(name string, extra io.Writer, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(d.logDir, name+".log")
	fmt.Fprintf(d.out, "$ %s &   # output in %s\n", wrap(commandLine(filepath.Base(bin), args)), d.rel(logPath))
	p, err := startProc(name, logPath, d.cfg.Root, d.env, extra, bin, args...)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.procs = append(d.procs, p)
	d.mu.Unlock()
	return p, nil
}

// stopAll stops the processes in the reverse order of their start: the
// factory first (it prints its summary), the hub last.
func (d *demo) stopAll() {
	d.mu.Lock()
	ps := slices.Clone(d.procs)
	d.procs = nil
	d.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		p := ps[i]
		if p.exited() == "" {
			fmt.Fprintf(d.out, "stopping %s\n", p.name)
		}
		p.stop(15 * time.Second)
		if p == d.factory {
			if line := d.lastLine(p.log, "factory: published"); line != "" {
				fmt.Fprintln(d.out, "  "+line)
			}
		}
	}
}

// waitFor polls check every interval until it reports done, ctx ends, or a
// process the demo started exits.
func (d *demo) waitFor(ctx context.Context, what string, check func(context.Context) (bool, error)) error {
	var last error
	for {
		d.mu.Lock()
		ps := slices.Clone(d.procs)
		d.mu.Unlock()
		if err := checkRunning(ps); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		ok, err := check(ctx)
		if ok && err == nil {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("timed out waiting for %s (last error: %v)", what, last)
			}
			return fmt.Errorf("timed out waiting for %s", what)
		case <-time.After(time.Second):
		}
	}
}

// ---- step 1: the hub ----

func (d *demo) startHub(ctx context.Context) error {
	hubDir := filepath.Join(d.cfg.Dir, "hub")
	args := []string{"dev", "--data-dir", d.rel(hubDir)}
	apiAddr := "127.0.0.1:8400"
	if d.cfg.FreePorts || !portFree(apiAddr) {
		port, err := freePort()
		if err != nil {
			return err
		}
		apiAddr = fmt.Sprintf("127.0.0.1:%d", port)
		args = append(args, "--api-addr", apiAddr)
	}
	for _, p := range []struct{ flag, addr string }{{"--broker-addr", "127.0.0.1:1883"}, {"--s3-addr", "127.0.0.1:9000"}} {
		if d.cfg.FreePorts || !portFree(p.addr) {
			args = append(args, p.flag, "127.0.0.1:0")
		}
	}
	d.hubURL = "http://" + apiAddr
	d.say("`make build` made bin/fleethub and bin/fleetagent; the commands below call\n" +
		"them by name (export PATH=$PWD/bin:$PATH to type them the same way).\n\n" +
		"fleethub dev runs the whole hub in one process: API, rollout controller, an\n" +
		"embedded MQTT broker, an embedded S3 endpoint, SQLite, and dev signing keys.")
	if apiAddr != "127.0.0.1:8400" && !d.cfg.FreePorts {
		d.say("(port 8400 is taken here, so the API gets another; the banner says how the\n" +
			" CLI finds it, and the demo does the same)")
	}
	banner := &lineCollector{}
	if _, err := d.start("fleethub", banner, d.cfg.FleetHub, args...); err != nil {
		return err
	}
	// The commands from here on talk to it, as after the banner's export
	// line. The hub itself started without MODELFLEET_HUB, as from a fresh
	// shell, so its banner shows that line when the API is not on 8400.
	d.env[len(d.env)-1] = "MODELFLEET_HUB=" + d.hubURL
	if err := d.waitFor(ctx, "fleethub dev to print the agent join command", func(context.Context) (bool, error) {
		return banner.contains("rollout start"), nil
	}); err != nil {
		return err
	}
	// Its stdout is the banner (logs go to stderr, into the log file).
	for _, l := range banner.lines() {
		fmt.Fprintln(d.out, "  | "+d.relText(l))
	}
	join, broker, err := parseJoin(banner.lines())
	if err != nil {
		return err
	}
	d.join, d.broker = join, broker
	return d.waitFor(ctx, "the hub API to answer", func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.hubURL+"/healthz", nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// relText replaces absolute paths under the module root in s by relative
// ones, for reading.
func (d *demo) relText(s string) string {
	return strings.ReplaceAll(s, d.cfg.Root+string(filepath.Separator), "")
}

// joinFlag matches one "--flag value" pair of the join command.
var joinFlag = regexp.MustCompile(`--([a-z0-9-]+) (\S+)`)

// parseJoin extracts the flags of the `fleetagent run` command line that
// fleethub dev printed (continued over lines with backslashes), and the
// broker URL.
func parseJoin(lines []string) (flags []string, broker string, err error) {
	var cmd strings.Builder
	in := false
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "fleetagent run") {
			in = true
		}
		if !in {
			continue
		}
		cmd.WriteString(strings.TrimSuffix(t, "\\") + " ")
		if !strings.HasSuffix(t, "\\") {
			break
		}
	}
	if cmd.Len() == 0 {
		return nil, "", errors.New("fleethub dev printed no `fleetagent run` command line")
	}
	for _, m := range joinFlag.FindAllStringSubmatch(cmd.String(), -1) {
		flags = append(flags, "--"+m[1], m[2])
		if m[1] == "mqtt-brokers" {
			broker = m[2]
		}
	}
	if broker == "" {
		return nil, "", fmt.Errorf("no --mqtt-brokers in the join command %q", cmd.String())
	}
	return flags, broker, nil
}

// lineCollector keeps the lines written to it.
type lineCollector struct {
	mu  sync.Mutex // guards all following fields
	buf bytes.Buffer
}

func (c *lineCollector) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *lineCollector) contains(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Contains(c.buf.Bytes(), []byte(s))
}

func (c *lineCollector) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Split(strings.TrimRight(c.buf.String(), "\n"), "\n")
}

// ---- step 2: the agents ----

// agentYAML is the part of each agent's configuration that only a file can
// say: the factory topic bindings. Everything else comes from the join
// command line.
const agentYAML = `# fleetagent configuration of the demo device %[1]s, written by examples/demo.
# The connection settings come from the command line that fleethub dev
# printed; this file adds the factory bindings (YAML only) and a short
# telemetry interval so that rollout gates see data quickly.
telemetry_interval_seconds: 2
serving:
  bindings:
    # Readings of the machines on this device's line go through the model;
    # the score goes back to the machine's anomaly topic:
    # factory/plant-a/line-1/press-01/vibration → factory/plant-a/line-1/press-01/anomaly
    - model: %[2]s
      input: factory/%[3]s/+/vibration
      output: factory/{2}/{3}/{4}/anomaly
      qos: 1
`

func (d *demo) startAgents(ctx context.Context) error {
	d.devices = []device{
		{id: "edge-a1", site: "plant-a", line: "1"},
		{id: "edge-a2", site: "plant-a", line: "2"},
		{id: "edge-b1", site: "plant-b", line: "1"},
	}
	d.say("Three edge devices, one per production line: two at site plant-a, one at\n" +
		"plant-b. Each runs the join command above with its own ID, labels, data\n" +
		"directory and HTTP port, plus a config file with its factory bindings.")
	for i := range d.devices {
		dev := &d.devices[i]
		// 8081, 8082, 8083 when free, so that the commands read well.
		dev.port = 8081 + i
		if d.cfg.FreePorts || !portFree(fmt.Sprintf("127.0.0.1:%d", dev.port)) {
			port, err := freePort()
			if err != nil {
				return err
			}
			dev.port = port
		}
		dev.data = filepath.Join(d.cfg.Dir, "agents", dev.id)
		dev.config = filepath.Join(d.cfg.Dir, "agents", dev.id+".yaml")
		if err := os.WriteFile(dev.config, fmt.Appendf(nil, agentYAML, dev.id, Model, dev.topicLine()), 0o644); err != nil {
			return err
		}
		if i == 0 {
			fmt.Fprintf(d.out, "$ cat %s\n", d.rel(dev.config))
			b, _ := os.ReadFile(dev.config)
			d.out.Write(b)
		}
		args := []string{"run"}
		for j := 0; j+1 < len(d.join); j += 2 {
			switch d.join[j] {
			case "--device-id", "--labels", "--data-dir":
				continue
			}
			args = append(args, d.join[j], d.relText(d.join[j+1]))
		}
		args = append(args, "--device-id", dev.id, "--labels", dev.labels(), "--data-dir", dev.data,
			"--serving-http-addr", fmt.Sprintf("127.0.0.1:%d", dev.port), "--config", d.rel(dev.config))
		if _, err := d.start(dev.id, nil, d.cfg.FleetAgent, args...); err != nil {
			return err
		}
	}
	if err := d.waitFor(ctx, "the three agents to report online", func(ctx context.Context) (bool, error) {
		var ds []store.Device
		if err := d.hubJSON(ctx, &ds, "devices", "list"); err != nil {
			return false, err
		}
		online := 0
		for _, x := range ds {
			if x.Online {
				online++
			}
		}
		return online == len(d.devices), nil
	}); err != nil {
		return err
	}
	_, err := d.hubCLI(ctx, true, "devices", "list")
	return err
}

// ---- step 3: the factory ----

func (d *demo) startFactory(ctx context.Context) error {
	bin := d.cfg.Factory
	if bin == "" {
		bin = filepath.Join(d.cfg.Dir, "bin", "factory")
		fmt.Fprintf(d.out, "$ go build -o %s ./examples/factory\n", d.rel(bin))
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/factory")
		cmd.Dir, cmd.Env = d.cfg.Root, d.env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./examples/factory: %w\n%s", err, out)
		}
	}
	var lines []string
	for _, dev := range d.devices {
		lines = append(lines, dev.topicLine())
	}
	interval := "500ms"
	d.say("The factory simulator publishes a window of 64 vibration samples per machine\n" +
		"every " + interval + " (factory/<site>/<line>/<machine>/vibration), a fault now and then,\n" +
		"and prints the scores the agents publish back. No model runs yet.")
	p, err := d.start("factory", nil, bin, "--broker", d.broker, "--lines", strings.Join(lines, ","),
		"--machines", "2", "--interval", interval, "--fault-rate", "0.15")
	if err != nil {
		return err
	}
	d.factory = p
	return d.waitFor(ctx, "the factory simulator to connect", func(context.Context) (bool, error) {
		return d.lastLine(p.log, "factory: ") != "", nil
	})
}

// ---- step 4: v1 ----

func (d *demo) modelFile(name string) string {
	return filepath.Join("examples", "models", name)
}

func (d *demo) rolloutV1(ctx context.Context) error {
	d.say("Push the first model: the hub stores it in S3, reads its tensors and signs\n" +
		"its manifest with the release key.")
	if _, err := d.hubCLI(ctx, true, "model", "push", d.modelFile("vibration-anomaly-v1.onnx"), "--name", Model, "--version", "1.0.0"); err != nil {
		return err
	}
	d.say("Roll it out to every device at once (one wave of 100%%, no soak).")
	id, err := d.startRollout(ctx, "--model", Model, "--version", "1.0.0", "--waves", "100", "--soak", "0s")
	if err != nil {
		return err
	}
	if err := d.watchRollout(ctx, id, store.RolloutStatus("succeeded")); err != nil {
		return err
	}
	if err := d.waitVersions(ctx, "1.0.0", nil); err != nil {
		return err
	}
	_, err = d.hubCLI(ctx, true, "devices", "list")
	return err
}

// startRolloutRE finds the ID in `fleethub rollout start`'s output.
var startRolloutRE = regexp.MustCompile(`started rollout (\d+)`)

func (d *demo) startRollout(ctx context.Context, args ...string) (string, error) {
	out, err := d.hubCLI(ctx, true, append([]string{"rollout", "start"}, args...)...)
	if err != nil {
		return "", err
	}
	m := startRolloutRE.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no rollout ID in %q", out)
	}
	return m[1], nil
}

// watchRollout shows `fleethub rollout status ID` whenever the rollout
// changes, until it finishes, and checks it finished as want.
func (d *demo) watchRollout(ctx context.Context, id string, want store.RolloutStatus) error {
	fmt.Fprintf(d.out, "$ fleethub rollout status %s   # repeated whenever it changes, as --watch does\n", id)
	var lastKey, lastText string
	var final hub.RolloutInfo
	err := d.waitFor(ctx, "rollout "+id+" to finish", func(ctx context.Context) (bool, error) {
		var info hub.RolloutInfo
		if err := d.hubJSON(ctx, &info, "rollout", "status", id); err != nil {
			return false, err
		}
		key := fmt.Sprint(info.Rollout.Status, info.Rollout.Wave, info.State.Stage, info.Results, len(info.State.Devices))
		for _, g := range info.State.Gates {
			key += fmt.Sprint(g.Passed, g.Missing)
		}
		if key != lastKey {
			lastKey = key
			out, err := d.hubCLI(ctx, false, "rollout", "status", id)
			if err != nil {
				return false, err
			}
			if out != lastText {
				if lastText != "" {
					fmt.Fprintln(d.out)
				}
				lastText = out
				d.out.Write([]byte(out))
			}
		}
		final = info
		return info.Rollout.Status.Finished(), nil
	})
	if err != nil {
		return err
	}
	if final.Rollout.Status != want {
		return fmt.Errorf("rollout %s ended %s, want %s (reason: %s)", id, final.Rollout.Status, want, orNone(final.State.Reason))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none given"
	}
	return s
}

// waitVersions waits until every device (or those of only) serves version,
// as the hub sees them, with nothing pending and the phase active or one of
// phases.
func (d *demo) waitVersions(ctx context.Context, version string, only func(device) bool, phases ...string) error {
	phases = append(phases, "active")
	want := map[string]bool{}
	for _, dev := range d.devices {
		if only == nil || only(dev) {
			want[dev.id] = true
		}
	}
	return d.waitFor(ctx, fmt.Sprintf("%d devices to serve %s %s", len(want), Model, version), func(ctx context.Context) (bool, error) {
		var ds []store.Device
		if err := d.hubJSON(ctx, &ds, "devices", "list"); err != nil {
			return false, err
		}
		n := 0
		for _, x := range ds {
			m := x.Models[Model]
			if want[x.ID] && m.Version == version && slices.Contains(phases, m.Phase) && m.Pending == "" {
				n++
			}
		}
		return n == len(want), nil
	})
}

// ---- step 5: serving ----

func (d *demo) showServing(ctx context.Context) error {
	d.say("Every reading now runs through the model on the device of its line; the\n"+
		"agents publish the scores back, and the factory prints them (%s):", d.rel(d.factory.log))
	if err := d.showScores(ctx, "1.0.0"); err != nil {
		return err
	}
	d.say("(The example models are small untrained networks: their scores tell the\n" +
		"versions apart, not the faults. Swap in your own detector the same way.)")
	dev := d.devices[0]
	if err := d.kserve(ctx, dev, "1.0.0", true); err != nil {
		return err
	}

	d.say("Only aggregates go to the hub: request counts, errors, latency histograms and\n"+
		"compute time per model (every %ds here; 30 s by default).", 2)
	var dd api.DeviceDetail
	if err := d.waitFor(ctx, "telemetry of "+dev.id+" at the hub", func(ctx context.Context) (bool, error) {
		if err := d.hubJSON(ctx, &dd, "devices", "show", dev.id); err != nil {
			return false, err
		}
		for _, t := range dd.Telemetry {
			if t.Model == Model && t.Version == "1.0.0" && t.Requests >= 10 {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	_, err := d.hubCLI(ctx, true, "devices", "show", dev.id)
	return err
}

// showScores waits until the factory printed a score of version from every
// line and shows a few of them.
func (d *demo) showScores(ctx context.Context, version string) error {
	tag := Model + "@" + version + " "
	// Only what comes from now on.
	if st, err := os.Stat(d.factory.log); err == nil {
		d.factoryOff = st.Size()
	}
	var shown []string
	err := d.waitFor(ctx, "scores of "+version+" from every line in "+d.rel(d.factory.log), func(context.Context) (bool, error) {
		lines, err := d.factoryLines()
		if err != nil {
			return false, err
		}
		per := 2
		if d.cfg.Short {
			per = 1
		}
		for _, dev := range d.devices {
			n := 0
			for _, l := range shown {
				if strings.Contains(l, " "+dev.topicLine()+"/") {
					n++
				}
			}
			for _, l := range lines {
				if n < per && strings.Contains(l, tag) && strings.Contains(l, " "+dev.topicLine()+"/") {
					shown = append(shown, l)
					n++
				}
			}
		}
		return len(shown) == per*len(d.devices), nil
	})
	for _, l := range shown {
		fmt.Fprintln(d.out, "  "+l)
	}
	return err
}

// factoryLines returns the lines the factory printed since the last call.
func (d *demo) factoryLines() ([]string, error) {
	f, err := os.Open(d.factory.log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(d.factoryOff, io.SeekStart); err != nil {
		return nil, err
	}
	var lines []string
	r := bufio.NewReader(f)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			break // a partial last line is read next time
		}
		d.factoryOff += int64(len(l))
		lines = append(lines, strings.TrimRight(l, "\n"))
	}
	return lines, nil
}

// lastLine returns the last line of the file at path containing s.
func (d *demo) lastLine(path, s string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var found string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			found = l
		}
	}
	return found
}

// inferRequest is a KServe v2 request for the model: one window of a
// vibration signal.
func inferRequest() []byte {
	data := make([]float64, 64)
	for i := range data {
		data[i] = math.Round(1000*0.25*math.Sin(2*math.Pi*4*float64(i)/64)) / 1000
	}
	b, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{
		"name": "window", "shape": []int{1, 64}, "datatype": "FP32", "data": data,
	}}})
	return b
}

// kserve sends one KServe v2 request to dev's HTTP API and checks that
// version answered. With echo it shows the curl command and the answer.
func (d *demo) kserve(ctx context.Context, dev device, version string, echo bool) error {
	reqPath := filepath.Join(d.cfg.Dir, "infer-request.json")
	if err := os.WriteFile(reqPath, inferRequest(), 0o644); err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/v2/models/%s/infer", dev.port, Model)
	if echo {
		d.say("Local clients can also call the agent directly with KServe v2 (Open Inference\n"+
			"Protocol) over HTTP. %s holds one window:", d.rel(reqPath))
		fmt.Fprintf(d.out, "$ curl -s -H 'Content-Type: application/json' --data @%s %s\n", d.rel(reqPath), url)
	}
	body, _ := os.ReadFile(reqPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("KServe v2 call to %s: %w", dev.id, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if echo {
		fmt.Fprintf(d.out, "%s\n", bytes.TrimSpace(rb))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("KServe v2 call to %s: %s: %s", dev.id, resp.Status, bytes.TrimSpace(rb))
	}
	var r struct {
		Version string `json:"model_version"`
	}
	if err := json.Unmarshal(rb, &r); err != nil {
		return fmt.Errorf("KServe v2 answer of %s: %w", dev.id, err)
	}
	if r.Version != version {
		return fmt.Errorf("%s answered with %s %s, want %s", dev.id, Model, r.Version, version)
	}
	return nil
}

// ---- step 6: canary ----

func (d *demo) soak() string {
	if d.cfg.Short {
		return "6s"
	}
	return "15s"
}

// gates are the rollout gates of v2 and v3. The latency bound is loose: a
// busy two-core machine running the hub, three agents and the factory must
// pass it, and the demo is about the mechanism, not the numbers.
var gates = []string{"--gate", "error_rate<0.01", "--gate", "p95_latency_ms<100", "--gate", "install_failures<=0"}

func (d *demo) canaryV2(ctx context.Context) error {
	if _, err := d.hubCLI(ctx, true, "model", "push", d.modelFile("vibration-anomaly-v2.onnx"), "--name", Model, "--version", "2.0.0"); err != nil {
		return err
	}
	d.say("A canary: only site=plant-a, in two waves (50%%, then 100%% of plant-a). Each\n"+
		"wave installs, soaks %s on live traffic, and must pass its gates on the\n"+
		"telemetry of the wave's devices before the next starts; a failed gate rolls\n"+
		"the wave back.", d.soak())
	args := append([]string{"--model", Model, "--version", "2.0.0", "--selector", "site=plant-a",
		"--waves", "50,100", "--soak", d.soak()}, gates...)
	id, err := d.startRollout(ctx, append(args, "--on-failure", "rollback")...)
	if err != nil {
		return err
	}
	if err := d.watchRollout(ctx, id, "succeeded"); err != nil {
		return err
	}
	plantA := func(dev device) bool { return dev.site == "plant-a" }
	if err := d.waitVersions(ctx, "2.0.0", plantA); err != nil {
		return err
	}
	d.say("plant-a runs 2.0.0; plant-b still runs 1.0.0:")
	if _, err := d.hubCLI(ctx, true, "devices", "list"); err != nil {
		return err
	}
	d.say("The canary held: roll 2.0.0 out to every device.")
	args = append([]string{"--model", Model, "--version", "2.0.0", "--waves", "100", "--soak", d.soak()}, gates...)
	id, err = d.startRollout(ctx, append(args, "--on-failure", "rollback")...)
	if err != nil {
		return err
	}
	if err := d.watchRollout(ctx, id, "succeeded"); err != nil {
		return err
	}
	if err := d.waitVersions(ctx, "2.0.0", nil); err != nil {
		return err
	}
	d.say("The factory now gets 2.0.0's scores from every line (other weights, other scores):")
	return d.showScores(ctx, "2.0.0")
}

// ---- step 7: broken v3 ----

func (d *demo) brokenV3(ctx context.Context) error {
	d.say("examples/models/broken.onnx is a bad export: signed, right size and digest,\n" +
		"but ONNX Runtime refuses to load it. Push it as 3.0.0 and roll it out.")
	if _, err := d.hubCLI(ctx, true, "model", "push", d.modelFile("broken.onnx"), "--name", Model, "--version", "3.0.0"); err != nil {
		return err
	}
	d.say("Two waves: one device of the three (33%%), then the rest.")
	args := append([]string{"--model", Model, "--version", "3.0.0", "--waves", "33,100", "--soak", d.soak()}, gates...)
	id, err := d.startRollout(ctx, append(args, "--on-failure", "rollback")...)
	if err != nil {
		return err
	}
	d.say("The first wave's device fails to load it and keeps serving 2.0.0; the\n" +
		"install_failures gate trips and the hub rolls the rollout back.")
	if err := d.watchRollout(ctx, id, "rolled-back"); err != nil {
		return err
	}
	var info hub.RolloutInfo
	if err := d.hubJSON(ctx, &info, "rollout", "status", id); err != nil {
		return err
	}
	// The rollback assigns 2.0.0 again, also to the device that refused
	// 3.0.0 and went on serving 2.0.0: every device is active on 2.0.0.
	if err := d.waitVersions(ctx, "2.0.0", nil); err != nil {
		return err
	}
	d.say("Every device serves 2.0.0 again, as the hub sees it (the rollback assigned\n" +
		"2.0.0 to the device that refused 3.0.0, which had kept serving it):")
	if _, err := d.hubCLI(ctx, true, "devices", "list"); err != nil {
		return err
	}
	// The device of the failed wave: the one whose install failed.
	failed := ""
	for _, id := range slices.Sorted(maps.Keys(info.State.Devices)) {
		if x := info.State.Devices[id]; failed == "" || x.Result == rollout.ResultFailed {
			failed = id
		}
	}
	if failed != "" {
		d.say("%s was in the first wave; its events say what happened:", failed)
		if _, err := d.hubCLI(ctx, true, "devices", "show", failed); err != nil {
			return err
		}
	}
	d.say("…and as the devices answer (one KServe v2 call each):")
	for _, dev := range d.devices {
		if err := d.kserve(ctx, dev, "2.0.0", false); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "  %s (127.0.0.1:%d): %s 2.0.0 answered\n", dev.id, dev.port, Model)
	}
	dev := d.devices[len(d.devices)-1]
	_, err = d.cli(ctx, true, d.cfg.FleetAgent, "infer", Model, "--input", d.rel(filepath.Join(d.cfg.Dir, "infer-request.json")),
		"--addr", fmt.Sprintf("127.0.0.1:%d", dev.port))
	return err
}
