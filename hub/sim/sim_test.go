package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/hub/sim"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// waitFor bounds a whole simulation in the tests; generous for -race on a
// shared 2-core machine.
const waitFor = 3 * time.Minute

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// config returns a simulation against a fresh Mosquitto and MinIO.
func config(t *testing.T, agents int, size int64, download string) sim.Config {
	t.Helper()
	broker := testenv.Mosquitto(t)
	s3 := testenv.MinIO(t)
	return sim.Config{
		Agents: agents, ArtifactBytes: size, Download: download,
		MQTT: bus.Config{Brokers: []string{broker.URL}},
		S3: fetch.ClientOptions{Endpoint: s3.Endpoint, Region: s3.Region, AccessKey: s3.AccessKey,
			SecretKey: s3.SecretKey, Insecure: true},
		Bucket:    s3.Bucket,
		Timeout:   waitFor,
		WorkDir:   t.TempDir(),
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		HubLogger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("test_component", "hub"),
	}
}

// jsonKeys are the fields of `fleethub simulate -o json`, which benchmark
// scripts parse.
var jsonKeys = []string{
	"agents", "artifact_bytes", "download", "connect_seconds", "total_seconds", "p50_seconds",
	"p99_seconds", "max_seconds", "s3_bytes_served", "goroutines_peak", "rss_peak_bytes",
}

func TestRunConverges(t *testing.T) {
	const agents, size = 20, 256 << 10
	tests := []struct {
		name     string
		download string
		// minServed and maxServed bound the S3 bytes in artifact sizes.
		minServed, maxServed int64
	}{
		{name: "shared store downloads once", download: sim.DownloadShared, minServed: 1, maxServed: 2},
		{name: "per-agent stores download each", download: sim.DownloadPerAgent, minServed: agents, maxServed: agents + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(t, agents, size, tt.download)
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			defer cancel()
			res, err := sim.Run(ctx, cfg)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Converged != agents || res.Agents != agents {
				t.Errorf("converged %d of %d agents, want all %d", res.Converged, res.Agents, agents)
			}
			if d := res.ArtifactBytes - size; d < -128 || d > 128 {
				t.Errorf("artifact is %d bytes, want about %d", res.ArtifactBytes, size)
			}
			if res.S3BytesServed < tt.minServed*res.ArtifactBytes || res.S3BytesServed > tt.maxServed*res.ArtifactBytes {
				t.Errorf("S3 served %d bytes, want %d to %d artifacts of %d", res.S3BytesServed, tt.minServed, tt.maxServed, res.ArtifactBytes)
			}
			if !(0 < res.P50Seconds && res.P50Seconds <= res.P99Seconds && res.P99Seconds <= res.MaxSeconds && res.MaxSeconds <= res.TotalSeconds) {
				t.Errorf("times not ordered 0 < p50 <= p99 <= max <= total: %+v", res)
			}
			if !(0 < res.AssignedP50Seconds && res.AssignedP50Seconds <= res.AssignedMaxSeconds && res.AssignedMaxSeconds <= res.MaxSeconds) {
				t.Errorf("assignment times not ordered 0 < p50 <= max <= active max: %+v", res)
			}
			if res.ConnectSeconds <= 0 || res.GoroutinesPeak < agents || res.RSSPeakBytes <= 0 {
				t.Errorf("connect, goroutine or RSS figures missing: %+v", res)
			}

			raw, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(raw, &fields); err != nil {
				t.Fatal(err)
			}
			var got []string
			for k := range fields {
				got = append(got, k)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(jsonKeys))
			if !slices.Equal(got, want) {
				t.Errorf("JSON fields %v, want %v", got, want)
			}
			if !bytes.Contains(raw, []byte(`"download":"`+tt.download+`"`)) {
				t.Errorf("JSON %s does not name download %q", raw, tt.download)
			}
		})
	}
}

// TestRunNotConverged: agents that cannot finish in time make Run fail
// with ErrNotConverged, naming how many and their last phases, and still
// return what was measured.
func TestRunNotConverged(t *testing.T) {
	const agents = 5
	cfg := config(t, agents, 64<<10, sim.DownloadShared)
	// No install takes under a nanosecond: the deadline passes first.
	cfg.Timeout = time.Nanosecond
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	res, err := sim.Run(ctx, cfg)
	if !errors.Is(err, sim.ErrNotConverged) {
		t.Fatalf("Run error = %v, want ErrNotConverged", err)
	}
	if res == nil || res.Agents != agents || res.Converged == agents {
		t.Fatalf("result %+v, want %d agents, not all converged", res, agents)
	}
	for _, want := range []string{"agents did not report", "active within", "sim-"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1048576", want: 1 << 20},
		{in: "10MiB", want: 10 << 20},
		{in: "256KiB", want: 256 << 10},
		{in: "10MB", want: 10_000_000},
		{in: "2G", want: 2 << 30},
		{in: " 5 B ", want: 5},
		{in: "", wantErr: true},
		{in: "ten MiB", wantErr: true},
		{in: "-1MiB", wantErr: true},
		{in: "1.5MiB", wantErr: true},
		{in: "99999999999GiB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := sim.ParseSize(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSize(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}
