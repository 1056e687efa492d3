package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/rollout"
	"github.com/modelfleet/modelfleet/hub/store"
	fleetreport "github.com/modelfleet/modelfleet/internal/report"
)

// fakeS3 stands in for the embedded S3 endpoint in the banner.
type fakeS3 struct{}

func (fakeS3) Endpoint() string  { return "http://127.0.0.1:9000" }
func (fakeS3) Region() string    { return "us-east-1" }
func (fakeS3) AccessKey() string { return "DEVKEY" }
func (fakeS3) SecretKey() string { return "DEVSECRET" }
func (fakeS3) Bucket() string    { return "models" }

// TestDevBanner checks the API line of `fleethub dev`'s banner and that it
// tells how to point the CLI at the API whenever the CLI would not reach
// it by default.
func TestDevBanner(t *testing.T) {
	tests := []struct {
		name, addr, env string
		// wantAPI is the API line; wantExport the export line, "" for none.
		wantAPI, wantExport string
	}{
		{"default address", "127.0.0.1:8400", "", "API:    http://127.0.0.1:8400   (fleethub CLI default; no token)", ""},
		{"other address", "127.0.0.1:39301", "", "API:    http://127.0.0.1:39301   (no token)", "export MODELFLEET_HUB=http://127.0.0.1:39301"},
		{"environment points here", "127.0.0.1:39301", "http://127.0.0.1:39301", "(MODELFLEET_HUB points here; no token)", ""},
		{"environment points elsewhere", "127.0.0.1:8400", "http://hub.example:8400", "(no token)", "export MODELFLEET_HUB=http://127.0.0.1:8400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			printJoin(&b, tt.addr, tt.env, "tcp://127.0.0.1:1883", fakeS3{}, "/keys/root.json", "/data/agent-dev-1")
			out := b.String()
			if !strings.HasPrefix(out, "fleethub dev is running.\n") {
				t.Errorf("banner does not start with its first line:\n%s", out)
			}
			if !strings.Contains(out, tt.wantAPI) {
				t.Errorf("banner lacks %q:\n%s", tt.wantAPI, out)
			}
			if got := strings.Contains(out, "export "); got != (tt.wantExport != "") || !strings.Contains(out, tt.wantExport) {
				t.Errorf("banner export line: want %q:\n%s", tt.wantExport, out)
			}
			if !strings.Contains(out, "--s3-endpoint http://127.0.0.1:9000 --s3-region us-east-1") {
				t.Errorf("banner lacks the join command:\n%s", out)
			}
		})
	}
}

// histogram returns a latency histogram with the counts per bucket.
func histogram(t *testing.T, bounds []float64, counts ...uint64) fleetreport.Histogram {
	t.Helper()
	h := fleetreport.Histogram{Bounds: bounds, Counts: counts}
	for i, c := range counts {
		h.Count += c
		if i < len(bounds) {
			h.Sum += float64(c) * bounds[i]
		}
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestPrintTelemetry checks the telemetry table of `fleethub devices show`.
func TestPrintTelemetry(t *testing.T) {
	bounds := []float64{0.1, 0.25, 0.5, 1, 10, 100}
	minute := time.Date(2026, 11, 23, 22, 26, 0, 0, time.UTC)
	rollups := []store.TelemetryRollup{
		{Model: "vibration-anomaly", Version: "1.0.0", Minute: minute, Requests: 13,
			Latency: histogram(t, bounds, 2, 10, 1, 0, 0, 0, 0), ComputeMillis: fleetreport.ComputeMillis{CPU: 1.234}},
		{Model: "vibration-anomaly", Version: "2.0.0", Minute: minute, Requests: 3, Errors: map[string]uint64{"run": 1, "busy": 2},
			Latency: histogram(t, bounds, 0, 0, 0, 0, 1, 0, 0), ComputeMillis: fleetreport.ComputeMillis{GPU: 42.25},
			ColdStarts: 1, ColdStartMillis: 812.4,
			Shadow: store.ShadowRollup{Compared: 200, Agreed: 199, MaxAbsDiff: 0.0012, Latency: histogram(t, bounds, 0, 200, 0, 0, 0, 0, 0)}},
		{Model: "other", Version: "1.0.0", Minute: minute, Requests: 2, Errors: map[string]uint64{"run": 2}},
	}
	var b bytes.Buffer
	printTelemetry(&b, rollups)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	want := [][]string{
		{"MODEL", "REQUESTS", "ERRORS", "P50", "MS", "P95", "MS", "COMPUTE", "CPU", "MS", "COMPUTE", "GPU", "MS", "COLD", "STARTS"},
		{"vibration-anomaly@1.0.0", "13", "0", "0.17", "0.34", "1.23", "0", "0"},
		{"vibration-anomaly@2.0.0", "3", "3", "(busy", "2,", "run", "1)", "5.50", "9.55", "0", "42.2", "1", "(812", "ms)"},
		{"other@1.0.0", "2", "2", "(run", "2)", "-", "-", "0", "0", "0"},
		{"shadow", "vibration-anomaly@2.0.0:", "200", "compared,", "199", "agreed", "(99.5%),", "max", "abs", "diff", "0.0012,", "latency", "p95", "0.24", "ms"},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i, l := range lines {
		if got := strings.Fields(l); strings.Join(got, " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d = %q, want fields %q", i, l, want[i])
		}
	}
	// The columns line up: every row's requests start where the header's do.
	col := strings.Index(lines[0], "REQUESTS")
	for _, l := range lines[1:4] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("row %q not aligned with the header at column %d", l, col)
		}
	}
}

func TestFormatMillis(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{math.NaN(), "-"}, {0, "0"}, {0.11, "0.11"}, {0.21999999999999997, "0.22"}, {9.999, "10.00"},
		{12.54, "12.5"}, {340.4, "340"}, {12345.6, "12346"},
	}
	for _, tt := range tests {
		if got := formatMillis(tt.in); got != tt.want {
			t.Errorf("formatMillis(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestPrintRolloutFinished checks that a finished rollout shows how it
// ended where a running one shows its wave's stage, also for a state
// stored by a hub that left the stage set.
func TestPrintRolloutFinished(t *testing.T) {
	tests := []struct {
		name   string
		status store.RolloutStatus
		stage  rollout.Stage
		want   string
	}{
		{"running", store.StatusRunning, rollout.StageSoaking, "stage soaking"},
		{"paused", store.StatusPaused, rollout.StageInstalling, "stage installing"},
		{"rolled back", store.StatusRolledBack, "", "ended: rolled-back"},
		{"rolled back, stale stage", store.StatusRolledBack, rollout.StageSoaking, "ended: rolled-back"},
		{"aborted", store.StatusAborted, rollout.StageSoaking, "ended: aborted"},
		{"succeeded", store.StatusSucceeded, "", "ended: succeeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := &hub.RolloutInfo{
				Rollout: store.Rollout{ID: 4, Model: "m", Version: "3.0.0", Status: tt.status, Waves: []int{33, 100}},
				State:   rollout.State{Stage: tt.stage},
			}
			var b bytes.Buffer
			printRollout(&b, info)
			if !strings.Contains(b.String(), "waves:    [33%] 100%  "+tt.want+"\n") {
				t.Errorf("want %q in:\n%s", tt.want, b.String())
			}
			if tt.status != store.StatusRunning && tt.status != store.StatusPaused && strings.Contains(b.String(), "stage ") {
				t.Errorf("finished rollout shows a stage:\n%s", b.String())
			}
		})
	}
}
