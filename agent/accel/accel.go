package accel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	goruntime "runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Artifact variants, as named in model manifests.
const (
	// VariantCUDA runs on an NVIDIA GPU with ONNX Runtime's CUDA provider.
	VariantCUDA = "cuda"
	// VariantCPU runs anywhere.
	VariantCPU = "cpu"
)

// Note levels.
const (
	// NoteInfo describes the device, e.g. that it has no NVIDIA driver.
	NoteInfo = "info"
	// NoteWarn means something could not be read or looks broken, and the
	// inventory may be incomplete.
	NoteWarn = "warn"
)

// Inventory describes the device. It is plain data, meant to be encoded as
// JSON (telemetry, `fleetagent doctor -o json`).
type Inventory struct {
	// Hostname is the kernel's host name.
	Hostname string `json:"hostname"`
	// OS is the operating system and kernel.
	OS OS `json:"os"`
	// CPU is the processor.
	CPU CPU `json:"cpu"`
	// Memory is the system memory.
	Memory Memory `json:"memory"`
	// NVML says whether the NVIDIA management library could be used, and
	// the driver versions it reported.
	NVML NVML `json:"nvml"`
	// GPUs lists the NVIDIA GPUs in NVML order; empty (not null in JSON)
	// when there are none.
	GPUs []GPU `json:"gpus"`
	// Notes are what detection found worth saying: missing drivers,
	// unreadable files. Empty (not null in JSON) when there is nothing.
	Notes []Note `json:"notes"`
}

// OS describes the operating system.
type OS struct {
	// Name is the distribution, from os-release PRETTY_NAME, e.g.
	// "Debian GNU/Linux 12 (bookworm)"; empty when unknown.
	Name string `json:"name"`
	// Kernel is the kernel release (uname -r), e.g. "6.1.0-18-amd64".
	Kernel string `json:"kernel"`
	// Machine is the hardware name (uname -m), e.g. "x86_64", "aarch64".
	Machine string `json:"machine"`
}

// CPU describes the processor.
type CPU struct {
	// Model is the processor model, e.g. "AMD EPYC 7R13 Processor" or,
	// on ARM where the kernel gives only part numbers, "ARM Cortex-A72";
	// distinct models of a heterogeneous CPU are joined with " + ".
	Model string `json:"model"`
	// Board is the board or SoC the kernel names in /proc/cpuinfo ("Model"
	// or "Hardware" lines, e.g. "Raspberry Pi 4 Model B Rev 1.4"); mostly
	// empty on x86.
	Board string `json:"board,omitempty"`
	// Arch is the Go architecture the agent runs as, e.g. "amd64", "arm64".
	Arch string `json:"arch"`
	// LogicalCores is the number of online logical processors.
	LogicalCores int `json:"logical_cores"`
	// UsableCores is the number of those this process may run on (its CPU
	// affinity), which bounds useful inference threads.
	UsableCores int `json:"usable_cores"`
}

// Memory describes the system memory.
type Memory struct {
	// TotalBytes is the usable RAM (MemTotal).
	TotalBytes uint64 `json:"total_bytes"`
	// AvailableBytes is what can be allocated without swapping
	// (MemAvailable, or an estimate on kernels before 3.14).
	AvailableBytes uint64 `json:"available_bytes"`
}

// NVML is the state of the NVIDIA management library.
type NVML struct {
	// Available is true when NVML initialised, i.e. an NVIDIA driver is
	// installed and loaded (it may still see no GPU).
	Available bool `json:"available"`
	// DriverVersion is the NVIDIA driver version, e.g. "550.54.15".
	DriverVersion string `json:"driver_version,omitempty"`
	// CUDADriverVersion is the newest CUDA version the driver supports,
	// e.g. "12.4".
	CUDADriverVersion string `json:"cuda_driver_version,omitempty"`
}

// GPU describes one NVIDIA GPU.
type GPU struct {
	// Index is NVML's index, which follows PCI bus order. CUDA numbers
	// devices the same way only with CUDA_DEVICE_ORDER=PCI_BUS_ID; the UUID
	// is the stable name.
	Index int `json:"index"`
	// Name is the product name, e.g. "NVIDIA A2".
	Name string `json:"name"`
	// UUID is the GPU's unique ID, e.g. "GPU-5ac6b2d8-…".
	UUID string `json:"uuid"`
	// MemoryTotalBytes is the installed frame buffer memory.
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
	// MemoryUsedBytes is the memory allocated by all processes (and, on
	// recent drivers, reserved by the driver).
	MemoryUsedBytes uint64 `json:"memory_used_bytes"`
	// MemoryFreeBytes is the unallocated memory.
	MemoryFreeBytes uint64 `json:"memory_free_bytes"`
	// UtilizationPercent is the share of the last sample period during
	// which a kernel ran on the GPU; absent when the GPU does not report it.
	UtilizationPercent *int `json:"utilization_percent,omitempty"`
}

// Note is something detection found worth telling the operator.
type Note struct {
	// Level is [NoteInfo] or [NoteWarn].
	Level string `json:"level"`
	// Source is the part of the inventory concerned: "gpu", "cpu",
	// "memory", "os" or "host".
	Source string `json:"source"`
	// Message says what happened and what it means.
	Message string `json:"message"`
}

