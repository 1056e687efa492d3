package telemetry

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustRead(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    CPUTimes
		wantErr bool
	}{
		{"debian 12 fixture", mustRead(t, "proc-debian12/stat"),
			CPUTimes{User: 259329, Nice: 0, System: 65920, Idle: 249164, IOWait: 2174, IRQ: 0, SoftIRQ: 2355, Steal: 1372}, false},
		{"linux 2.4, four fields", mustRead(t, "stat-linux-2.4-four-fields.txt"),
			CPUTimes{User: 1000, Nice: 20, System: 300, Idle: 8680}, false},
		{"guest fields ignored", "cpu 1 2 3 4 5 6 7 8 9 10\n", CPUTimes{1, 2, 3, 4, 5, 6, 7, 8}, false},
		{"cpu line not first", "intr 1 2\ncpu  1 2 3 4\n", CPUTimes{User: 1, Nice: 2, System: 3, Idle: 4}, false},
		{"per-cpu lines only", "cpu0 1 2 3 4\ncpu1 1 2 3 4\n", CPUTimes{}, true},
		{"empty", "", CPUTimes{}, true},
		{"too few fields", "cpu 1 2 3\n", CPUTimes{}, true},
		{"not a number", "cpu 1 2 x 4\n", CPUTimes{}, true},
		{"negative", "cpu 1 2 -3 4\n", CPUTimes{}, true},
		{"overflowing sum", "cpu 18446744073709551615 1 0 0\n", CPUTimes{}, true},
		{"line too long", "cpu " + strings.Repeat("1", maxProcLineBytes) + "\n", CPUTimes{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProcStat(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestBusyPercent(t *testing.T) {
	tests := []struct {
		name      string
		prev, cur CPUTimes
		want      float64
	}{
		{"since boot", CPUTimes{}, CPUTimes{User: 30, System: 10, Idle: 50, IOWait: 10}, 40},
		{"delta", CPUTimes{User: 30, Idle: 70}, CPUTimes{User: 90, Idle: 110}, 60},
		{"all busy", CPUTimes{User: 1}, CPUTimes{User: 5, Steal: 5}, 100},
		{"no time passed", CPUTimes{User: 5, Idle: 5}, CPUTimes{User: 5, Idle: 5}, 0},
		{"iowait went backwards", CPUTimes{User: 10, Idle: 10, IOWait: 50}, CPUTimes{User: 20, Idle: 40, IOWait: 10}, 100},
		{"counters reset", CPUTimes{User: 100, Idle: 100}, CPUTimes{User: 1, Idle: 1}, 0},
		{"huge counts stay within 100 (found by fuzzing)", CPUTimes{}, CPUTimes{User: 7000104070109250700, Nice: 91700}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BusyPercent(tt.prev, tt.cur); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("BusyPercent = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Meminfo
		wantErr bool
	}{
		{"debian 12 fixture", mustRead(t, "proc-debian12/meminfo"), Meminfo{TotalBytes: 24684096 << 10, AvailableBytes: 22449972 << 10}, false},
		{"no MemAvailable (linux 3.10)", mustRead(t, "meminfo-linux-3.10-no-memavailable.txt"),
			Meminfo{TotalBytes: 1018400 << 10, AvailableBytes: (301232 + 40156 + 512000) << 10}, false},
		{"no unit means bytes", "MemTotal: 4096\nMemAvailable: 1024\n", Meminfo{TotalBytes: 4096, AvailableBytes: 1024}, false},
		{"irrelevant malformed lines ignored", "garbage\nHugePages_Total: x y z\nMemTotal: 1 kB\n", Meminfo{TotalBytes: 1024}, false},
		{"no MemTotal", "MemFree: 10 kB\n", Meminfo{}, true},
		{"empty", "", Meminfo{}, true},
		{"bad number", "MemTotal: 12a kB\n", Meminfo{}, true},
		{"missing value", "MemTotal:\n", Meminfo{}, true},
		{"unknown unit", "MemTotal: 1 MB\n", Meminfo{}, true},
		{"too many fields", "MemTotal: 1 kB extra\n", Meminfo{}, true},
		{"kB overflow", "MemTotal: 18446744073709551615 kB\n", Meminfo{}, true},
		{"fallback sum overflow", "MemTotal: 1\nMemFree: 18446744073709551615\nCached: 1\n", Meminfo{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMeminfo(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatm(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		pageSize int
		want     uint64
		wantErr  bool
	}{
		{"debian 12 fixture", mustRead(t, "proc-debian12/self/statm"), 4096, 445 * 4096, false},
		{"large pages", "10 3 0 0 0 0 0\n", 65536, 3 * 65536, false},
		{"empty", "", 4096, 0, true},
		{"one field", "765\n", 4096, 0, true},
		{"not a number", "765 x\n", 4096, 0, true},
		{"overflow", "1 18446744073709551615\n", 4096, 0, true},
		{"bad page size", "1 2\n", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStatm(strings.NewReader(tt.in), tt.pageSize)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add(mustRead(f, "proc-debian12/stat"))
	f.Add(mustRead(f, "stat-linux-2.4-four-fields.txt"))
	f.Add("")
	f.Add("cpu\n")
	f.Add("cpu 18446744073709551615 18446744073709551615 0 0\n")
	f.Add("cpu 1 2 3 4 5 6 7 8 9 10 11 12\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseProcStat(strings.NewReader(in))
		if err != nil {
			if got != (CPUTimes{}) {
				t.Fatalf("error %v with non-zero result %+v", err, got)
			}
			return
		}
		if p := BusyPercent(CPUTimes{}, got); p < 0 || p > 100 || math.IsNaN(p) {
			t.Fatalf("BusyPercent since boot = %v for %+v", p, got)
		}
	})
}

func FuzzParseMeminfo(f *testing.F) {
	f.Add(mustRead(f, "proc-debian12/meminfo"))
	f.Add(mustRead(f, "meminfo-linux-3.10-no-memavailable.txt"))
	f.Add("")
	f.Add("MemTotal:\n")
	f.Add("MemTotal: 18446744073709551615 kB\n")
	f.Add("MemTotal: 1\nMemFree: 18446744073709551615\nBuffers: 1\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseMeminfo(strings.NewReader(in))
		if err != nil && got != (Meminfo{}) {
			t.Fatalf("error %v with non-zero result %+v", err, got)
		}
	})
}

func FuzzParseStatm(f *testing.F) {
	f.Add(mustRead(f, "proc-debian12/self/statm"), 4096)
	f.Add("", 4096)
	f.Add("1 18446744073709551615", 4096)
	f.Add("1 2", -1)
	f.Fuzz(func(t *testing.T, in string, pageSize int) {
		got, err := ParseStatm(strings.NewReader(in), pageSize)
		if err != nil && got != 0 {
			t.Fatalf("error %v with result %d", err, got)
		}
	})
}
