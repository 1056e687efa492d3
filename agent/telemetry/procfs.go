package telemetry

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
)

// Limits that keep the /proc parsers cheap on any input. The files they
// read are a few KiB (the "cpu" line of /proc/stat comes first).
const (
	// maxProcBytes is the most a parser reads; beyond it the input is
	// treated as ending.
	maxProcBytes = 1 << 20
	// maxProcLineBytes is the longest line a parser accepts.
	maxProcLineBytes = 64 << 10
)

// scanLines calls fn for each line of r until fn returns false, within the
// limits above.
func scanLines(r io.Reader, fn func(line string) bool) error {
	sc := bufio.NewScanner(io.LimitReader(r, maxProcBytes))
	sc.Buffer(make([]byte, 0, 4096), maxProcLineBytes)
	for sc.Scan() {
		if !fn(sc.Text()) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line longer than %d bytes", maxProcLineBytes)
		}
		return err
	}
	return nil
}

// CPUTimes is the time all CPUs together spent in each state since boot,
// in clock ticks: the "cpu" line of /proc/stat. Guest time is part of User
// and Nice, so it has no field of its own.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// busyIdle returns the ticks spent busy and idle (waiting for I/O counts as
// idle: the CPU could have run something else).
func (c CPUTimes) busyIdle() (busy, idle uint64) {
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal, c.Idle + c.IOWait
}

// BusyPercent returns the busy share of CPU time, 0–100, between two
// readings of /proc/stat; with a zero prev, since boot. Counters that went
// backwards (iowait does on some kernels) count as no change. It returns 0
// when no time passed.
func BusyPercent(prev, cur CPUTimes) float64 {
	pb, pi := prev.busyIdle()
	cb, ci := cur.busyIdle()
	var db, di uint64
	if cb > pb {
		db = cb - pb
	}
	if ci > pi {
		di = ci - pi
	}
	if db+di == 0 || db+di < db {
		return 0
	}
	// Rounding can push the quotient of huge counts a hair above 100.
	return min(100, 100*float64(db)/float64(db+di))
}

// ParseProcStat reads the aggregate "cpu" line of /proc/stat. Kernels
// before 2.6.11 have only the first four fields; missing fields are 0. It
// fails if the line is missing or malformed, or its counters are so large
// their sum would overflow.
func ParseProcStat(r io.Reader) (CPUTimes, error) {
	var (
		t     CPUTimes
		found bool
		perr  error
	)
	err := scanLines(r, func(line string) bool {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			return true
		}
		found = true
		vals := f[1:]
		if len(vals) < 4 {
			perr = fmt.Errorf("cpu line has %d fields, want at least 4", len(vals))
			return false
		}
		dst := []*uint64{&t.User, &t.Nice, &t.System, &t.Idle, &t.IOWait, &t.IRQ, &t.SoftIRQ, &t.Steal}
		var sum uint64
		for i, p := range dst {
			if i >= len(vals) {
				break
			}
			v, err := strconv.ParseUint(vals[i], 10, 64)
			if err != nil {
				perr = fmt.Errorf("cpu line field %d: %w", i+1, err)
				return false
			}
			var carry uint64
			if sum, carry = bits.Add64(sum, v, 0); carry != 0 {
				perr = errors.New("cpu line counters overflow")
				return false
			}
			*p = v
		}
		return false
	})
	switch {
	case err != nil:
		return CPUTimes{}, err
	case perr != nil:
		return CPUTimes{}, perr
	case !found:
		return CPUTimes{}, errors.New(`no "cpu" line`)
	}
	return t, nil
}

// Meminfo is the device's memory from /proc/meminfo.
type Meminfo struct {
	// TotalBytes is MemTotal: the RAM the kernel manages.
	TotalBytes uint64
	// AvailableBytes is MemAvailable, or MemFree + Buffers + Cached on
	// kernels before 3.14 that do not report it.
	AvailableBytes uint64
}

// ParseMeminfo reads MemTotal and MemAvailable from /proc/meminfo. Values
// are in kB (KiB) when the unit is given, bytes otherwise. It fails if
// MemTotal is missing or a value it needs is malformed or overflows.
func ParseMeminfo(r io.Reader) (Meminfo, error) {
	vals := map[string]uint64{}
	want := map[string]bool{"MemTotal": true, "MemAvailable": true, "MemFree": true, "Buffers": true, "Cached": true}
	var perr error
	err := scanLines(r, func(line string) bool {
		key, rest, ok := strings.Cut(line, ":")
		if !ok || !want[key] {
			return true
		}
		f := strings.Fields(rest)
		if len(f) == 0 || len(f) > 2 {
			perr = fmt.Errorf("%s: malformed value %q", key, strings.TrimSpace(rest))
			return false
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			perr = fmt.Errorf("%s: %w", key, err)
			return false
		}
		if len(f) == 2 {
			if f[1] != "kB" {
				perr = fmt.Errorf("%s: unknown unit %q", key, f[1])
				return false
			}
			hi, lo := bits.Mul64(v, 1024)
			if hi != 0 {
				perr = fmt.Errorf("%s: value overflows", key)
				return false
			}
			v = lo
		}
		vals[key] = v
		return true
	})
	switch {
	case err != nil:
		return Meminfo{}, err
	case perr != nil:
		return Meminfo{}, perr
	}
	total, ok := vals["MemTotal"]
	if !ok {
		return Meminfo{}, errors.New("no MemTotal")
	}
	m := Meminfo{TotalBytes: total}
	if avail, ok := vals["MemAvailable"]; ok {
		m.AvailableBytes = avail
	} else {
		sum, c1 := bits.Add64(vals["MemFree"], vals["Buffers"], 0)
		sum, c2 := bits.Add64(sum, vals["Cached"], 0)
		if c1|c2 != 0 {
			return Meminfo{}, errors.New("MemFree + Buffers + Cached overflows")
		}
		m.AvailableBytes = sum
	}
	return m, nil
}

// ParseStatm returns the resident set size in bytes from /proc/[pid]/statm,
// whose second field counts pages of pageSize bytes. It fails if the field
// is missing or malformed or the size overflows.
func ParseStatm(r io.Reader, pageSize int) (uint64, error) {
	if pageSize <= 0 {
		return 0, fmt.Errorf("page size %d", pageSize)
	}
	var (
		rss  uint64
		perr = errors.New("empty")
	)
	err := scanLines(r, func(line string) bool {
		f := strings.Fields(line)
		if len(f) < 2 {
			perr = fmt.Errorf("%d fields, want at least 2", len(f))
			return false
		}
		pages, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			perr = fmt.Errorf("resident: %w", err)
			return false
		}
		hi, lo := bits.Mul64(pages, uint64(pageSize))
		if hi != 0 {
			perr = errors.New("resident size overflows")
			return false
		}
		rss, perr = lo, nil
		return false
	})
	if err != nil {
		return 0, err
	}
	return rss, perr
}
