package telemetry

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/report"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// promBuffer is a bytes.Buffer with a substring test.
type promBuffer struct{ bytes.Buffer }

func (b *promBuffer) contains(s string) bool { return strings.Contains(b.String(), s) }

// Exposition format 0.0.4 checker: a small, strict parser of what we write.

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

type expSample struct {
	name   string
	labels map[string]string
	value  float64
}

type expFamily struct {
	name, typ, help string
	samples         []expSample
}

// parseLabels parses `{a="x",b="y"}` at the start of s and returns the
// labels and the rest of s.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	if !strings.HasPrefix(s, "{") {
		return labels, s, nil
	}
	s = s[1:]
	for {
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		name, rest, ok := strings.Cut(s, `="`)
		if !ok || !labelNameRE.MatchString(name) {
			return nil, "", fmt.Errorf("bad label name in %q", s)
		}
		if _, dup := labels[name]; dup {
			return nil, "", fmt.Errorf("label %q twice", name)
		}
		var val strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\n' {
				return nil, "", fmt.Errorf("raw newline in label %q", name)
			}
			if rest[i] != '\\' {
				val.WriteByte(rest[i])
				continue
			}
			i++
			if i == len(rest) {
				return nil, "", fmt.Errorf("dangling escape in label %q", name)
			}
			switch rest[i] {
			case '\\':
				val.WriteByte('\\')
			case '"':
				val.WriteByte('"')
			case 'n':
				val.WriteByte('\n')
			default:
				return nil, "", fmt.Errorf("bad escape \\%c in label %q", rest[i], name)
			}
		}
		if i == len(rest) {
			return nil, "", fmt.Errorf("unterminated value of label %q", name)
		}
		labels[name] = val.String()
		s = rest[i+1:]
		switch {
		case strings.HasPrefix(s, ","):
			s = s[1:]
		case strings.HasPrefix(s, "}"):
		default:
			return nil, "", fmt.Errorf("expected , or } after label %q, got %q", name, s)
		}
	}
}

// labelKey is a canonical string of labels without the named ones.
func labelKey(labels map[string]string, without ...string) string {
	var keys []string
	for k := range labels {
		if !slices.Contains(without, k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, labels[k])
	}
	return b.String()
}

// checkExposition parses text and reports every violation of the format
// and of counter and histogram semantics.
func checkExposition(t *testing.T, text string) map[string]*expFamily {
	t.Helper()
	if text != "" && !strings.HasSuffix(text, "\n") {
		t.Error("exposition does not end with a newline")
	}
	families := map[string]*expFamily{}
	var cur *expFamily
	seen := map[string]bool{}
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n++
		switch {
		case strings.HasPrefix(line, "# HELP "), strings.HasPrefix(line, "# TYPE "):
			f := strings.SplitN(line[len("# HELP "):], " ", 2)
			if len(f) != 2 || !metricNameRE.MatchString(f[0]) {
				t.Errorf("line %d: malformed %q", n, line)
				continue
			}
			fam := families[f[0]]
			if fam == nil {
				fam = &expFamily{name: f[0]}
				families[f[0]] = fam
			} else if fam != cur {
				t.Errorf("line %d: family %s is not contiguous", n, f[0])
			}
			if len(fam.samples) > 0 {
				t.Errorf("line %d: %s metadata after its samples", n, f[0])
			}
			if strings.HasPrefix(line, "# HELP ") {
				if fam.help != "" {
					t.Errorf("line %d: second HELP for %s", n, f[0])
				}
				fam.help = f[1]
			} else {
				if fam.typ != "" {
					t.Errorf("line %d: second TYPE for %s", n, f[0])
				}
				if !slices.Contains([]string{"counter", "gauge", "histogram", "summary", "untyped"}, f[1]) {
					t.Errorf("line %d: unknown type %q", n, f[1])
				}
				fam.typ = f[1]
			}
			cur = fam
		case strings.HasPrefix(line, "#"), line == "":
			t.Errorf("line %d: unexpected %q (we write no comments or blank lines)", n, line)
		default:
			end := strings.IndexAny(line, "{ ")
			if end < 0 {
				t.Errorf("line %d: no value in %q", n, line)
				continue
			}
			name := line[:end]
			labels, rest, err := parseLabels(line[end:])
			if err != nil {
				t.Errorf("line %d: %v in %q", n, err, line)
				continue
			}
			fields := strings.Fields(rest)
			if !strings.HasPrefix(rest, " ") || len(fields) != 1 {
				t.Errorf("line %d: want exactly one value after the labels in %q", n, line)
				continue
			}
			v, err := strconv.ParseFloat(fields[0], 64)
			if err != nil {
				t.Errorf("line %d: value: %v", n, err)
				continue
			}
			if cur == nil || cur.typ == "" || cur.help == "" {
				t.Errorf("line %d: sample %s without HELP and TYPE", n, name)
				continue
			}
			ok := name == cur.name
			if cur.typ == "histogram" {
				ok = slices.Contains([]string{cur.name + "_bucket", cur.name + "_sum", cur.name + "_count"}, name)
			}
			if !ok {
				t.Errorf("line %d: sample %s outside its family (current %s)", n, name, cur.name)
				continue
			}
			key := name + "{" + labelKey(labels) + "}"
			if seen[key] {
				t.Errorf("line %d: duplicate series %s", n, key)
			}
			seen[key] = true
			cur.samples = append(cur.samples, expSample{name: name, labels: labels, value: v})
		}
	}
	for _, f := range families {
		switch f.typ {
		case "counter":
			if !strings.HasSuffix(f.name, "_total") {
				t.Errorf("counter %s does not end in _total", f.name)
			}
			for _, s := range f.samples {
				if s.value < 0 || math.IsNaN(s.value) {
					t.Errorf("counter %s%v = %v", s.name, s.labels, s.value)
				}
			}
		case "histogram":
			checkHistogram(t, f)
		}
	}
	return families
}

