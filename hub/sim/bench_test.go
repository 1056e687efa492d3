package sim_test

import (
	"bufio"
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/hub/sim"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// Environment of BenchmarkConvergence; make bench (internal/benchreport)
// sets them per fleet size.
const (
	// envAgents is the number of simulated agents; default 100.
	envAgents = "MODELFLEET_SIM_AGENTS"
	// envArtifactSize is the release's size, e.g. "10MiB" (the default).
	envArtifactSize = "MODELFLEET_SIM_ARTIFACT_SIZE"
	// envDownload is sim.DownloadShared (the default) or
	// sim.DownloadPerAgent.
	envDownload = "MODELFLEET_SIM_DOWNLOAD"
)

// BenchmarkConvergence rolls a release out to $MODELFLEET_SIM_AGENTS
// simulated agents, each with its own MQTT session against a real
// Mosquitto, downloading the artifact from a real MinIO, with the hub core
// in-process. The sub-benchmark is named after the download mode. Every
// iteration is one rollout on the same broker and object store (a fresh
// topic prefix, model and devices each time); the metrics are the last
// iteration's (run it with -test.benchtime 1x):
//
//	agents, artifact-bytes   the fleet and the release's exact size
//	connect-s                connecting every agent (session, subscriptions, first report)
//	p50-s, p99-s, max-s      per agent, rollout start until its active report
//	total-s                  rollout start until the hub marked it succeeded
//	goroutines-peak          in this process (agents and hub)
//	rss-peak-bytes           this process's peak RSS (agents and hub)
//	broker-rss-peak-bytes    Mosquitto's peak RSS (VmHWM)
//	s3-bytes-served          bytes the agents read from MinIO
func BenchmarkConvergence(b *testing.B) {
	agents := 100
	if v := os.Getenv(envAgents); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number of agents", envAgents, v)
		}
		agents = n
	}
	sizeText := cmp.Or(os.Getenv(envArtifactSize), "10MiB")
	size, err := sim.ParseSize(sizeText)
	if err != nil {
		b.Fatalf("%s: %v", envArtifactSize, err)
	}
	download := cmp.Or(os.Getenv(envDownload), sim.DownloadShared)
	b.Run(download, func(b *testing.B) {
		benchmarkConvergence(b, agents, size, download)
	})
}

func benchmarkConvergence(b *testing.B, agents int, size int64, download string) {
	// Mosquitto holds a descriptor per agent; it inherits this process's
	// limit only when it was set explicitly (Go restores the original soft
	// limit for children otherwise).
	if err := raiseFileLimit(uint64(agents) + 256); err != nil {
		b.Fatal(err)
	}
	// The hub subscribes to the retained state of every agent and each
	// agent queues a few messages during the rollout: the broker must queue
	// at least 5 per agent for the hub (testenv's default is 100,000), let
	// 1000 be in flight per client (testenv's default) and accept any
	// number of connections.
	opts := []testenv.BrokerOption{testenv.WithConfig("max_connections -1")}
	if q := 5 * agents; q > 100_000 {
		opts = append(opts, testenv.WithConfig("max_queued_messages "+strconv.Itoa(q)))
	}
	broker := testenv.Mosquitto(b, opts...)
	s3 := testenv.MinIO(b)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// The hub logs every assignment at info level: warnings only.
	hubLog := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := sim.Config{
		Agents: agents, ArtifactBytes: size, Download: download,
		MQTT: bus.Config{Brokers: []string{broker.URL}},
		S3: fetch.ClientOptions{Endpoint: s3.Endpoint, Region: s3.Region, AccessKey: s3.AccessKey,
			SecretKey: s3.SecretKey, Insecure: true},
		Bucket:    s3.Bucket,
		Logger:    log,
		HubLogger: hubLog,
	}
	var res *sim.Result
	b.ResetTimer()
	for range b.N {
		cfg.WorkDir = b.TempDir()
		r, err := sim.Run(b.Context(), cfg)
		if err != nil {
			b.Fatalf("simulate %d agents: %v", agents, err)
		}
		res = r
	}
	b.StopTimer()
	brokerRSS, err := peakRSS(broker.PID())
	if err != nil {
		b.Fatalf("mosquitto's peak memory: %v", err)
	}
	for unit, v := range map[string]float64{
		"agents": float64(res.Agents), "artifact-bytes": float64(res.ArtifactBytes),
		"connect-s": res.ConnectSeconds, "p50-s": res.P50Seconds, "p99-s": res.P99Seconds, "max-s": res.MaxSeconds,
		"total-s": res.TotalSeconds, "goroutines-peak": float64(res.GoroutinesPeak),
		"rss-peak-bytes": float64(res.RSSPeakBytes), "broker-rss-peak-bytes": float64(brokerRSS),
		"s3-bytes-served": float64(res.S3BytesServed),
	} {
		b.ReportMetric(v, unit)
	}
}

// raiseFileLimit sets the soft RLIMIT_NOFILE to the hard limit and fails,
// saying what to do, when that is below need.
func raiseFileLimit(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("file descriptor limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise the file descriptor limit to %d: %w", lim.Max, err)
	}
	if lim.Cur < need {
		return fmt.Errorf("the broker needs about %d file descriptors, but the hard limit is %d: raise it (ulimit -Hn) or simulate fewer agents",
			need, lim.Cur)
	}
	return nil
}

// peakRSS returns a process's peak resident memory (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	if pid == 0 {
		return 0, fmt.Errorf("the process is not running")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", v, err)
			}
			return kib * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
}

func TestPeakRSS(t *testing.T) {
	got, err := peakRSS(os.Getpid())
	if err != nil {
		t.Fatalf("peakRSS(own pid): %v", err)
	}
	if got <= 0 {
		t.Errorf("peakRSS(own pid) = %d, want the test process's VmHWM", got)
	}
	if _, err := peakRSS(0); err == nil {
		t.Error("peakRSS(0) succeeded, want an error for a process that is not running")
	}
}
