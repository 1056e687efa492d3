package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
	"github.com/modelfleet/modelfleet/internal/bus"
)

// execDoctor runs `fleetagent doctor args…` through the root command, as
// main does, and returns its standard output and error (non-nil means a
// non-zero exit status).
func execDoctor(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"doctor"}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// decodeReport parses `doctor -o json` output.
func decodeReport(t *testing.T, out string) doctorReport {
	t.Helper()
	var rep doctorReport
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("doctor -o json printed invalid JSON (%v):\n%s", err, out)
	}
	return rep
}

func findCheck(t *testing.T, rep doctorReport, name string) doctorCheck {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %q check in %+v", name, rep.Checks)
	return doctorCheck{}
}

// isolateDoctor makes doctor see no configuration file and starts it with
// ONNX Runtime unloaded, whatever earlier tests in this binary did (none of
// them runs in parallel, and they close their sessions), so that each test
// gets the library it asks for.
func isolateDoctor(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/etc/modelfleet/agent.yaml"); err == nil {
		t.Skip("/etc/modelfleet/agent.yaml exists: doctor would check it")
	}
	t.Setenv("MODELFLEET_CONFIG", "")
	if err := runtime.Shutdown(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = runtime.Shutdown() })
}

func TestDoctorJSON(t *testing.T) {
	lib := runtimetest.LibraryPath(t)
	isolateDoctor(t)

	out, err := execDoctor(t, "-o", "json", "--ort-lib", lib)
	if err != nil {
		t.Fatalf("doctor failed: %v\n%s", err, out)
	}
	rep := decodeReport(t, out)
	if !rep.OK {
		t.Errorf("ok = false:\n%s", out)
	}
	ort := findCheck(t, rep, "onnxruntime")
	if ort.Status != checkOK || !strings.Contains(ort.Detail, "ONNX Runtime 1.") {
		t.Errorf("onnxruntime check = %+v", ort)
	}
	if _, loaded := runtime.Loaded(); loaded {
		t.Error("doctor left ONNX Runtime loaded")
	}
	if cfg := findCheck(t, rep, "config"); cfg.Status != checkSkip {
		t.Errorf("config check = %+v, want skip without a file", cfg)
	}
	inv := rep.Inventory
	if inv.CPU.LogicalCores <= 0 || inv.Memory.TotalBytes == 0 {
		t.Errorf("inventory = %+v", inv)
	}
	if gpu := findCheck(t, rep, "gpu"); gpu.Status == checkFail {
		t.Errorf("gpu check = %+v: no GPU is not a failure", gpu)
	}
	if !inv.NVML.Available && !slices.Equal(rep.Variants, []string{"cpu"}) {
		t.Errorf("variants = %v, want [cpu] without NVIDIA driver", rep.Variants)
	}
	for _, c := range rep.Checks {
		if c.Status == checkFail {
			t.Errorf("check failed: %+v", c)
		}
	}
}

