package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a long-running process the demo started: fleethub dev, an agent
// or the factory simulator. It runs in its own process group, so stopping
// it also stops anything it started, and it dies with the demo
// (Pdeathsig) should the demo itself be killed.
type proc struct {
	name string
	log  string // path of its output
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex // guards err
	err error
}

// startProc starts bin with args, output appended to logPath (and copied
// to extra when not nil), in dir.
func startProc(name, logPath, dir string, env []string, extra io.Writer, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stderr = f
	cmd.Stdout = f
	if extra != nil {
		cmd.Stdout = io.MultiWriter(f, extra)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// exited returns a description of how the process ended, or "" while it
// runs.
func (p *proc) exited() string {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err == nil {
			return "exited"
		}
		return p.err.Error()
	default:
		return ""
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then kills
// the group. It is safe to call more than once.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// freePort returns a TCP port free on loopback right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portFree reports whether addr can be listened on.
func portFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// shellQuote quotes s for a POSIX shell when it needs it, so that echoed
// commands can be pasted.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@%+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// commandLine renders name and args as a shell command line.
func commandLine(name string, args []string) string {
	parts := []string{name}
	for _, a := range args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

// wrap breaks a long command line before its flags, shell style, so that
// no line gets much longer than 90 characters.
func wrap(line string) string {
	const width = 90
	if len(line) <= width {
		return line
	}
	var b strings.Builder
	cur := 0
	for i, w := range strings.Split(line, " ") {
		if i > 0 {
			if strings.HasPrefix(w, "--") && cur+1+len(w) > width-8 {
				b.WriteString(" \\\n   ")
				cur = 3
			}
			b.WriteByte(' ')
			cur++
		}
		b.WriteString(w)
		cur += len(w)
	}
	return b.String()
}

// errExited is returned by waits when a process the demo depends on ended.
var errExited = errors.New("process exited")

// checkRunning returns an error naming the first process in ps that ended.
func checkRunning(ps []*proc) error {
	for _, p := range ps {
		if how := p.exited(); how != "" {
			return fmt.Errorf("%s %w (%s)%s; see %s", p.name, errExited, how, lastLogLine(p.log), p.log)
		}
	}
	return nil
}

// lastLogLine returns ": " and the last non-empty line of the log at path
// (what a process says before it dies), or "".
func lastLogLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return ": " + l
	}
	return ""
}
