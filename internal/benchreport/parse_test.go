package benchreport

import (
	"os"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	f, err := os.Open("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name  string
		n     int64
		unit  string
		value float64
	}{
		{"BenchmarkVerifyAssignment/baseline-ed25519", 21000, "verifications/s", 18181},
		{"BenchmarkVerifyAssignment/cold", 4000, "allocs/op", 140},
		{"BenchmarkVerifyAssignment/warm", 16000, "ns/op", 70000},
		{"BenchmarkFrontEnds/http-oip", 5000, "p99-x-bare", 2.5},
		{"BenchmarkDownload/1MiB/single", 3, "speed-vs-minio", 1},
		{"BenchmarkAddTelemetry", 2000, "x-raw-insert", 0.8333},
		{"BenchmarkFrontEndsThroughput/bare-infer", 212426, "in-flight", 8},
		{"BenchmarkFrontEndsThroughput/http-oip", 10000, "requests/s", 6500},
	}
	if len(out.Results) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(out.Results), len(want), out.Results)
	}
	for i, w := range want {
		r := out.Results[i]
		if r.Name != w.name || r.Iterations != w.n || r.Procs != 2 {
			t.Errorf("result %d = %s ×%d (procs %d), want %s ×%d (procs 2)", i, r.Name, r.Iterations, r.Procs, w.name, w.n)
		}
		if got, ok := r.Metrics[w.unit]; !ok || got != w.value {
			t.Errorf("%s %s = %v (present %v), want %v", r.Name, w.unit, got, ok, w.value)
		}
	}
	if len(out.Skips) != 1 || out.Skips[0].Name != "BenchmarkFootprint" || out.Skips[0].Reason != "mosquitto not found: run make deps" {
		t.Errorf("skips = %+v", out.Skips)
	}
	if out.Failed {
		t.Error("Failed set for a passing run")
	}
}

func TestParseCases(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantNames  []string
		wantFailed bool
		wantErr    bool
	}{
		{name: "empty", in: ""},
		{name: "no procs suffix", in: "BenchmarkX/a 10 5 ns/op\n", wantNames: []string{"BenchmarkX/a"}},
		{name: "name ending in a word after a dash", in: "BenchmarkV/baseline-ed25519-8 1 2 ns/op\n", wantNames: []string{"BenchmarkV/baseline-ed25519"}},
		{name: "failure", in: "--- FAIL: BenchmarkX\n    x_test.go:1: boom\nFAIL\n", wantFailed: true},
		{name: "odd figures", in: "BenchmarkX-2 10 5 ns/op 7\n", wantErr: true},
		{name: "bad value", in: "BenchmarkX-2 10 5x ns/op\n", wantErr: true},
		{name: "figures without a pending name are ignored", in: "   10 5 ns/op\n"},
		{name: "log lines ignored", in: "some log\nBenchmarkY-2 1 3 ns/op 4 MiB/s\nok  \tpkg\t1s\n", wantNames: []string{"BenchmarkY"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Parse(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			var names []string
			for _, r := range out.Results {
				names = append(names, r.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.wantNames, ",") {
				t.Errorf("names = %v, want %v", names, tt.wantNames)
			}
			if out.Failed != tt.wantFailed {
				t.Errorf("Failed = %v, want %v", out.Failed, tt.wantFailed)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile("testdata/bench.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add("")
	f.Add("BenchmarkX-2 10 5 ns/op 7\n")
	f.Add("BenchmarkX\n 10 NaN ns/op\n--- SKIP: BenchmarkZ")
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, r := range out.Results {
			if !strings.HasPrefix(r.Name, "Benchmark") || r.Metrics == nil {
				t.Fatalf("bad result %+v", r)
			}
		}
	})
}
