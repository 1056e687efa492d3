package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	goruntime "runtime"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

// SamplerOptions configure a [Sampler]. The zero value reads this device's
// /proc and reports no GPU.
type SamplerOptions struct {
	// ProcFS is the proc file system; nil means os.DirFS("/proc"). Tests
	// pass fixtures.
	ProcFS fs.FS
	// GPUs returns the usage of the device's GPUs; nil means none. The agent
	// passes a function backed by NVML, so that this package does not link
	// it. It is called once per sample with the sample's context.
	GPUs func(ctx context.Context) ([]report.GPUStats, error)
	// PageSize is the memory page size for /proc/self/statm; 0 means
	// os.Getpagesize().
	PageSize int
	// Now is the clock, for the uptime; nil means time.Now.
	Now func() time.Time
}

// Sampler reads the device's resource usage: CPU utilisation since the
// previous sample, memory, the agent's resident memory and goroutines, and
// GPU usage through a caller-provided function. It is safe for concurrent
// use, but CPU utilisation is measured between consecutive calls, so one
// caller (the [Reporter]) should own it.
type Sampler struct {
	proc     fs.FS
	gpus     func(ctx context.Context) ([]report.GPUStats, error)
	pageSize int
	now      func() time.Time
	started  time.Time

	mu   sync.Mutex // guards prev
	prev CPUTimes
}

// NewSampler returns a Sampler. It reads nothing until [Sampler.Sample];
// the agent's uptime counts from now.
func NewSampler(opts SamplerOptions) *Sampler {
	s := &Sampler{proc: opts.ProcFS, gpus: opts.GPUs, pageSize: opts.PageSize, now: opts.Now}
	if s.proc == nil {
		s.proc = os.DirFS("/proc")
	}
	if s.pageSize <= 0 {
		s.pageSize = os.Getpagesize()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.started = s.now()
	return s
}

// Sample returns the resource usage now. CPUPercent covers the time since
// the previous Sample (since boot for the first). Whatever cannot be read
// is left zero and explained in the returned error, which joins one error
// per source; the stats are valid either way.
func (s *Sampler) Sample(ctx context.Context) (report.DeviceStats, error) {
	st := report.DeviceStats{
		Goroutines:    goruntime.NumGoroutine(),
		UptimeSeconds: s.now().Sub(s.started).Seconds(),
	}
	var errs []error

	if cur, err := readProc(s.proc, "stat", ParseProcStat); err != nil {
		errs = append(errs, err)
	} else {
		s.mu.Lock()
		st.CPUPercent = BusyPercent(s.prev, cur)
		s.prev = cur
		s.mu.Unlock()
	}
	if mi, err := readProc(s.proc, "meminfo", ParseMeminfo); err != nil {
		errs = append(errs, err)
	} else {
		st.MemoryTotalBytes, st.MemoryAvailableBytes = mi.TotalBytes, mi.AvailableBytes
	}
	rss, err := readProc(s.proc, "self/statm", func(r io.Reader) (uint64, error) { return ParseStatm(r, s.pageSize) })
	if err != nil {
		errs = append(errs, err)
	} else {
		st.ProcessRSSBytes = rss
	}
	if s.gpus != nil {
		gpus, err := s.gpus(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("gpu usage: %w", err))
		}
		for _, g := range gpus {
			// A NaN from a driver would make the whole report unencodable.
			if math.IsNaN(g.UtilizationPercent) || math.IsInf(g.UtilizationPercent, 0) {
				g.UtilizationPercent = 0
			}
			st.GPUs = append(st.GPUs, g)
		}
	}
	return st, errors.Join(errs...)
}

// readProc opens name in fsys and parses it, naming the file in errors.
func readProc[T any](fsys fs.FS, name string, parse func(io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := fsys.Open(name)
	if err != nil {
		return zero, fmt.Errorf("read /proc/%s: %w", name, err)
	}
	defer f.Close()
	v, err := parse(f)
	if err != nil {
		return zero, fmt.Errorf("parse /proc/%s: %w", name, err)
	}
	return v, nil
}
