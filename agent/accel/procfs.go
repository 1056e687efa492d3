package accel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits that keep the parsers cheap on any input. Real files are far
// smaller: /proc/cpuinfo of a 256-thread x86 server is about 400 KiB, its
// longest line (flags) under 4 KiB.
const (
	// maxProcFileBytes is the most a parser reads before giving up.
	maxProcFileBytes = 16 << 20
	// maxLineBytes is the longest line a parser accepts.
	maxLineBytes = 1 << 20
	// maxValueBytes truncates the strings kept from a file (model names).
	maxValueBytes = 256
	// maxDistinctModels bounds the models joined in [CPU.Model].
	maxDistinctModels = 8
)

var errTooLarge = fmt.Errorf("larger than %d bytes", maxProcFileBytes)

// cappedReader fails with errTooLarge once more than n bytes were read.
type cappedReader struct {
	r io.Reader
	n int64 // bytes still allowed
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.n < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > c.n+1 {
		p = p[:c.n+1]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	if c.n < 0 {
		return n, errTooLarge
	}
	return n, err
}

// scanKV calls fn with the key and value of every "key : value" line of r,
// both trimmed of blanks. Lines without a colon are passed with ok false.
func scanKV(r io.Reader, fn func(key, value string, ok bool)) error {
	sc := bufio.NewScanner(&cappedReader{r: r, n: maxProcFileBytes})
	sc.Buffer(make([]byte, 0, 4096), maxLineBytes)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		fn(strings.TrimSpace(k), strings.TrimSpace(v), ok)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line longer than %d bytes", maxLineBytes)
		}
		return err
	}
	return nil
}

