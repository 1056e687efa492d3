package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/agent/state"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// BenchmarkFootprint starts a real fleetagent process against a real
// Mosquitto and MinIO and reads its memory from /proc: idle with no model
// (ONNX Runtime's library is already loaded at start-up), then with the
// example model active. Each iteration is one fresh agent. It reports KiB:
// VmRSS and VmHWM in both states, and how much of the idle VmRSS is
// libonnxruntime's mapped pages (from /proc/PID/smaps).
//
// MODELFLEET_AGENT_BIN names the binary to measure (make bench passes the
// one `make build` made); without it the benchmark builds one with the same
// flags.
func BenchmarkFootprint(b *testing.B) {
	bin := os.Getenv("MODELFLEET_AGENT_BIN")
	if bin == "" {
		bin = filepath.Join(b.TempDir(), "fleetagent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build fleetagent: %v\n%s", err, out)
		}
	}
	ortLib := runtimetest.LibraryPath(b)
	broker := testenv.Mosquitto(b)
	s3 := testenv.MinIO(b)
	dir := b.TempDir()
	trust := fleettest.TrustFromKeyDir(b, filepath.Join(dir, "keys"))
	const name = "vibration-anomaly"
	v1 := trust.Publish(b, s3.Client, s3.Bucket, name, "1.0.0", models.FileV1)
	hub, err := bus.Connect(context.Background(), bus.Config{Brokers: []string{broker.URL}, ClientID: "footprint-hub"}, bus.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close(nil)
	topics := bus.NewTopics("")

	var idle, idleHWM, idleORT, loaded, loadedHWM int64
	iter := 0
	for b.Loop() {
		iter++
		device := fmt.Sprintf("edge-footprint-%d", iter)
		run := filepath.Join(dir, device)
		dataDir := filepath.Join(run, "data")
		cfgPath := filepath.Join(run, "agent.yaml")
		if err := os.MkdirAll(run, 0o700); err != nil {
			b.Fatal(err)
		}
		cfg := agentConfig(device, broker.URL, s3.Endpoint, s3, dataDir, filepath.Join(dir, "keys", "root.json"), ortLib)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		logPath := filepath.Join(run, "agent.log")
		logf, err := os.Create(logPath)
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--config", cfgPath)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		fail := func(format string, args ...any) {
			stop()
			log, _ := os.ReadFile(logPath)
			b.Fatalf(format+"\nagent log:\n%s", append(args, tail(log, 3000))...)
		}
		pid := cmd.Process.Pid

		waitFor(b, 60*time.Second, func() bool {
			log, _ := os.ReadFile(logPath)
			return strings.Contains(string(log), "connected to broker")
		}, func() { fail("agent never connected to the broker") })
		// Idle: let start-up allocations settle and the first telemetry
		// and state reports go out.
		time.Sleep(3 * time.Second)
		st, err := procStatus(pid)
		if err != nil {
			fail("%v", err)
		}
		ortKiB, err := mappedRSS(pid, "libonnxruntime")
		if err != nil {
			fail("%v", err)
		}
		idle, idleHWM, idleORT = idle+st["VmRSS"], idleHWM+st["VmHWM"], idleORT+ortKiB

		if err := hub.Publish(context.Background(), topics.Assignment(device), 1, true, trust.Assignment(b, device, 1, v1)); err != nil {
			fail("publish assignment: %v", err)
		}
		stateFile, err := state.NewFile(filepath.Join(dataDir, "state.json"))
		if err != nil {
			fail("%v", err)
		}
		waitFor(b, 90*time.Second, func() bool {
			st, err := stateFile.Load()
			if err != nil {
				return false
			}
			m := st.Models[name]
			return m != nil && m.Active != nil && m.Active.Version == "1.0.0" && m.Pending == nil
		}, func() { fail("the example model never became active") })
		time.Sleep(3 * time.Second)
		if st, err = procStatus(pid); err != nil {
			fail("%v", err)
		}
		loaded, loadedHWM = loaded+st["VmRSS"], loadedHWM+st["VmHWM"]
		stop()
	}
	n := float64(iter)
	b.ReportMetric(float64(idle)/n, "idle-rss-KiB")
	b.ReportMetric(float64(idleHWM)/n, "idle-hwm-KiB")
	b.ReportMetric(float64(idleORT)/n, "idle-ort-rss-KiB")
	b.ReportMetric(float64(loaded)/n, "model-rss-KiB")
	b.ReportMetric(float64(loadedHWM)/n, "model-hwm-KiB")
}

// waitFor polls cond every 50 ms until it holds or timeout passes, then
// calls onTimeout.
func waitFor(tb testing.TB, timeout time.Duration, cond func() bool, onTimeout func()) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			onTimeout()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procStatus returns the "Vm*" fields of /proc/PID/status, in KiB.
func procStatus(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("agent memory: %w", err)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasPrefix(key, "Vm") {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/%d/status: %s: %w", pid, key, err)
		}
		out[key] = kib
	}
	if _, ok := out["VmRSS"]; !ok {
		return nil, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return out, sc.Err()
}

// mappedRSS sums the Rss of the mappings in /proc/PID/smaps whose path
// contains substr, in KiB.
func mappedRSS(pid int, substr string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, fmt.Errorf("agent mappings: %w", err)
	}
	defer f.Close()
	var total int64
	match := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header line
			match = len(fields) >= 6 && strings.Contains(fields[5], substr)
			continue
		}
		if match && fields[0] == "Rss:" && len(fields) >= 2 {
			kib, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/smaps: %w", pid, err)
			}
			total += kib
		}
	}
	return total, sc.Err()
}
