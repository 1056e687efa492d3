package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/agent/accel"
	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/cli"
)

// Check outcomes. Only checkFail makes doctor exit non-zero.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
	checkSkip = "skip"
)

// Data directory free space below which doctor fails: not even a small
// model and the state file would fit.
const minFreeDataBytes = 64 << 20

// doctorCheck is the outcome of one check.
type doctorCheck struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do; set for warn and fail.
	Fix string `json:"fix,omitempty"`
}

// doctorReport is what `fleetagent doctor -o json` prints.
type doctorReport struct {
	// OK is false when a check failed.
	OK        bool            `json:"ok"`
	Inventory accel.Inventory `json:"inventory"`
	// Variants are the detected artifact variants, best first.
	Variants []string      `json:"variants"`
	Checks   []doctorCheck `json:"checks"`
}

func (r *doctorReport) failed() []string {
	var names []string
	for _, c := range r.Checks {
		if c.Status == checkFail {
			names = append(names, c.Name)
		}
	}
	return names
}

func newDoctorCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this device can run the agent and show its hardware",
		Example: `  fleetagent doctor
  fleetagent doctor --config /etc/modelfleet/agent.yaml -o json`,
		Long: `Show the device inventory (CPU, memory, NVIDIA GPUs, the artifact variants
it can run) and check the setup: that ONNX Runtime loads, and the state of
the NVIDIA driver. With a configuration file (--config, MODELFLEET_CONFIG or
` + agent.DefaultConfigPath + `) it also validates the configuration, checks that
the data directory is writable and has free space, and that the MQTT
brokers and the S3 endpoint resolve and accept TCP connections.

Each problem comes with what to do about it. The exit status is non-zero
when a required check fails; a device without GPU is fine.

Without --ort-lib, $MODELFLEET_ORT_LIB and then the standard locations are
tried.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	out := cli.AddOutputFlag(cmd)
	timeout := cmd.Flags().Duration("timeout", 3*time.Second, "time allowed for each network check")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := cli.CheckOutput(*out); err != nil {
			return err
		}
		rep := runDoctor(cmd.Context(), cmd, cf, *timeout)
		var err error
		if *out == cli.OutputJSON {
			err = cli.WriteJSON(cmd.OutOrStdout(), rep)
		} else {
			err = writeDoctorText(cmd.OutOrStdout(), rep)
		}
		if err != nil {
			return err
		}
		if failed := rep.failed(); len(failed) > 0 {
			return fmt.Errorf("doctor: %d required check(s) failed: %s", len(failed), strings.Join(failed, ", "))
		}
		return nil
	}
	return cmd
}

// runDoctor takes the inventory and runs every check.
func runDoctor(ctx context.Context, cmd *cobra.Command, cf *configFlags, timeout time.Duration) doctorReport {
	inv := accel.Detect(ctx, accel.Options{})
	rep := doctorReport{Inventory: inv, Variants: inv.Variants()}
	add := func(c doctorCheck) { rep.Checks = append(rep.Checks, c) }

	// The configuration is loaded even without a file: it carries
	// --ort-lib and the MODELFLEET_* variables.
	cfg, loadErr := cf.load()
	ortPath, configured := cfg.ORTLib, cfg.Variants
	if loadErr != nil {
		// cfg is incomplete: use only what the flags say.
		ortPath, _ = cmd.Flags().GetString("ort-lib")
		configured = nil
	}
	add(checkORT(ortPath))
	add(checkGPU(&inv))
	add(checkCPU(&inv))
	add(checkMemory(&inv))
	add(checkVariants(&inv, configured))

	cfgPath := configFileInUse(cf)
	switch {
	case loadErr != nil:
		// Also without a file: a bad MODELFLEET_* variable or flag.
		add(doctorCheck{Name: "config", Status: checkFail, Detail: strings.TrimPrefix(cfgPath+": ", ": ") + loadErr.Error(),
			Fix: "correct the setting named above; `fleetagent config validate` lists every problem"})
		rep.OK = false
		return rep
	case cfgPath == "":
		add(doctorCheck{Name: "config", Status: checkSkip,
			Detail: "no configuration file; pass --config to also check the configuration, data directory and network"})
		rep.OK = len(rep.failed()) == 0
		return rep
	}
	if err := cfg.Validate(); err != nil {
		add(doctorCheck{Name: "config", Status: checkFail, Detail: cfgPath + ":\n" + err.Error(),
			Fix: "correct the fields named above in " + cfgPath})
	} else {
		add(doctorCheck{Name: "config", Status: checkOK, Detail: cfgPath + " is valid (device " + cfg.DeviceID + ")"})
	}
	if filepath.IsAbs(cfg.DataDir) { // else Validate reported it
		add(checkDataDir(cfg.DataDir, cfg.MaxArtifactBytes))
	}
	rep.Checks = append(rep.Checks, checkNetwork(ctx, &cfg, timeout)...)
	rep.OK = len(rep.failed()) == 0
	return rep
}

// configFileInUse returns the configuration file cf.load reads, or "" when
// there is none.
func configFileInUse(cf *configFlags) string {
	if cf.path != "" {
		return cf.path
	}
	if p := os.Getenv("MODELFLEET_CONFIG"); p != "" {
		return p
	}
	if _, err := os.Stat(agent.DefaultConfigPath); err == nil {
		return agent.DefaultConfigPath
	}
	return ""
}

// checkORT loads ONNX Runtime as the agent would. Doctor leaves the process
// as it found it: a library it loaded is unloaded again.
func checkORT(path string) doctorCheck {
	c := doctorCheck{Name: "onnxruntime"}
	_, wasLoaded := runtime.Loaded()
	lib, err := runtime.Init(runtime.LibraryConfig{Path: path})
	if !wasLoaded {
		_ = runtime.Shutdown()
	}
	if err == nil {
		c.Status, c.Detail = checkOK, fmt.Sprintf("ONNX Runtime %s loads from %s", lib.Version, lib.Path)
		return c
	}
	c.Status, c.Detail = checkFail, err.Error()
	switch {
	case errors.Is(err, runtime.ErrLibraryNotFound):
		c.Fix = "run `make deps` (source checkout) or install the modelfleet package, " +
			"or set --ort-lib or " + runtime.EnvLibraryPath + " to the path of " + runtime.LibraryName
	case errors.Is(err, runtime.ErrUnsupportedVersion):
		c.Fix = "install ONNX Runtime 1.24 or newer (`make deps` or the modelfleet package) and point --ort-lib at it"
	case errors.Is(err, runtime.ErrLibraryUnusable):
		c.Fix = "the file is not a working ONNX Runtime for linux/" + goruntime.GOARCH +
			": check its dependencies with ldd, or reinstall it (`make deps` or the modelfleet package)"
	default:
		c.Fix = "check the path given by --ort-lib, " + runtime.EnvLibraryPath + " or ort_lib in the configuration"
	}
	return c
}

// notesFrom returns the messages of the notes about source at level.
func notesFrom(inv *accel.Inventory, source, level string) []string {
	var msgs []string
	for _, n := range inv.Notes {
		if n.Source == source && n.Level == level {
			msgs = append(msgs, n.Message)
		}
	}
	return msgs
}

func checkGPU(inv *accel.Inventory) doctorCheck {
	c := doctorCheck{Name: "gpu", Status: checkOK}
	warns := notesFrom(inv, "gpu", accel.NoteWarn)
	switch {
	case len(inv.GPUs) > 0:
		c.Detail = fmt.Sprintf("%d NVIDIA GPU(s), driver %s, CUDA %s", len(inv.GPUs), inv.NVML.DriverVersion, inv.NVML.CUDADriverVersion)
	case inv.NVML.Available:
		c.Status = checkWarn
		c.Detail = "NVIDIA driver " + inv.NVML.DriverVersion + " loaded, but no GPU is visible; models run on the CPU"
		c.Fix = "check `nvidia-smi`; in a container, pass the GPUs through (e.g. --gpus all)"
	case len(warns) > 0:
		c.Status = checkWarn
		c.Detail = "NVIDIA driver present but unusable; models run on the CPU"
		c.Fix = "see the notes: repair the driver if this device should use its GPU"
	default:
		c.Detail = "no NVIDIA GPU (no NVIDIA driver); models run on the CPU"
	}
	if len(warns) > 0 {
		c.Detail += ": " + strings.Join(warns, "; ")
		if c.Status == checkOK {
			c.Status, c.Fix = checkWarn, "see the notes above"
		}
	}
	return c
}

func checkCPU(inv *accel.Inventory) doctorCheck {
	c := doctorCheck{Name: "cpu", Status: checkOK, Detail: describeCPU(&inv.CPU)}
	if warns := notesFrom(inv, "cpu", accel.NoteWarn); len(warns) > 0 {
		c.Status, c.Detail = checkWarn, c.Detail+": "+strings.Join(warns, "; ")
		c.Fix = "/proc/cpuinfo is unreadable: the agent still runs, with the core count from the scheduler"
	}
	return c
}

func describeCPU(cpu *accel.CPU) string {
	model := cpu.Model
	if model == "" {
		model = "unknown model"
	}
	return fmt.Sprintf("%s, %d logical cores (%d usable), %s", model, cpu.LogicalCores, cpu.UsableCores, cpu.Arch)
}

// lowMemoryBytes is the available memory below which doctor warns: small
// models and ONNX Runtime itself need some headroom.
const lowMemoryBytes = 256 << 20

func checkMemory(inv *accel.Inventory) doctorCheck {
	m := inv.Memory
	c := doctorCheck{Name: "memory", Status: checkOK,
		Detail: fmt.Sprintf("%s available of %s", formatBytes(m.AvailableBytes), formatBytes(m.TotalBytes))}
	if warns := notesFrom(inv, "memory", accel.NoteWarn); len(warns) > 0 {
		c.Status, c.Detail = checkWarn, strings.Join(warns, "; ")
		c.Fix = "/proc/meminfo is unreadable: check that /proc is mounted"
	} else if m.AvailableBytes < lowMemoryBytes {
		c.Status = checkWarn
		c.Fix = "free memory on this device or assign smaller models: loading a model may fail"
	}
	return c
}

func checkVariants(inv *accel.Inventory, configured []string) doctorCheck {
	detected := strings.Join(inv.Variants(), ", ")
	c := doctorCheck{Name: "variants", Status: checkOK, Detail: detected}
	if len(configured) == 0 {
		return c
	}
	c.Detail = fmt.Sprintf("%s (configured; detected: %s)", strings.Join(configured, ", "), detected)
	if slices.Contains(configured, accel.VariantCUDA) && len(inv.GPUs) == 0 {
		c.Status = checkWarn
		c.Fix = "the configuration asks for cuda artifacts but there is no usable GPU: " +
			"remove variants from the configuration to use the detected ones"
	}
	return c
}

// checkDataDir checks that the data directory is (or can be created)
// writable by the current user and has space for artifacts.
func checkDataDir(dir string, maxArtifactBytes int64) doctorCheck {
	c := doctorCheck{Name: "data_dir", Status: checkFail}
	d, err := accel.DiskSpace(dir)
	if err != nil {
		c.Detail = err.Error()
		c.Fix = "set data_dir to a directory on a local file system"
		return c
	}
	who := "the current user"
	if u, err := user.Current(); err == nil {
		who = "user " + u.Username
	}
	f, err := os.CreateTemp(d.MeasuredPath, ".fleetagent-doctor-*")
	if err != nil {
		c.Detail = fmt.Sprintf("%s is not writable by %s: %v", d.MeasuredPath, who, err)
		c.Fix = "create " + dir + " and give it to the user the agent runs as (chown), or set data_dir"
		return c
	}
	_ = f.Close()
	_ = os.Remove(f.Name())

	c.Status = checkOK
	c.Detail = fmt.Sprintf("%s writable by %s, %s free of %s", dir, who, formatBytes(d.FreeBytes), formatBytes(d.TotalBytes))
	if d.MeasuredPath != dir {
		c.Detail = fmt.Sprintf("%s does not exist yet; the agent will create it in %s (writable by %s), %s free of %s",
			dir, d.MeasuredPath, who, formatBytes(d.FreeBytes), formatBytes(d.TotalBytes))
	}
	switch {
	case d.FreeBytes < minFreeDataBytes:
		c.Status = checkFail
		c.Fix = "free space on " + d.MeasuredPath + " or move data_dir: the agent needs room for model artifacts and its state"
	case maxArtifactBytes > 0 && d.FreeBytes < uint64(maxArtifactBytes):
		c.Status = checkWarn
		c.Fix = fmt.Sprintf("less free space than max_artifact_bytes (%s): large models may not fit; free space or lower the limit",
			formatBytes(uint64(maxArtifactBytes)))
	}
	return c
}

// checkNetwork checks, in parallel, that every MQTT broker and the S3
// endpoint resolve and accept a TCP connection within timeout. An
// unreachable broker is only a warning while another one answers: the
// agent connects to whichever it can.
func checkNetwork(ctx context.Context, cfg *agent.Config, timeout time.Duration) []doctorCheck {
	type target struct{ name, addr, hostport, fix string }
	var targets []target
	for _, b := range cfg.MQTT.Brokers {
		hp, err := bus.HostPort(b)
		if err != nil {
			continue // Validate reported it
		}
		targets = append(targets, target{"mqtt", b, hp, "check mqtt.brokers, that the broker runs, and that firewalls let this device reach it"})
	}
	if cfg.S3.Endpoint != "" {
		if hp, err := s3HostPort(cfg.S3.Endpoint, cfg.S3.Insecure); err == nil {
			targets = append(targets, target{"s3", cfg.S3.Endpoint, hp, "check s3.endpoint, that the storage runs, and that firewalls let this device reach it"})
		}
	}
	checks := make([]doctorCheck, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			checks[i] = checkTCP(ctx, t.name, t.addr, t.hostport, t.fix, timeout)
		})
	}
	wg.Wait()

	brokerUp := slices.ContainsFunc(checks, func(c doctorCheck) bool { return c.Name == "mqtt" && c.Status == checkOK })
	for i := range checks {
		if c := &checks[i]; c.Name == "mqtt" && c.Status == checkFail && brokerUp {
			c.Status = checkWarn
		}
	}
	return checks
}

// checkTCP resolves hostport's host and opens a TCP connection to it. addr
// is the configured address, to name in the result.
func checkTCP(ctx context.Context, name, addr, hostport, fix string, timeout time.Duration) doctorCheck {
	c := doctorCheck{Name: name, Status: checkFail, Fix: fix}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		c.Detail = addr + ": " + err.Error()
		return c
	}
	if _, err := net.DefaultResolver.LookupHost(ctx, host); err != nil {
		c.Detail = fmt.Sprintf("%s: cannot resolve %s: %v", addr, host, err)
		c.Fix = "check the host name and this device's DNS settings (/etc/resolv.conf); " + fix
		return c
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		c.Detail = fmt.Sprintf("%s: cannot connect to %s: %v", addr, hostport, err)
		return c
	}
	_ = conn.Close()
	c.Status, c.Fix = checkOK, ""
	c.Detail = fmt.Sprintf("%s: %s accepts TCP connections", addr, hostport)
	return c
}

// s3HostPort returns host:port of an S3 endpoint given as host[:port] or
// URL, as fetch.NewClient interprets it.
func s3HostPort(endpoint string, insecure bool) (string, error) {
	hostport, secure := strings.TrimSuffix(endpoint, "/"), !insecure
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" && (u.Scheme == "http" || u.Scheme == "https") {
		hostport, secure = u.Host, u.Scheme == "https"
	}
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport, nil
	}
	if hostport == "" || strings.ContainsAny(hostport, "/ ") {
		return "", fmt.Errorf("%q is not an S3 endpoint", endpoint)
	}
	port := "80"
	if secure {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(hostport, "[]"), port), nil
}

// formatBytes shows a size in binary units with one decimal: "3.7 GiB".
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

var statusMarks = map[string]string{checkOK: "✓", checkWarn: "!", checkFail: "✗", checkSkip: "-"}

// writeDoctorText prints the report for humans.
func writeDoctorText(w io.Writer, rep doctorReport) error {
	inv := &rep.Inventory
	var b strings.Builder
	line := func(label, format string, a ...any) {
		fmt.Fprintf(&b, "  %-9s %s\n", label, fmt.Sprintf(format, a...))
	}
	fmt.Fprintf(&b, "Device %s\n", inv.Hostname)
	line("os", "%s", strings.Join(nonEmpty(inv.OS.Name, "kernel "+inv.OS.Kernel, inv.OS.Machine), ", "))
	line("cpu", "%s", describeCPU(&inv.CPU))
	if inv.CPU.Board != "" {
		line("board", "%s", inv.CPU.Board)
	}
	line("memory", "%s total, %s available", formatBytes(inv.Memory.TotalBytes), formatBytes(inv.Memory.AvailableBytes))
	if inv.NVML.Available {
		line("nvidia", "driver %s, CUDA %s", inv.NVML.DriverVersion, inv.NVML.CUDADriverVersion)
	}
	if len(inv.GPUs) == 0 {
		line("gpus", "none")
	}
	for _, g := range inv.GPUs {
		util := "utilisation n/a"
		if g.UtilizationPercent != nil {
			util = fmt.Sprintf("%d%% busy", *g.UtilizationPercent)
		}
		line("gpu "+strconv.Itoa(g.Index), "%s %s, %s free of %s, %s", g.Name, g.UUID,
			formatBytes(g.MemoryFreeBytes), formatBytes(g.MemoryTotalBytes), util)
	}
	line("variants", "%s", strings.Join(rep.Variants, ", "))
	for _, n := range inv.Notes {
		line("note", "%s", n)
	}

	b.WriteString("\nChecks\n")
	for _, c := range rep.Checks {
		detail := strings.ReplaceAll(c.Detail, "\n", "\n"+strings.Repeat(" ", 20))
		fmt.Fprintf(&b, "  %s %-15s %s\n", statusMarks[c.Status], c.Name, detail)
		if c.Fix != "" && c.Status != checkOK {
			fmt.Fprintf(&b, "    %-15s → %s\n", "", c.Fix)
		}
	}
	if failed := rep.failed(); len(failed) > 0 {
		fmt.Fprintf(&b, "\nFAIL: %s; fix the problems above, then run `fleetagent doctor` again\n", strings.Join(failed, ", "))
	} else {
		b.WriteString("\nOK: this device can run the agent\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func nonEmpty(parts ...string) []string {
	return slices.DeleteFunc(parts, func(s string) bool { return s == "" || s == "kernel " })
}