func checkHistogram(t *testing.T, f *expFamily) {
	t.Helper()
	type series struct {
		les, counts []float64
		sum, count  *float64
	}
	all := map[string]*series{}
	get := func(labels map[string]string) *series {
		k := labelKey(labels, "le")
		if all[k] == nil {
			all[k] = &series{}
		}
		return all[k]
	}
	for _, s := range f.samples {
		sr := get(s.labels)
		v := s.value
		switch s.name {
		case f.name + "_bucket":
			le, ok := s.labels["le"]
			if !ok {
				t.Errorf("%s: bucket without le", f.name)
				continue
			}
			b, err := strconv.ParseFloat(le, 64)
			if err != nil {
				t.Errorf("%s: le %q: %v", f.name, le, err)
				continue
			}
			sr.les = append(sr.les, b)
			sr.counts = append(sr.counts, v)
		case f.name + "_sum":
			sr.sum = &v
		case f.name + "_count":
			sr.count = &v
		}
	}
	for k, sr := range all {
		if len(sr.les) == 0 || !math.IsInf(sr.les[len(sr.les)-1], 1) {
			t.Errorf("%s{%s}: last bucket is not +Inf: %v", f.name, k, sr.les)
			continue
		}
		for i := 1; i < len(sr.les); i++ {
			if sr.les[i] <= sr.les[i-1] {
				t.Errorf("%s{%s}: le not increasing: %v", f.name, k, sr.les)
			}
			if sr.counts[i] < sr.counts[i-1] {
				t.Errorf("%s{%s}: cumulative counts decrease: %v", f.name, k, sr.counts)
			}
		}
		if sr.count == nil || sr.sum == nil {
			t.Errorf("%s{%s}: _sum or _count missing", f.name, k)
			continue
		}
		if *sr.count != sr.counts[len(sr.counts)-1] {
			t.Errorf("%s{%s}: +Inf bucket %v != _count %v", f.name, k, sr.counts[len(sr.counts)-1], *sr.count)
		}
		if *sr.sum < 0 {
			t.Errorf("%s{%s}: negative _sum %v", f.name, k, *sr.sum)
		}
	}
}

// goldenRecorder returns a Recorder with a fixed history, including a
// model name that needs escaping.
func goldenRecorder() *Recorder {
	r := NewRecorder(Options{Classify: testClassifier()})
	r.Observe("vibration", "1.2.0", ProviderCPU, 3*time.Millisecond, 2*time.Millisecond, nil)
	r.Observe("vibration", "1.2.0", ProviderCPU, 300*time.Microsecond, 250*time.Microsecond, nil)
	r.Observe("vibration", "1.2.0", ProviderCPU, 12*time.Second, 11*time.Second, nil)
	r.Observe("vibration", "1.2.0", ProviderCPU, time.Millisecond, 0, errInvalidInput)
	r.Observe("vibration", "", ProviderCPU, 0, 0, errBusy)
	r.ColdStart("vibration", "1.2.0", 150*time.Millisecond)
	r.Shadow("vibration", "1.3.0", true, 0.001, 4*time.Millisecond)
	r.Shadow("vibration", "1.3.0", false, 0.25, 6*time.Millisecond)
	r.Observe("vision", "2.0.0", ProviderCUDA, 25*time.Millisecond, 20*time.Millisecond, nil)
	r.Rejected("vision")
	r.Observe("we\"ird\\model\nname", "0.1.0", ProviderCPU, 100*time.Microsecond, 50*time.Microsecond, errRun)
	r.SetDeviceStats(report.DeviceStats{
		CPUPercent: 37.5, MemoryTotalBytes: 8 << 30, MemoryAvailableBytes: 5 << 30, ProcessRSSBytes: 123 << 20,
		Goroutines: 42, UptimeSeconds: 3600.5,
		GPUs: []report.GPUStats{{Index: 0, UtilizationPercent: 61, MemoryUsedBytes: 2 << 30, MemoryTotalBytes: 16 << 30}},
	})
	return r
}

func TestWritePrometheusGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := goldenRecorder().WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	checkExposition(t, buf.String())

	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("exposition differs from %s (run go test -update after checking the change):\n%s", golden, buf.String())
	}
}

func TestWritePrometheusSemantics(t *testing.T) {
	var buf bytes.Buffer
	if err := goldenRecorder().WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	fams := checkExposition(t, buf.String())
	value := func(family, sample string, labels map[string]string) float64 {
		t.Helper()
		f := fams[family]
		if f == nil {
			t.Fatalf("no family %s", family)
		}
		for _, s := range f.samples {
			if s.name == sample && labelKey(s.labels) == labelKey(labels) {
				return s.value
			}
		}
		t.Fatalf("no sample %s%v", sample, labels)
		return 0
	}
	vib := map[string]string{"model": "vibration", "version": "1.2.0"}
	tests := []struct {
		name           string
		family, sample string
		labels         map[string]string
		want           float64
	}{
		{"requests include failures", "modelfleet_requests_total", "modelfleet_requests_total", vib, 5},
		{"busy error", "modelfleet_request_errors_total", "modelfleet_request_errors_total",
			map[string]string{"model": "vibration", "version": "1.2.0", "kind": "busy"}, 1},
		{"latency count is successes", "modelfleet_request_duration_seconds", "modelfleet_request_duration_seconds_count", vib, 3},
		{"latency sum in seconds", "modelfleet_request_duration_seconds", "modelfleet_request_duration_seconds_sum", vib, 12.0033},
		{"bucket le=0.0005", "modelfleet_request_duration_seconds", "modelfleet_request_duration_seconds_bucket",
			map[string]string{"model": "vibration", "version": "1.2.0", "le": "0.0005"}, 1},
		{"bucket le=10 excludes 12 s", "modelfleet_request_duration_seconds", "modelfleet_request_duration_seconds_bucket",
			map[string]string{"model": "vibration", "version": "1.2.0", "le": "10"}, 2},
		{"gpu compute", "modelfleet_compute_seconds_total", "modelfleet_compute_seconds_total",
			map[string]string{"model": "vision", "version": "2.0.0", "provider": "gpu"}, 0.02},
		{"queue rejections from Observe and Rejected", "modelfleet_queue_rejections_total", "modelfleet_queue_rejections_total",
			map[string]string{"model": "vision"}, 1},
		{"escaped model name round-trips", "modelfleet_requests_total", "modelfleet_requests_total",
			map[string]string{"model": "we\"ird\\model\nname", "version": "0.1.0"}, 1},
		{"shadow agreements", "modelfleet_shadow_agreements_total", "modelfleet_shadow_agreements_total",
			map[string]string{"model": "vibration", "version": "1.3.0"}, 1},
		{"gpu gauge", "modelfleet_gpu_utilization_percent", "modelfleet_gpu_utilization_percent", map[string]string{"gpu": "0"}, 61},
		{"memory gauge", "modelfleet_device_memory_total_bytes", "modelfleet_device_memory_total_bytes", map[string]string{}, 8 << 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := value(tt.family, tt.sample, tt.labels); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("%s%v = %v, want %v", tt.sample, tt.labels, got, tt.want)
			}
		})
	}
}

func TestWritePrometheusEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := NewRecorder(Options{}).WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	checkExposition(t, buf.String())
	if strings.Contains(buf.String(), "modelfleet_device_") {
		t.Error("device gauges written before any device stats")
	}
}

func TestEscapeLabel(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{`a"b`, `a\"b`},
		{`a\b`, `a\\b`},
		{"a\nb", `a\nb`},
		{`\"` + "\n", `\\\"\n`},
		{"bad\xffutf8", "bad\uFFFDutf8"},
	}
	for _, tt := range tests {
		if got := escapeLabel(tt.in); got != tt.want {
			t.Errorf("escapeLabel(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(goldenRecorder().Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != PrometheusContentType {
		t.Errorf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	checkExposition(t, string(body))
	if !strings.Contains(string(body), `modelfleet_requests_total{model="vibration",version="1.2.0"} 5`) {
		t.Errorf("body lacks the vibration request count:\n%s", body)
	}
}
