package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// startAttempts bounds how often a server is started again on a fresh
	// port after losing the race for the port it was given.
	startAttempts = 4
	// stopGrace is how long a server gets to exit after SIGTERM before its
	// process group is killed. Mosquitto writes its persistence file in this
	// window.
	stopGrace = 15 * time.Second
	// logTailLines is how much of a server log a failure message shows.
	logTailLines = 40
	// probeInterval is the pause between readiness probes.
	probeInterval = 20 * time.Millisecond
)

// errPortInUse reports that a child exited because its listen port was
// already taken: the caller may retry on another port.
var errPortInUse = errors.New("listen port already in use")

// process supervises one server child process across stops and restarts.
// Its methods are called from the test goroutine; only the goroutine that
// reaps the child runs concurrently, and it touches just waitErr.
type process struct {
	name    string // "mosquitto", "minio": used in messages
	bin     string
	args    []string
	env     []string // nil inherits the test's environment
	dir     string   // working directory of the child
	logPath string   // stdout and stderr of every run, appended

	cmd       *exec.Cmd
	done      chan struct{} // closed once cmd has been reaped
	logOffset int64         // size of the log when the current run started

	mu      sync.Mutex // guards all following fields
	waitErr error      // exit status of the last run
}

// start launches the child in its own process group. The child gets SIGKILL
// if the test binary dies (Pdeathsig), so an interrupted or timed-out test
// leaves no server behind. Pdeathsig fires when the forking OS thread exits;
// the Go runtime only retires threads whose goroutine ended while locked to
// them, which neither the testing package nor this package does.
func (p *process) start() error {
	if p.running() {
		return fmt.Errorf("%s is already running (pid %d)", p.name, p.cmd.Process.Pid)
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open %s log: %w", p.name, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s log: %w", p.name, err)
	}
	p.logOffset = info.Size()
	fmt.Fprintf(f, "=== testenv: %s %s\n", p.bin, strings.Join(p.args, " "))

	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// running reports whether a started child has not exited yet.
func (p *process) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exitErr returns how the last run ended; call it only after done is closed.
func (p *process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr == nil {
		return errors.New("exit status 0")
	}
	return p.waitErr
}

// stop asks the child to exit with SIGTERM, waits up to grace, then kills
// its process group. It is a no-op when the child is not running.
func (p *process) stop(grace time.Duration) error {
	if !p.running() {
		return nil
	}
	pgid := p.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	p.kill()
	return fmt.Errorf("%s did not exit within %s of SIGTERM and was killed", p.name, grace)
}

// kill sends SIGKILL to the child's process group and waits for the child.
func (p *process) kill() {
	if !p.running() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// runLog returns what the current (or last) run wrote to the log.
func (p *process) runLog() string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(p.logOffset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(b)
}

// logTail returns the last n lines of the whole log.
func (p *process) logTail(n int) string {
	return tailLines(p.logPath, n)
}

// tailLines returns the last n lines of the file at path, or a note saying
// why it could not be read.
func tailLines(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const window = 64 << 10
	if info, err := f.Stat(); err == nil && info.Size() > window {
		_, _ = f.Seek(info.Size()-window, io.SeekStart)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// launch starts p and waits until ready succeeds. When the child exits
// because its port was taken between choosing and binding it, launch calls
// repick (which must choose new ports and update p.args or config files)
// and tries again. A nil repick makes that case an error.
func launch(ctx context.Context, p *process, ready func(context.Context) error, repick func() error) error {
	for attempt := 1; ; attempt++ {
		if err := p.start(); err != nil {
			return err
		}
		err := waitReady(ctx, p, ready)
		if err == nil {
			return nil
		}
		p.kill()
		if !errors.Is(err, errPortInUse) || repick == nil || attempt == startAttempts {
			return err
		}
		if err := repick(); err != nil {
			return err
		}
	}
}

// waitReady probes the child until ready succeeds, the child exits or ctx
// ends. Errors carry the tail of the child's log.
func waitReady(ctx context.Context, p *process, ready func(context.Context) error) error {
	// A probe may hang on whatever else listens on the port when the child
	// lost the race for it; end probes as soon as the child exits.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	done := p.done
	go func() {
		select {
		case <-done:
			cancelRun()
		case <-runCtx.Done():
		}
	}()
	var lastErr error
	for {
		probeCtx, cancel := context.WithTimeout(runCtx, 2*time.Second)
		lastErr = ready(probeCtx)
		cancel()
		if lastErr == nil {
			return nil
		}
		select {
		case <-done:
			out := p.runLog()
			if portInUse(out) {
				return fmt.Errorf("%s: %w", p.name, errPortInUse)
			}
			return fmt.Errorf("%s exited before it was ready (%v); log %s:\n%s",
				p.name, p.exitErr(), p.logPath, tailLines(p.logPath, logTailLines))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last probe: %v); log %s:\n%s",
				p.name, ctx.Err(), lastErr, p.logPath, tailLines(p.logPath, logTailLines))
		case <-time.After(probeInterval):
		}
	}
}

// portInUse recognises the bind failures of mosquitto ("Address already in
// use") and minio ("Specified port is already in use").
func portInUse(log string) bool {
	l := strings.ToLower(log)
	return strings.Contains(l, "already in use") || strings.Contains(l, "address in use")
}

// freePort returns a loopback TCP port that was free a moment ago. Another
// process may take it before the server binds it; launch retries then.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// findBinary locates a server binary: the path in envVar if set, else the
// first of candidates (absolute paths or names looked up in PATH) that is an
// executable file. When none is found, the test is skipped, or failed when
// CI is true, with a message saying how to install it. A path in envVar that
// is not executable counts as not found: the setting is not second-guessed.
func findBinary(tb testing.TB, name, envVar string, candidates []string, install string) string {
	tb.Helper()
	var msg string
	if p := os.Getenv(envVar); p != "" {
		err := isExecutable(p)
		if err == nil {
			return p
		}
		msg = fmt.Sprintf("testenv: %s not found: %s=%s: %v; %s", name, envVar, p, err, install)
	} else {
		var looked []string
		for _, c := range candidates {
			if c == "" {
				continue
			}
			if !strings.Contains(c, string(filepath.Separator)) {
				looked = append(looked, "$PATH/"+c)
				if p, err := exec.LookPath(c); err == nil {
					return p
				}
				continue
			}
			looked = append(looked, c)
			if isExecutable(c) == nil {
				return c
			}
		}
		msg = fmt.Sprintf("testenv: %s not found (looked at %s; %s unset); %s",
			name, strings.Join(looked, ", "), envVar, install)
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		tb.Fatal(msg)
	} else {
		tb.Skip(msg)
	}
	return ""
}

// isExecutable returns nil when path is a regular file with an execute bit.
func isExecutable(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// moduleRoot returns the nearest directory at or above the working directory
// that holds a go.mod file, or "" when there is none.
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// cleanEnv returns the test's environment without variables whose names
// start with one of prefixes, so a developer's own settings (for example
// MINIO_*) cannot change the servers started here.
func cleanEnv(prefixes ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// writeFile writes data to path with owner-only permissions.
func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// joinLines renders config lines, one per line with a trailing newline.
func joinLines(lines []string) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
