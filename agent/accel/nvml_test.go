package accel

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// fakeNVML is an nvmlLib with canned answers that counts Init/Shutdown.
type fakeNVML struct {
	initRet, shutdownRet nvml.Return
	driver               string
	driverRet            nvml.Return
	cuda                 int
	cudaRet              nvml.Return
	countRet             nvml.Return
	devices              []nvml.Device // nil entries fail to open
	inits, shutdowns     int
}

// newFakeNVML returns a working driver 550.54.15 / CUDA 12.4 with devs.
func newFakeNVML(devs ...nvml.Device) *fakeNVML {
	return &fakeNVML{driver: "550.54.15", cuda: 12040, devices: devs}
}

func (f *fakeNVML) Init() nvml.Return {
	if f.initRet == nvml.SUCCESS {
		f.inits++
	}
	return f.initRet
}

func (f *fakeNVML) Shutdown() nvml.Return {
	if f.inits == f.shutdowns {
		return nvml.ERROR_UNINITIALIZED
	}
	f.shutdowns++
	return f.shutdownRet
}

func (f *fakeNVML) SystemGetDriverVersion() (string, nvml.Return) { return f.driver, f.driverRet }
func (f *fakeNVML) SystemGetCudaDriverVersion() (int, nvml.Return) {
	return f.cuda, f.cudaRet
}
func (f *fakeNVML) DeviceGetCount() (int, nvml.Return) { return len(f.devices), f.countRet }

