package benchreport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where the benchmarks ran.
type Machine struct {
	CPU         string
	Cores       int
	MemoryBytes int64
	OS          string
	Kernel      string
	Go          string
	ORT         string
	Date        time.Time
	Commit      string
	// LoadAverage is /proc/loadavg's 1, 5 and 15 minute averages when
	// the run started: other work on the machine skews absolute figures.
	LoadAverage string
}

func (m Machine) rows() [][]string {
	return [][]string{
		{"CPU", m.CPU},
		{"cores (nproc)", strconv.Itoa(m.Cores)},
		{"memory", fmt.Sprintf("%.1f GiB", float64(m.MemoryBytes)/(1<<30))},
		{"OS", m.OS},
		{"kernel", m.Kernel},
		{"Go", m.Go},
		{"ONNX Runtime", m.ORT},
		{"date", m.Date.UTC().Format(time.RFC3339)},
		{"commit", m.Commit},
		{"load average at start (1, 5, 15 min)", m.LoadAverage},
	}
}

// DescribeMachine reads the machine's description from /proc, the go
// command, git (in repoDir) and `agentBin doctor -o json` (the ONNX
// Runtime version the agent loads). Parts it cannot read say why.
func DescribeMachine(ctx context.Context, repoDir, agentBin string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Date: time.Now()}
	m.CPU = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 10, 64); err == nil {
		m.MemoryBytes = kb << 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.OS = strings.Trim(procFieldSep("/etc/os-release", "PRETTY_NAME", "="), `"`)
	m.Go = output(ctx, repoDir, "go", "env", "GOVERSION")
	m.Commit = output(ctx, repoDir, "git", "rev-parse", "HEAD")
	if st := output(ctx, repoDir, "git", "status", "--porcelain"); st != "" && !strings.HasPrefix(st, "unknown") {
		m.Commit += " (with uncommitted changes)"
	}
	m.ORT = ortVersion(ctx, agentBin)
	m.LoadAverage = "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAverage = strings.Join(f[:3], ", ")
		}
	}
	return m
}

func output(ctx context.Context, dir, name string, args ...string) string {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return fmt.Sprintf("unknown (%s: %v)", name, err)
	}
	return strings.TrimSpace(string(out))
}

var ortDetail = regexp.MustCompile(`ONNX Runtime (\S+)`)

// ortVersion asks the agent which ONNX Runtime it loads.
func ortVersion(ctx context.Context, agentBin string) string {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, agentBin, "doctor", "-o", "json").Output() // non-zero when any check fails
	var doc struct {
		Checks []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &doc); err != nil {
		return fmt.Sprintf("unknown (%s doctor -o json: %v)", agentBin, err)
	}
	for _, c := range doc.Checks {
		if c.Name == "onnxruntime" {
			if m := ortDetail.FindStringSubmatch(c.Detail); m != nil && c.Status == "ok" {
				return m[1] + " (" + strings.TrimPrefix(c.Detail, m[0]+" ") + ")"
			}
			return "unknown (" + c.Detail + ")"
		}
	}
	return "unknown (no onnxruntime check in " + agentBin + " doctor)"
}

func procField(path, key string) string { return procFieldSep(path, key, ":") }

// procFieldSep returns the value of the first "key<sep>value" line of path.
func procFieldSep(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown (no " + key + " in " + path + ")"
}
