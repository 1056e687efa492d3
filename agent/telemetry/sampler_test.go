package telemetry

import (
	"context"
	"errors"
	"math"
	"os"
	"reflect"
	goruntime "runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

func TestSamplerRealProc(t *testing.T) {
	if goruntime.GOOS != "linux" {
		t.Skip("reads Linux /proc")
	}
	s := NewSampler(SamplerOptions{})
	first, err := s.Sample(t.Context())
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if first.CPUPercent <= 0 || first.CPUPercent > 100 {
		t.Errorf("CPU since boot = %v%%, want (0, 100]", first.CPUPercent)
	}
	if first.MemoryTotalBytes == 0 || first.MemoryAvailableBytes == 0 || first.MemoryAvailableBytes > first.MemoryTotalBytes {
		t.Errorf("memory total %d available %d", first.MemoryTotalBytes, first.MemoryAvailableBytes)
	}
	if first.ProcessRSSBytes == 0 || first.ProcessRSSBytes > first.MemoryTotalBytes {
		t.Errorf("RSS %d bytes", first.ProcessRSSBytes)
	}
	if first.Goroutines <= 0 || first.UptimeSeconds < 0 {
		t.Errorf("goroutines %d, uptime %v", first.Goroutines, first.UptimeSeconds)
	}

	// Burn some CPU so the second reading has ticks to compare.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0.0; time.Now().Before(deadline); x += math.Sqrt(x + 1) {
	}
	second, err := s.Sample(t.Context())
	if err != nil {
		t.Fatalf("second Sample: %v", err)
	}
	if second.CPUPercent < 0 || second.CPUPercent > 100 {
		t.Errorf("CPU between samples = %v%%, want [0, 100]", second.CPUPercent)
	}
	if second.UptimeSeconds < first.UptimeSeconds {
		t.Errorf("uptime went from %v to %v", first.UptimeSeconds, second.UptimeSeconds)
	}
}

func fixtureFS(t *testing.T, stat string) fstest.MapFS {
	return fstest.MapFS{
		"stat":       {Data: []byte(stat)},
		"meminfo":    {Data: []byte(mustRead(t, "proc-debian12/meminfo"))},
		"self/statm": {Data: []byte("1000 250 100 5 0 123 0\n")},
	}
}

func TestSamplerFixtures(t *testing.T) {
	fsys := fixtureFS(t, "cpu  300 0 100 500 100 0 0 0 0 0\ncpu0 300 0 100 500 100 0 0 0 0 0\n")
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	gpuErr := errors.New("nvml: GPU is lost")
	var gpuCalls int
	s := NewSampler(SamplerOptions{
		ProcFS:   fsys,
		PageSize: 4096,
		Now:      func() time.Time { return now },
		GPUs: func(ctx context.Context) ([]report.GPUStats, error) {
			gpuCalls++
			if gpuCalls == 2 {
				return nil, gpuErr
			}
			return []report.GPUStats{{Index: 0, UtilizationPercent: math.NaN(), MemoryUsedBytes: 1, MemoryTotalBytes: 2}}, nil
		},
	})

	now = now.Add(90 * time.Second)
	got, err := s.Sample(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := report.DeviceStats{
		CPUPercent:           40, // 400 busy of 1000 ticks since boot
		MemoryTotalBytes:     24684096 << 10,
		MemoryAvailableBytes: 22449972 << 10,
		ProcessRSSBytes:      250 * 4096,
		Goroutines:           got.Goroutines,
		UptimeSeconds:        90,
		GPUs:                 []report.GPUStats{{Index: 0, UtilizationPercent: 0, MemoryUsedBytes: 1, MemoryTotalBytes: 2}},
	}
	if got.Goroutines <= 0 {
		t.Errorf("goroutines = %d", got.Goroutines)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Sample =\n%+v\nwant\n%+v", got, want)
	}

	fsys["stat"] = &fstest.MapFile{Data: []byte("cpu  350 0 100 620 130 0 0 0 0 0\n")}
	got, err = s.Sample(t.Context())
	if !errors.Is(err, gpuErr) {
		t.Errorf("error = %v, want the GPU error", err)
	}
	if got.CPUPercent != 25 || got.MemoryTotalBytes == 0 { // 50 busy of 200 ticks
		t.Errorf("second Sample = %+v, want 25%% CPU and memory despite the GPU error", got)
	}
}

func TestSamplerMissingProc(t *testing.T) {
	s := NewSampler(SamplerOptions{ProcFS: fstest.MapFS{}})
	got, err := s.Sample(t.Context())
	if err == nil {
		t.Fatal("Sample of an empty /proc succeeded")
	}
	for _, name := range []string{"/proc/stat", "/proc/meminfo", "/proc/self/statm"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	if got.Goroutines <= 0 {
		t.Errorf("stats that need no /proc are missing: %+v", got)
	}
}

func TestSamplerDefaultPageSize(t *testing.T) {
	s := NewSampler(SamplerOptions{ProcFS: fixtureFS(t, "cpu 1 1 1 1\n")})
	got, err := s.Sample(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(250 * os.Getpagesize()); got.ProcessRSSBytes != want {
		t.Errorf("RSS = %d, want %d", got.ProcessRSSBytes, want)
	}
}