// cleanValue makes a string from a system file safe to keep and show:
// valid UTF-8, printable characters only (no terminal escapes or bidi
// overrides), runs of blanks collapsed, at most maxValueBytes long.
func cleanValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxValueBytes {
		s = s[:maxValueBytes]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// ParseCPUInfo reads a Linux /proc/cpuinfo. It fills [CPU.Model] (from
// "model name" lines, or on ARM from the implementer and part numbers),
// [CPU.Board] and [CPU.LogicalCores] (the number of "processor" entries);
// Arch and UsableCores are left for the caller. It returns what it found
// together with an error when r cannot be read, a line is longer than
// 1 MiB, the input exceeds 16 MiB, or there is no processor entry. It
// never panics, whatever the input.
func ParseCPUInfo(r io.Reader) (CPU, error) {
	var (
		c      CPU
		models []string
		model  string // current processor's "model name"
		impl   string // current processor's "CPU implementer"
		part   string // current processor's "CPU part"
		hwName string // "Hardware", used as the board when there is no "Model"
	)
	flush := func() {
		m := model
		if (m == "" || strings.HasPrefix(m, "ARMv")) && part != "" {
			m = armCPUName(impl, part)
		}
		if m != "" && !slices.Contains(models, m) && len(models) < maxDistinctModels {
			models = append(models, m)
		}
		model, impl, part = "", "", ""
	}
	err := scanKV(r, func(key, value string, ok bool) {
		if !ok {
			return
		}
		switch key {
		case "processor":
			// x86 and ARM number their entries; old 32-bit ARM kernels also
			// have a "Processor" line (capital P) holding the model instead.
			if _, err := strconv.ParseUint(value, 10, 32); err != nil {
				return
			}
			flush()
			c.LogicalCores++
		case "model name":
			if model == "" {
				model = cleanValue(value)
			}
		case "Processor":
			if model == "" {
				model = cleanValue(value)
			}
		case "CPU implementer":
			impl = value
		case "CPU part":
			part = value
		case "Model":
			if c.Board == "" {
				c.Board = cleanValue(value)
			}
		case "Hardware":
			if hwName == "" {
				hwName = cleanValue(value)
			}
		}
	})
	flush()
	c.Model = strings.Join(models, " + ")
	if c.Board == "" {
		c.Board = hwName
	}
	if err != nil {
		return c, err
	}
	if c.LogicalCores == 0 {
		return c, errors.New("no processor entries")
	}
	return c, nil
}

// armImplementers names the CPU implementer codes of the Arm architecture
// (MIDR_EL1 bits 31:24) found in edge and server devices.
var armImplementers = map[uint64]string{
	0x41: "ARM",
	0x42: "Broadcom",
	0x43: "Cavium",
	0x48: "HiSilicon",
	0x4e: "NVIDIA",
	0x51: "Qualcomm",
	0x61: "Apple",
	0xc0: "Ampere",
}

// armParts names the part numbers (MIDR_EL1 bits 15:4) of common cores,
// keyed by implementer<<16 | part.
var armParts = map[uint64]string{
	0x41<<16 | 0xd03: "Cortex-A53",
	0x41<<16 | 0xd04: "Cortex-A35",
	0x41<<16 | 0xd05: "Cortex-A55",
	0x41<<16 | 0xd07: "Cortex-A57",
	0x41<<16 | 0xd08: "Cortex-A72",
	0x41<<16 | 0xd09: "Cortex-A73",
	0x41<<16 | 0xd0a: "Cortex-A75",
	0x41<<16 | 0xd0b: "Cortex-A76",
	0x41<<16 | 0xd0c: "Neoverse-N1",
	0x41<<16 | 0xd0d: "Cortex-A77",
	0x41<<16 | 0xd40: "Neoverse-V1",
	0x41<<16 | 0xd41: "Cortex-A78",
	0x41<<16 | 0xd42: "Cortex-A78AE",
	0x41<<16 | 0xd44: "Cortex-X1",
	0x41<<16 | 0xd46: "Cortex-A510",
	0x41<<16 | 0xd47: "Cortex-A710",
	0x41<<16 | 0xd48: "Cortex-X2",
	0x41<<16 | 0xd49: "Neoverse-N2",
	0x41<<16 | 0xd4f: "Neoverse-V2",
	0x4e<<16 | 0x003: "Denver 2",
	0x4e<<16 | 0x004: "Carmel",
	0xc0<<16 | 0xac3: "AmpereOne",
}

// armCPUName names an ARM core from the hexadecimal "CPU implementer" and
// "CPU part" values of /proc/cpuinfo, e.g. ("0x41", "0xd08") → "ARM
// Cortex-A72". Unknown codes are shown as numbers.
func armCPUName(impl, part string) string {
	i, ierr := strconv.ParseUint(impl, 0, 8)
	p, perr := strconv.ParseUint(part, 0, 12)
	if perr != nil {
		return ""
	}
	vendor := "ARM-compatible"
	if ierr == nil {
		if v, ok := armImplementers[i]; ok {
			vendor = v
		} else {
			vendor = fmt.Sprintf("implementer %#02x", i)
		}
		if name, ok := armParts[i<<16|p]; ok {
			return vendor + " " + name
		}
	}
	return fmt.Sprintf("%s part %#03x", vendor, p)
}

// ParseMeminfo reads a Linux /proc/meminfo. [Memory.AvailableBytes] is
// MemAvailable or, on kernels before 3.14 that lack it, the estimate
// MemFree + Buffers + Cached, at most MemTotal. It returns an error when
// MemTotal is missing or zero, a value it needs is malformed or overflows,
// or r cannot be read (see [ParseCPUInfo] for the size limits). It never
// panics, whatever the input.
func ParseMeminfo(r io.Reader) (Memory, error) {
	want := map[string]bool{"MemTotal": true, "MemAvailable": true, "MemFree": true, "Buffers": true, "Cached": true}
	vals := map[string]uint64{}
	var bad error
	err := scanKV(r, func(key, value string, ok bool) {
		if !ok || !want[key] || bad != nil {
			return
		}
		if _, dup := vals[key]; dup {
			return
		}
		n, err := parseMeminfoValue(value)
		if err != nil {
			bad = fmt.Errorf("%s: %w", key, err)
			return
		}
		vals[key] = n
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return Memory{}, err
	}
	m := Memory{TotalBytes: vals["MemTotal"]}
	if m.TotalBytes == 0 {
		return Memory{}, errors.New("no MemTotal")
	}
	if avail, ok := vals["MemAvailable"]; ok {
		m.AvailableBytes = avail
	} else {
		m.AvailableBytes = satAdd(satAdd(vals["MemFree"], vals["Buffers"]), vals["Cached"])
	}
	m.AvailableBytes = min(m.AvailableBytes, m.TotalBytes)
	return m, nil
}

// parseMeminfoValue parses "24684096 kB" (kB means KiB in meminfo) or a
// bare number into bytes.
func parseMeminfoValue(s string) (uint64, error) {
	num, unit, _ := strings.Cut(s, " ")
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", cleanValue(num))
	}
	switch strings.TrimSpace(unit) {
	case "":
		return n, nil
	case "kB":
		if n > math.MaxUint64/1024 {
			return 0, fmt.Errorf("%d kB overflows", n)
		}
		return n * 1024, nil
	default:
		return 0, fmt.Errorf("unknown unit %q", cleanValue(unit))
	}
}

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// parseOSRelease reads an os-release(5) file: KEY=value lines, values
// optionally quoted with shell-like escapes, # comments.
func parseOSRelease(r io.Reader) (map[string]string, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(&cappedReader{r: r, n: maxProcFileBytes})
	sc.Buffer(make([]byte, 0, 4096), maxLineBytes)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			q := v[0]
			v = v[1 : len(v)-1]
			if q == '"' {
				v = unescapeShell(v)
			}
		}
		kv[k] = cleanValue(v)
	}
	return kv, sc.Err()
}

// unescapeShell undoes the backslash escapes allowed inside double quotes:
// \" \\ \$ \`.
func unescapeShell(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