// String formats the note for humans: "warn cpu: …".
func (n Note) String() string { return n.Level + " " + n.Source + ": " + n.Message }

// Variants returns the artifact variants this device can run, best first:
// ["cuda", "cpu"] when it has at least one NVIDIA GPU, else ["cpu"].
func (inv Inventory) Variants() []string {
	if len(inv.GPUs) > 0 {
		return []string{VariantCUDA, VariantCPU}
	}
	return []string{VariantCPU}
}

// Options tune [Detect].
type Options struct {
	// Logger receives each note as it is found, at info or warn level.
	// Nil discards.
	Logger *slog.Logger
}

// Detect takes the inventory of this device. It does not fail: what it
// cannot find out is left at its zero value and explained in
// [Inventory.Notes]. A device without an NVIDIA driver has no GPUs and an
// info note saying so. Detect is safe for concurrent use and may be called
// as often as needed (each call initialises and shuts down NVML); NVML
// calls cannot be interrupted, so ctx is checked between steps.
func Detect(ctx context.Context, opts Options) Inventory {
	return hostSources().detect(ctx, opts)
}

// sources are where Detect reads from; tests replace them.
type sources struct {
	fsys     fs.FS // the root file system: proc/cpuinfo, etc/os-release, …
	nvml     nvmlLib
	hostname func() (string, error)
	uname    func() (kernel, machine string, err error)
	numCPU   func() int
	goarch   string
}

// hostSources returns the real machine.
func hostSources() sources {
	return sources{
		fsys:     os.DirFS("/"),
		nvml:     systemNVML,
		hostname: os.Hostname,
		uname:    uname,
		numCPU:   goruntime.NumCPU,
		goarch:   goruntime.GOARCH,
	}
}

// recorder collects notes and logs them as they come.
type recorder struct {
	log   *slog.Logger
	notes []Note
}

func (r *recorder) add(level, source, format string, a ...any) {
	n := Note{Level: level, Source: source, Message: fmt.Sprintf(format, a...)}
	r.notes = append(r.notes, n)
	l := slog.LevelInfo
	if level == NoteWarn {
		l = slog.LevelWarn
	}
	r.log.Log(context.Background(), l, n.Message, "source", source)
}

func (s sources) detect(ctx context.Context, opts Options) Inventory {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec := &recorder{log: log}
	inv := Inventory{GPUs: []GPU{}}

	if h, err := s.hostname(); err != nil {
		rec.add(NoteWarn, "host", "hostname unavailable: %v", err)
	} else {
		inv.Hostname = h
	}
	inv.OS = s.detectOS(rec)
	inv.CPU = s.detectCPU(rec)
	inv.Memory = s.detectMemory(rec)
	if err := ctx.Err(); err != nil {
		rec.add(NoteWarn, "gpu", "GPU detection skipped: %v", err)
	} else {
		inv.NVML, inv.GPUs = detectGPUs(ctx, s.nvml, rec)
	}
	inv.Notes = rec.notes
	if inv.Notes == nil {
		inv.Notes = []Note{}
	}
	return inv
}

func (s sources) detectOS(rec *recorder) OS {
	var o OS
	kernel, machine, err := s.uname()
	if err != nil {
		rec.add(NoteWarn, "os", "uname: %v", err)
	}
	o.Kernel, o.Machine = kernel, machine
	// os-release(5): /etc/os-release, falling back to /usr/lib/os-release.
	for _, name := range []string{"etc/os-release", "usr/lib/os-release"} {
		f, err := s.fsys.Open(name)
		if err != nil {
			continue
		}
		kv, err := parseOSRelease(f)
		_ = f.Close()
		if err != nil {
			rec.add(NoteWarn, "os", "/%s: %v", name, err)
			break
		}
		o.Name = kv["PRETTY_NAME"]
		if o.Name == "" {
			o.Name = joinNonEmpty(" ", kv["NAME"], kv["VERSION"])
		}
		break
	}
	return o
}

func (s sources) detectCPU(rec *recorder) CPU {
	c, err := parseFile(s.fsys, "proc/cpuinfo", ParseCPUInfo)
	if err != nil {
		rec.add(NoteWarn, "cpu", "%v; counting cores from the scheduler instead", err)
	}
	c.Arch = s.goarch
	c.UsableCores = s.numCPU()
	if c.LogicalCores < c.UsableCores {
		c.LogicalCores = c.UsableCores
	}
	return c
}

func (s sources) detectMemory(rec *recorder) Memory {
	m, err := parseFile(s.fsys, "proc/meminfo", ParseMeminfo)
	if err != nil {
		rec.add(NoteWarn, "memory", "%v; memory size unknown", err)
	}
	return m
}

// parseFile opens name in fsys and parses it, naming the file in errors.
func parseFile[T any](fsys fs.FS, name string, parse func(io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := fsys.Open(name)
	if err != nil {
		// fs.PathError already names the file, without the leading slash.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return zero, fmt.Errorf("/%s: %v", name, pe.Err)
		}
		return zero, err
	}
	defer f.Close()
	v, err := parse(f)
	if err != nil {
		return v, fmt.Errorf("/%s: %w", name, err)
	}
	return v, nil
}

// uname returns the kernel release and machine hardware name.
func uname() (kernel, machine string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", err
	}
	return unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]), nil
}

func joinNonEmpty(sep string, parts ...string) string {
	return strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), sep)
}