func (f *fakeNVML) DeviceGetHandleByIndex(i int) (nvml.Device, nvml.Return) {
	if i < 0 || i >= len(f.devices) {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	if f.devices[i] == nil {
		return nil, nvml.ERROR_GPU_IS_LOST
	}
	return f.devices[i], nvml.SUCCESS
}

// fakeGPU implements the nvml.Device methods Detect calls; any other
// method panics on the nil embedded interface, revealing unexpected calls.
type fakeGPU struct {
	nvml.Device
	name, uuid       string
	mem              nvml.Memory
	memRet           nvml.Return
	util             nvml.Utilization
	utilRet          nvml.Return
	nameRet, uuidRet nvml.Return
}

func (g *fakeGPU) GetName() (string, nvml.Return)                       { return g.name, g.nameRet }
func (g *fakeGPU) GetUUID() (string, nvml.Return)                       { return g.uuid, g.uuidRet }
func (g *fakeGPU) GetMemoryInfo() (nvml.Memory, nvml.Return)            { return g.mem, g.memRet }
func (g *fakeGPU) GetUtilizationRates() (nvml.Utilization, nvml.Return) { return g.util, g.utilRet }

func a2GPU() *fakeGPU {
	return &fakeGPU{
		name: "NVIDIA A2", uuid: "GPU-5ac6b2d8-1f4e-9c3a-77d0-2be8a1f04c19",
		mem:  nvml.Memory{Total: 16 << 30, Used: 1 << 30, Free: 15 << 30},
		util: nvml.Utilization{Gpu: 37, Memory: 5},
	}
}

func runDetectGPUs(t *testing.T, ctx context.Context, lib nvmlLib) (NVML, []GPU, []Note) {
	t.Helper()
	rec := &recorder{log: slog.New(slog.DiscardHandler)}
	st, gpus := detectGPUs(ctx, lib, rec)
	if gpus == nil {
		t.Error("GPUs is nil, want an empty slice (JSON [])")
	}
	return st, gpus, rec.notes
}

// hasNote reports whether notes has one at level whose message contains s.
func hasNote(notes []Note, level, s string) bool {
	return slices.ContainsFunc(notes, func(n Note) bool {
		return n.Level == level && n.Source == "gpu" && strings.Contains(n.Message, s)
	})
}

func TestDetectGPUsTwoGPUs(t *testing.T) {
	second := a2GPU()
	second.uuid = "GPU-0b91c7e2-5d3a-4f68-8e21-c4d9a7f3b605"
	second.utilRet = nvml.ERROR_NOT_SUPPORTED
	lib := newFakeNVML(a2GPU(), second)

	st, gpus, notes := runDetectGPUs(t, context.Background(), lib)
	if want := (NVML{Available: true, DriverVersion: "550.54.15", CUDADriverVersion: "12.4"}); st != want {
		t.Errorf("NVML = %+v, want %+v", st, want)
	}
	if len(gpus) != 2 {
		t.Fatalf("got %d GPUs, want 2", len(gpus))
	}
	g := gpus[0]
	if g.Index != 0 || g.Name != "NVIDIA A2" || g.UUID != "GPU-5ac6b2d8-1f4e-9c3a-77d0-2be8a1f04c19" ||
		g.MemoryTotalBytes != 16<<30 || g.MemoryUsedBytes != 1<<30 || g.MemoryFreeBytes != 15<<30 ||
		g.UtilizationPercent == nil || *g.UtilizationPercent != 37 {
		t.Errorf("GPU 0 = %+v", g)
	}
	if gpus[1].Index != 1 || gpus[1].UtilizationPercent != nil {
		t.Errorf("GPU 1 = %+v, want index 1 without utilisation", gpus[1])
	}
	if len(notes) != 0 {
		t.Errorf("notes = %v, want none (unsupported utilisation is normal)", notes)
	}
	if lib.inits != 1 || lib.shutdowns != 1 {
		t.Errorf("Init %d times, Shutdown %d times, want 1 and 1", lib.inits, lib.shutdowns)
	}
	inv := Inventory{GPUs: gpus}
	if got, want := inv.Variants(), []string{"cuda", "cpu"}; !slices.Equal(got, want) {
		t.Errorf("Variants = %v, want %v", got, want)
	}
}

// TestDetectGPUsInitFailures checks that a failed Init yields no GPU, the
// right note, and no Shutdown (NVML is not initialised then).
func TestDetectGPUsInitFailures(t *testing.T) {
	tests := []struct {
		name      string
		ret       nvml.Return
		wantLevel string
		wantNote  string
	}{
		{"library missing", nvml.ERROR_LIBRARY_NOT_FOUND, NoteInfo, "NVML not available: no NVIDIA driver"},
		{"kernel module not loaded", nvml.ERROR_DRIVER_NOT_LOADED, NoteWarn, "kernel module is not loaded"},
		{"driver upgraded without reboot", nvml.ERROR_LIB_RM_VERSION_MISMATCH, NoteWarn, "rebooted"},
		{"no permission", nvml.ERROR_NO_PERMISSION, NoteWarn, "/dev/nvidia"},
		{"other", nvml.ERROR_UNKNOWN, NoteWarn, "NVML failed to initialise (ERROR_UNKNOWN)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := newFakeNVML(a2GPU())
			lib.initRet = tt.ret
			st, gpus, notes := runDetectGPUs(t, context.Background(), lib)
			if st != (NVML{}) || len(gpus) != 0 {
				t.Errorf("NVML = %+v, GPUs = %v; want nothing", st, gpus)
			}
			if !hasNote(notes, tt.wantLevel, tt.wantNote) || len(notes) != 1 {
				t.Errorf("notes = %v, want one %s note containing %q", notes, tt.wantLevel, tt.wantNote)
			}
			if lib.shutdowns != 0 {
				t.Errorf("Shutdown called %d times after a failed Init", lib.shutdowns)
			}
		})
	}
}

