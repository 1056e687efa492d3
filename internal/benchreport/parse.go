package benchreport

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Result is one benchmark result line of `go test -bench` output.
type Result struct {
	// Name is the benchmark's full name without the "-GOMAXPROCS"
	// suffix, e.g. "BenchmarkDownload/64MiB/single".
	Name string
	// Procs is the GOMAXPROCS suffix (1 when the line had none).
	Procs int
	// Iterations is b.N.
	Iterations int64
	// Metrics maps each unit ("ns/op", "B/op", and every unit given to
	// b.ReportMetric, e.g. "agent/bare") to its value.
	Metrics map[string]float64
}

// Skip is a benchmark that skipped itself, with its reason.
type Skip struct {
	Name   string
	Reason string
}

// Output is what Parse found in one run's output.
type Output struct {
	Results []Result
	Skips   []Skip
	// Failed reports a "--- FAIL" or "FAIL" line.
	Failed bool
}

var (
	// A result line: name, iterations, then value/unit pairs. The name
	// is alone on its line when the benchmark wrote to stdout before its
	// result; the figures then follow on a line of their own.
	resultLine = regexp.MustCompile(`^(Benchmark\S+)\s+(\d+)\s+(.+)$`)
	nameLine   = regexp.MustCompile(`^(Benchmark\S+)\s*$`)
	figureLine = regexp.MustCompile(`^\s*(\d+)\s+(\d.*)$`)
	skipLine   = regexp.MustCompile(`^\s*--- SKIP: (Benchmark\S+)`)
	procsSufx  = regexp.MustCompile(`-(\d+)$`)
)

// Parse reads `go test -bench` text output (what -test.v=false prints,
// with benchmarks' log lines interleaved) and returns its results in
// order. Lines that are neither results nor skips are ignored, so the
// output of the tests' own logging does not disturb it; a result line
// whose figures do not parse is an error naming the line.
func Parse(r io.Reader) (Output, error) {
	var out Output
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	pending := ""  // a name whose figures are on a later line
	skipping := "" // a skipped benchmark whose reason is on the next line
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		if skipping != "" {
			out.Skips = append(out.Skips, Skip{Name: skipping, Reason: skipReason(line)})
			skipping = ""
			continue
		}
		switch {
		case strings.HasPrefix(line, "--- FAIL") || line == "FAIL" || strings.HasPrefix(line, "FAIL\t"):
			out.Failed = true
		case skipLine.MatchString(line):
			skipping = trimProcs(skipLine.FindStringSubmatch(line)[1])
		case resultLine.MatchString(line):
			m := resultLine.FindStringSubmatch(line)
			res, err := newResult(m[1], m[2], m[3])
			if err != nil {
				return out, fmt.Errorf("line %d %q: %w", lineNo, line, err)
			}
			out.Results = append(out.Results, res)
			pending = ""
		case nameLine.MatchString(line):
			pending = nameLine.FindStringSubmatch(line)[1]
		case pending != "" && figureLine.MatchString(line):
			m := figureLine.FindStringSubmatch(line)
			res, err := newResult(pending, m[1], m[2])
			if err != nil {
				return out, fmt.Errorf("line %d %q: %w", lineNo, line, err)
			}
			out.Results = append(out.Results, res)
			pending = ""
		}
	}
	if skipping != "" {
		out.Skips = append(out.Skips, Skip{Name: skipping})
	}
	return out, sc.Err()
}

// skipReason strips the "file_test.go:12: " prefix of a skip message.
func skipReason(line string) string {
	line = strings.TrimSpace(line)
	if file, rest, ok := strings.Cut(line, ": "); ok && strings.Contains(file, ".go:") {
		return rest
	}
	return line
}

func trimProcs(name string) string {
	if m := procsSufx.FindStringSubmatchIndex(name); m != nil {
		return name[:m[0]]
	}
	return name
}

func newResult(name, iterations, figures string) (Result, error) {
	res := Result{Name: name, Procs: 1, Metrics: map[string]float64{}}
	if m := procsSufx.FindStringSubmatch(name); m != nil {
		res.Procs, _ = strconv.Atoi(m[1])
		res.Name = trimProcs(name)
	}
	var err error
	if res.Iterations, err = strconv.ParseInt(iterations, 10, 64); err != nil {
		return res, fmt.Errorf("iterations: %w", err)
	}
	fields := strings.Fields(figures)
	if len(fields)%2 != 0 {
		return res, fmt.Errorf("figures are not value/unit pairs")
	}
	for i := 0; i < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return res, fmt.Errorf("value of %s: %w", fields[i+1], err)
		}
		res.Metrics[fields[i+1]] = v
	}
	return res, nil
}
