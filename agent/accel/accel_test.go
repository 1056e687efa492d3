package accel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestDetectThisMachine runs the real detection on the test machine, which
// has no NVIDIA driver (where it has one, the GPU assertions are skipped).
func TestDetectThisMachine(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	inv := Detect(context.Background(), Options{Logger: log})

	if inv.CPU.LogicalCores <= 0 || inv.CPU.UsableCores <= 0 || inv.CPU.Arch == "" {
		t.Errorf("CPU = %+v", inv.CPU)
	}
	if inv.Memory.TotalBytes == 0 || inv.Memory.AvailableBytes == 0 || inv.Memory.AvailableBytes > inv.Memory.TotalBytes {
		t.Errorf("Memory = %+v", inv.Memory)
	}
	if inv.Hostname == "" || inv.OS.Kernel == "" || inv.OS.Machine == "" {
		t.Errorf("Hostname = %q, OS = %+v", inv.Hostname, inv.OS)
	}
	for _, n := range inv.Notes {
		if n.Source != "gpu" {
			t.Errorf("unexpected note on this machine: %v", n)
		}
	}
	t.Logf("inventory: %+v", inv)
	if inv.NVML.Available {
		t.Skipf("this machine has an NVIDIA driver (%s): skipping the no-GPU checks", inv.NVML.DriverVersion)
	}
	if len(inv.GPUs) != 0 {
		t.Errorf("GPUs = %+v, want none", inv.GPUs)
	}
	if got := inv.Variants(); !slices.Equal(got, []string{"cpu"}) {
		t.Errorf("Variants = %v, want [cpu]", got)
	}
	if !hasNote(inv.Notes, NoteInfo, "NVML not available: no NVIDIA driver") {
		t.Errorf("notes = %v, want the NVML info note", inv.Notes)
	}
	if !strings.Contains(logs.String(), "level=INFO") || !strings.Contains(logs.String(), "NVML not available") {
		t.Errorf("the note was not logged at info level: %s", logs.String())
	}
}

// TestDetectRepeatedAndConcurrent calls Detect over and over, also from
// several goroutines (run with -race): NVML Init/Shutdown must pair up.
func TestDetectRepeatedAndConcurrent(t *testing.T) {
	first := Detect(context.Background(), Options{})
	for range 3 {
		inv := Detect(context.Background(), Options{})
		if inv.CPU.LogicalCores != first.CPU.LogicalCores || len(inv.GPUs) != len(first.GPUs) || len(inv.Notes) != len(first.Notes) {
			t.Fatalf("Detect changed its answer:\n%+v\n%+v", first, inv)
		}
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if inv := Detect(context.Background(), Options{}); inv.CPU.LogicalCores == 0 {
				t.Error("no cores")
			}
		})
	}
	wg.Wait()
}

// fakeHost is an arm64 edge box with one GPU, built from testdata.
func fakeHost(t *testing.T) sources {
	t.Helper()
	return sources{
		fsys: fstest.MapFS{
			"proc/cpuinfo":   {Data: mustReadTestdata(t, "cpuinfo-arm64-rpi4.txt")},
			"proc/meminfo":   {Data: mustReadTestdata(t, "meminfo-arm64-rpi4.txt")},
			"etc/os-release": {Data: mustReadTestdata(t, "os-release-debian12.txt")},
		},
		nvml:     newFakeNVML(a2GPU()),
		hostname: func() (string, error) { return "line1-edge-07", nil },
		uname:    func() (string, string, error) { return "6.1.0-rpi7-rpi-v8", "aarch64", nil },
		numCPU:   func() int { return 2 },
		goarch:   "arm64",
	}
}

// TestDetectInventoryJSON checks the whole inventory of a fake host against
// a golden file: field names are part of the telemetry format.
func TestDetectInventoryJSON(t *testing.T) {
	inv := fakeHost(t).detect(context.Background(), Options{})
	got, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "inventory-arm64-gpu.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("inventory JSON differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
	var back Inventory
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Variants(), []string{"cuda", "cpu"}) {
		t.Errorf("Variants after a JSON round trip = %v", back.Variants())
	}
}

// TestDetectUnreadableHost checks that missing or broken files and failing
// system calls become warnings, with fallbacks, never a failure.
func TestDetectUnreadableHost(t *testing.T) {
	src := fakeHost(t)
	src.fsys = fstest.MapFS{
		"proc/cpuinfo": {Data: []byte("nothing useful\n")},
		// no meminfo, no os-release
		"usr/lib/os-release": {Data: []byte("NAME=Minimal\nVERSION=1\n")},
	}
	src.hostname = func() (string, error) { return "", errors.New("no hostname") }
	src.uname = func() (string, string, error) { return "", "", errors.New("no uname") }
	lib := newFakeNVML()
	lib.initRet = nvml.ERROR_LIBRARY_NOT_FOUND
	src.nvml = lib
	inv := src.detect(context.Background(), Options{})

	if inv.CPU.LogicalCores != 2 || inv.CPU.UsableCores != 2 {
		t.Errorf("CPU = %+v, want the scheduler's 2 cores", inv.CPU)
	}
	if inv.OS.Name != "Minimal 1" {
		t.Errorf("OS.Name = %q, want NAME VERSION from /usr/lib/os-release", inv.OS.Name)
	}
	if inv.Memory != (Memory{}) {
		t.Errorf("Memory = %+v, want unknown", inv.Memory)
	}
	var got []string
	for _, n := range inv.Notes {
		got = append(got, n.String())
	}
	want := []string{
		"warn host: hostname unavailable: no hostname",
		"warn os: uname: no uname",
		"warn cpu: /proc/cpuinfo: no processor entries; counting cores from the scheduler instead",
		"warn memory: /proc/meminfo: file does not exist; memory size unknown",
		"info gpu: NVML not available: no NVIDIA driver (libnvidia-ml.so.1 not found); running without GPU",
	}
	if !slices.Equal(got, want) {
		t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDetectCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := fakeHost(t)
	inv := src.detect(ctx, Options{})
	if len(inv.GPUs) != 0 || !hasNote(inv.Notes, NoteWarn, "GPU detection skipped") {
		t.Errorf("GPUs = %v, notes = %v", inv.GPUs, inv.Notes)
	}
	if inv.CPU.LogicalCores != 4 {
		t.Errorf("CPU = %+v, want it detected anyway", inv.CPU)
	}
}

func TestDiskSpace(t *testing.T) {
	dir := t.TempDir()
	d, err := DiskSpace(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d.Path != dir || d.MeasuredPath != dir || d.TotalBytes == 0 || d.FreeBytes > d.TotalBytes {
		t.Errorf("DiskSpace(%s) = %+v", dir, d)
	}
	missing := filepath.Join(dir, "not", "yet")
	d2, err := DiskSpace(missing)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Path != missing || d2.MeasuredPath != dir || d2.TotalBytes != d.TotalBytes {
		t.Errorf("DiskSpace(%s) = %+v, want %s measured", missing, d2, dir)
	}
}
