package accel

import (
	"context"
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlLib is the part of go-nvml's nvml.Interface that Detect uses: the
// value nvml.New returns satisfies it, tests give a fake. Devices are
// go-nvml's nvml.Device; Detect calls only GetName, GetUUID, GetMemoryInfo
// and GetUtilizationRates on them.
type nvmlLib interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	SystemGetDriverVersion() (string, nvml.Return)
	SystemGetCudaDriverVersion() (int, nvml.Return)
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
}

// systemNVML loads libnvidia-ml.so.1 from the dynamic loader's search path
// at Init. nvml.New only records the name; it opens nothing.
var systemNVML nvmlLib = nvml.New()

// nvmlMu serialises NVML use. NVML itself counts Init/Shutdown pairs and is
// thread-safe, but go-nvml swaps package variables (the error-string
// function, versioned symbols) when it opens and closes the library.
var nvmlMu sync.Mutex

// detectGPUs lists the GPUs through lib. Every Init that succeeds is paired
// with one Shutdown. A failed Init is not: NVML is then not initialised
// (nvmlShutdown would fail with "uninitialized"), and go-nvml keeps the
// library open when only nvmlInit failed, which is harmless.
func detectGPUs(ctx context.Context, lib nvmlLib, rec *recorder) (NVML, []GPU) {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()

	gpus := []GPU{}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		noteInitFailure(ret, rec)
		return NVML{}, gpus
	}
	defer func() {
		if ret := lib.Shutdown(); ret != nvml.SUCCESS {
			rec.add(NoteWarn, "gpu", "NVML shutdown: %v", ret)
		}
	}()

	st := NVML{Available: true}
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		st.DriverVersion = cleanValue(v)
	} else {
		rec.add(NoteWarn, "gpu", "NVIDIA driver version unavailable: %v", ret)
	}
	if v, ret := lib.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		st.CUDADriverVersion = cudaVersion(v)
	} else {
		rec.add(NoteWarn, "gpu", "CUDA driver version unavailable: %v", ret)
	}

	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		rec.add(NoteWarn, "gpu", "NVIDIA driver %s loaded, but counting GPUs failed: %v; running without GPU", st.DriverVersion, ret)
		return st, gpus
	}
	if n == 0 {
		rec.add(NoteInfo, "gpu", "NVIDIA driver %s loaded, but no GPU is visible to this process (in a container, pass the GPUs through)", st.DriverVersion)
		return st, gpus
	}
	for i := range n {
		if err := ctx.Err(); err != nil {
			rec.add(NoteWarn, "gpu", "GPU detection stopped after %d of %d GPUs: %v", i, n, err)
			break
		}
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			rec.add(NoteWarn, "gpu", "GPU %d cannot be opened and will not be used: %v", i, ret)
			continue
		}
		gpus = append(gpus, describeGPU(i, dev, rec))
	}
	return st, gpus
}

// describeGPU reads one device. Missing details become notes; the GPU is
// still listed, since it can run models.
func describeGPU(i int, dev nvml.Device, rec *recorder) GPU {
	g := GPU{Index: i}
	if name, ret := dev.GetName(); ret == nvml.SUCCESS {
		g.Name = cleanValue(name)
	} else {
		rec.add(NoteWarn, "gpu", "GPU %d: name unavailable: %v", i, ret)
	}
	if uuid, ret := dev.GetUUID(); ret == nvml.SUCCESS {
		g.UUID = cleanValue(uuid)
	} else {
		rec.add(NoteWarn, "gpu", "GPU %d: UUID unavailable: %v", i, ret)
	}
	// The v1 memory call exists in every driver; its "used" includes the
	// driver's reservation on recent drivers, which is what a model cannot
	// use either.
	if mem, ret := dev.GetMemoryInfo(); ret == nvml.SUCCESS {
		g.MemoryTotalBytes, g.MemoryUsedBytes, g.MemoryFreeBytes = mem.Total, mem.Used, mem.Free
	} else {
		rec.add(NoteWarn, "gpu", "GPU %d: memory information unavailable: %v", i, ret)
	}
	switch u, ret := dev.GetUtilizationRates(); ret {
	case nvml.SUCCESS:
		pct := int(min(u.Gpu, 100))
		g.UtilizationPercent = &pct
	case nvml.ERROR_NOT_SUPPORTED:
		// Some boards (older GeForce, some vGPU profiles) do not report it.
	default:
		rec.add(NoteWarn, "gpu", "GPU %d: utilisation unavailable: %v", i, ret)
	}
	return g
}

// noteInitFailure explains a failed nvml.Init. Without the library there
// is no NVIDIA driver, the normal case for CPU-only devices; the other
// failures mean a driver is installed but broken, worth a warning.
func noteInitFailure(ret nvml.Return, rec *recorder) {
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		rec.add(NoteInfo, "gpu", "NVML not available: no NVIDIA driver (libnvidia-ml.so.1 not found); running without GPU")
	case nvml.ERROR_DRIVER_NOT_LOADED:
		rec.add(NoteWarn, "gpu", "NVIDIA driver installed but its kernel module is not loaded (%v); running without GPU: check `nvidia-smi` and the kernel log", ret)
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		rec.add(NoteWarn, "gpu", "NVIDIA driver library and kernel module versions differ (%v), usually after a driver upgrade; running without GPU until the device is rebooted", ret)
	case nvml.ERROR_NO_PERMISSION:
		rec.add(NoteWarn, "gpu", "no permission to use the NVIDIA devices (%v); running without GPU: give the agent's user access to /dev/nvidia*", ret)
	default:
		rec.add(NoteWarn, "gpu", "NVML failed to initialise (%v); running without GPU", ret)
	}
}

// cudaVersion formats NVML's CUDA driver version, 1000*major + 10*minor
// (12040 is 12.4).
func cudaVersion(v int) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d", v/1000, v%1000/10)
}