// TestDoctorBogusORTLib checks the failure an operator sees with a wrong
// --ort-lib: non-zero exit, the path, and what to do, in text and JSON.
func TestDoctorBogusORTLib(t *testing.T) {
	isolateDoctor(t)
	bogus := filepath.Join(t.TempDir(), "missing", "libonnxruntime.so.1")

	out, err := execDoctor(t, "--ort-lib", bogus)
	if err == nil || !strings.Contains(err.Error(), "onnxruntime") {
		t.Fatalf("err = %v, want a failure naming onnxruntime\n%s", err, out)
	}
	for _, want := range []string{"✗ onnxruntime", bogus, "make deps", "--ort-lib", "MODELFLEET_ORT_LIB", "FAIL: onnxruntime", "✓ cpu"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, err = execDoctor(t, "-o", "json", "--ort-lib", bogus)
	if err == nil {
		t.Fatal("doctor -o json succeeded with a missing library")
	}
	rep := decodeReport(t, out)
	ort := findCheck(t, rep, "onnxruntime")
	if rep.OK || ort.Status != checkFail || !strings.Contains(ort.Detail, bogus) || !strings.Contains(ort.Fix, "make deps") {
		t.Errorf("ok = %v, onnxruntime check = %+v", rep.OK, ort)
	}
}

// listen returns the address of a TCP listener open for the test.
func listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// writeAgentConfig writes a configuration whose ONNX Runtime comes from
// the file (ort_lib), not from a flag.
func writeAgentConfig(t *testing.T, brokers []string, s3, dataDir string) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root.json")
	if err := os.WriteFile(root, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, b := range brokers {
		brokers[i] = fmt.Sprintf("%q", b)
	}
	yaml := fmt.Sprintf("mqtt:\n  brokers: [%s]\ns3:\n  endpoint: %s\n  insecure: true\ndata_dir: %s\ntrust_root: %s\nort_lib: %s\n",
		strings.Join(brokers, ", "), s3, dataDir, root, runtimetest.LibraryPath(t))
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDoctorConfig(t *testing.T) {
	runtimetest.LibraryPath(t)
	broker, s3 := listen(t), listen(t)
	dataDir := filepath.Join(t.TempDir(), "data")

	t.Run("healthy", func(t *testing.T) {
		isolateDoctor(t)
		cfg := writeAgentConfig(t, []string{"tcp://" + broker}, s3, dataDir)
		out, err := execDoctor(t, "-o", "json", "--config", cfg)
		if err != nil {
			t.Fatalf("doctor failed: %v\n%s", err, out)
		}
		rep := decodeReport(t, out)
		for _, name := range []string{"onnxruntime", "config", "data_dir", "mqtt", "s3"} {
			if c := findCheck(t, rep, name); c.Status != checkOK {
				t.Errorf("%s check = %+v, want ok", name, c)
			}
		}
		if d := findCheck(t, rep, "data_dir"); !strings.Contains(d.Detail, "does not exist yet") {
			t.Errorf("data_dir check = %+v, want it to say the agent will create it", d)
		}
		if _, err := os.Stat(dataDir); err == nil {
			t.Error("doctor created the data directory")
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		isolateDoctor(t)
		down := closedPort(t)
		cfg := writeAgentConfig(t, []string{"tcp://" + broker, "tcp://" + down}, "http://"+down, dataDir)
		out, err := execDoctor(t, "--config", cfg)
		if err == nil || !strings.Contains(err.Error(), "s3") || strings.Contains(err.Error(), "mqtt") {
			t.Fatalf("err = %v, want only s3 to fail (one broker is up)\n%s", err, out)
		}
		for _, want := range []string{"✓ mqtt", "! mqtt", "✗ s3", "connection refused", "check s3.endpoint"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("invalid", func(t *testing.T) {
		isolateDoctor(t)
		cfg := writeAgentConfig(t, []string{"tcp://" + broker}, s3, dataDir)
		out, err := execDoctor(t, "-o", "json", "--config", cfg, "--log-level", "loud", "--data-dir", "relative/dir")
		if err == nil {
			t.Fatalf("doctor passed an invalid configuration:\n%s", out)
		}
		rep := decodeReport(t, out)
		c := findCheck(t, rep, "config")
		if c.Status != checkFail || !strings.Contains(c.Detail, "log_level") || !strings.Contains(c.Detail, "data_dir") || c.Fix == "" {
			t.Errorf("config check = %+v", c)
		}
		for _, ch := range rep.Checks {
			if ch.Name == "data_dir" {
				t.Errorf("relative data_dir was checked: %+v", ch)
			}
		}
	})

	t.Run("unreadable file", func(t *testing.T) {
		isolateDoctor(t)
		out, err := execDoctor(t, "--config", filepath.Join(t.TempDir(), "nope.yaml"))
		if err == nil || !strings.Contains(out, "✗ config") {
			t.Fatalf("err = %v\n%s", err, out)
		}
	})
}

func TestDoctorDataDirFull(t *testing.T) {
	dir := t.TempDir()
	c := checkDataDir(dir, 1<<62)
	if c.Status != checkWarn || !strings.Contains(c.Fix, "max_artifact_bytes") {
		t.Errorf("check = %+v, want a warning about max_artifact_bytes", c)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if os.Geteuid() == 0 {
		return // root writes anywhere
	}
	if c := checkDataDir(dir, 0); c.Status != checkFail || !strings.Contains(c.Detail, "not writable") {
		t.Errorf("read-only dir: check = %+v", c)
	}
}

func TestDoctorHostPorts(t *testing.T) {
	tests := []struct {
		name, in string
		insecure bool
		s3       bool
		want     string
		wantErr  bool
	}{
		{name: "mqtt default port", in: "tcp://broker", want: "broker:1883"},
		{name: "mqtt tls default port", in: "ssl://broker", want: "broker:8883"},
		{name: "mqtt websocket", in: "wss://broker/mqtt", want: "broker:443"},
		{name: "mqtt explicit port", in: "tcp://10.0.0.5:2883", want: "10.0.0.5:2883"},
		{name: "mqtt IPv6", in: "tcp://[fd00::1]:1883", want: "[fd00::1]:1883"},
		{name: "mqtt no host", in: "broker:1883", wantErr: true},
		{name: "s3 host only", in: "s3.amazonaws.com", s3: true, want: "s3.amazonaws.com:443"},
		{name: "s3 host only insecure", in: "minio.local", s3: true, insecure: true, want: "minio.local:80"},
		{name: "s3 host and port", in: "minio.local:9000", s3: true, want: "minio.local:9000"},
		{name: "s3 https URL", in: "https://storage.example/", s3: true, insecure: true, want: "storage.example:443"},
		{name: "s3 http URL with port", in: "http://127.0.0.1:9000", s3: true, want: "127.0.0.1:9000"},
		{name: "s3 garbage", in: "not an/endpoint", s3: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			var err error
			if tt.s3 {
				got, err = s3HostPort(tt.in, tt.insecure)
			} else {
				got, err = bus.HostPort(tt.in)
			}
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestDoctorFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3973423104: "3.7 GiB", 1 << 60: "1.0 EiB", ^uint64(0): "16.0 EiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