func TestDetectGPUsPartialFailures(t *testing.T) {
	broken := a2GPU()
	broken.nameRet, broken.memRet, broken.utilRet = nvml.ERROR_UNKNOWN, nvml.ERROR_GPU_IS_LOST, nvml.ERROR_TIMEOUT
	lib := newFakeNVML(nil, broken)
	lib.driverRet, lib.cudaRet, lib.shutdownRet = nvml.ERROR_UNKNOWN, nvml.ERROR_FUNCTION_NOT_FOUND, nvml.ERROR_UNKNOWN

	st, gpus, notes := runDetectGPUs(t, context.Background(), lib)
	if !st.Available || st.DriverVersion != "" || st.CUDADriverVersion != "" {
		t.Errorf("NVML = %+v", st)
	}
	if len(gpus) != 1 || gpus[0].Index != 1 || gpus[0].UUID == "" || gpus[0].Name != "" || gpus[0].UtilizationPercent != nil {
		t.Fatalf("GPUs = %+v, want only GPU 1, without name and utilisation", gpus)
	}
	for _, want := range []string{
		"driver version unavailable", "CUDA driver version unavailable", "GPU 0 cannot be opened",
		"GPU 1: name unavailable", "GPU 1: memory information unavailable", "GPU 1: utilisation unavailable",
		"NVML shutdown",
	} {
		if !hasNote(notes, NoteWarn, want) {
			t.Errorf("no warning containing %q in %v", want, notes)
		}
	}
	if lib.shutdowns != 1 {
		t.Errorf("Shutdown called %d times, want 1", lib.shutdowns)
	}
}

func TestDetectGPUsDriverWithoutGPU(t *testing.T) {
	lib := newFakeNVML()
	st, gpus, notes := runDetectGPUs(t, context.Background(), lib)
	if !st.Available || len(gpus) != 0 || !hasNote(notes, NoteInfo, "no GPU is visible") {
		t.Errorf("NVML = %+v, GPUs = %v, notes = %v", st, gpus, notes)
	}
	if lib.shutdowns != 1 {
		t.Errorf("Shutdown called %d times, want 1", lib.shutdowns)
	}

	lib = newFakeNVML(a2GPU())
	lib.countRet = nvml.ERROR_UNKNOWN
	_, gpus, notes = runDetectGPUs(t, context.Background(), lib)
	if len(gpus) != 0 || !hasNote(notes, NoteWarn, "counting GPUs failed") || lib.shutdowns != 1 {
		t.Errorf("GPUs = %v, notes = %v, shutdowns = %d", gpus, notes, lib.shutdowns)
	}
}

func TestDetectGPUsCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	lib := newFakeNVML(a2GPU(), a2GPU())
	_, gpus, notes := runDetectGPUs(t, ctx, lib)
	if len(gpus) != 0 || !hasNote(notes, NoteWarn, "stopped after 0 of 2 GPUs") {
		t.Errorf("GPUs = %v, notes = %v", gpus, notes)
	}
	if lib.inits != lib.shutdowns {
		t.Errorf("Init %d times, Shutdown %d times", lib.inits, lib.shutdowns)
	}
}

// TestDetectGPUsRealLibraryMissing runs the real go-nvml against a library
// path that does not exist, several times: it must report "no driver", not
// panic, and leave go-nvml able to try again.
func TestDetectGPUsRealLibraryMissing(t *testing.T) {
	lib := nvml.New(nvml.WithLibraryPath("/nonexistent/modelfleet-test/libnvidia-ml.so.1"))
	for range 3 {
		st, gpus, notes := runDetectGPUs(t, context.Background(), lib)
		if st.Available || len(gpus) != 0 {
			t.Fatalf("NVML = %+v, GPUs = %v", st, gpus)
		}
		if !hasNote(notes, NoteInfo, "NVML not available: no NVIDIA driver") {
			t.Fatalf("notes = %v", notes)
		}
	}
}

func TestCUDAVersion(t *testing.T) {
	for v, want := range map[int]string{12040: "12.4", 11080: "11.8", 13000: "13.0", 12090: "12.9", 0: "", -1: ""} {
		if got := cudaVersion(v); got != want {
			t.Errorf("cudaVersion(%d) = %q, want %q", v, got, want)
		}
	}
}
