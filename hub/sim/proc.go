package sim

import (
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// File descriptors one simulated agent holds, generously: its MQTT
// connection and the broker's end of it when the broker runs in this
// process (fleethub simulate --self-contained); with per-agent downloads
// also an S3 connection, the server's end of it and the blob file.
const (
	fdsPerAgentShared   = 2
	fdsPerAgentDownload = 5
)

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit (Go does
// this at start-up too, but not when the parent lowered the hard limit
// after exec) and fails early, saying what to do, when the hard limit is
// too low for agents.
func raiseFileLimit(agents int, download string) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // cannot tell: let the connections speak for themselves
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	per := uint64(fdsPerAgentShared)
	if download == DownloadPerAgent {
		per = fdsPerAgentDownload
	}
	need := uint64(agents)*per + 256
	if lim.Cur < need {
		return fmt.Errorf("%d agents need about %d file descriptors, but the limit is %d: raise it (ulimit -n %d, or LimitNOFILE= for a systemd unit) or simulate fewer agents",
			agents, need, lim.Cur, need)
	}
	return nil
}

// sampler records the peak goroutine count while it runs.
type sampler struct {
	stopC chan struct{}
	wg    sync.WaitGroup
	peak  int
}

// startSampler samples runtime.NumGoroutine every 50 ms until stop.
func startSampler() *sampler {
	s := &sampler{stopC: make(chan struct{}), peak: runtime.NumGoroutine()}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stopC:
				return
			case <-t.C:
				s.peak = max(s.peak, runtime.NumGoroutine())
			}
		}
	}()
	return s
}

// stop ends sampling and returns the goroutine peak and the process's
// peak resident memory (getrusage's ru_maxrss, kilobytes on Linux).
func (s *sampler) stop() (goroutines int, rssBytes int64) {
	close(s.stopC)
	s.wg.Wait()
	s.peak = max(s.peak, runtime.NumGoroutine())
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		rssBytes = int64(ru.Maxrss) * 1024
	}
	return s.peak, rssBytes
}
