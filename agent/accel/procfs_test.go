package accel

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

func mustReadTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestParseCPUInfo(t *testing.T) {
	tests := []struct {
		name    string
		file    string // under testdata/, or
		input   string // inline
		want    CPU
		wantErr string
	}{
		{
			name: "x86_64 Intel",
			file: "cpuinfo-x86_64-core-i5.txt",
			want: CPU{Model: "Intel(R) Core(TM) i5-8365UE CPU @ 1.60GHz", LogicalCores: 4},
		},
		{
			name: "arm64 Raspberry Pi 4",
			file: "cpuinfo-arm64-rpi4.txt",
			want: CPU{Model: "ARM Cortex-A72", Board: "Raspberry Pi 4 Model B Rev 1.4", LogicalCores: 4},
		},
		{
			name: "arm64 big.LITTLE",
			file: "cpuinfo-arm64-rk3588.txt",
			want: CPU{Model: "ARM Cortex-A55 + ARM Cortex-A76", LogicalCores: 8},
		},
		{
			name: "arm 32-bit kernel",
			input: "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nBogoMIPS\t: 38.40\n" +
				"CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xd03\nCPU revision\t: 4\n\n" +
				"Hardware\t: BCM2835\nRevision\t: a02082\n",
			want: CPU{Model: "ARM Cortex-A53", Board: "BCM2835", LogicalCores: 1},
		},
		{
			name:  "unknown ARM implementer and part",
			input: "processor : 0\nCPU implementer : 0x6d\nCPU part : 0x0ff\n",
			want:  CPU{Model: "implementer 0x6d part 0x0ff", LogicalCores: 1},
		},
		{
			name:  "known implementer, unknown part",
			input: "processor : 0\nCPU implementer : 0x51\nCPU part : 0x801\n",
			want:  CPU{Model: "Qualcomm part 0x801", LogicalCores: 1},
		},
		{
			name:  "no model at all",
			input: "processor : 0\nprocessor : 1\n",
			want:  CPU{LogicalCores: 2},
		},
		{
			name:  "control characters and blanks in the model are dropped",
			input: "processor : 0\nmodel name : \x1b[31m  Evil\tCPU \x00 \xff\n",
			want:  CPU{Model: "[31m Evil CPU", LogicalCores: 1},
		},
		{
			name:    "empty",
			input:   "",
			wantErr: "no processor entries",
		},
		{
			name:    "not cpuinfo",
			input:   "MemTotal: 1 kB\n",
			wantErr: "no processor entries",
		},
		{
			name:    "line too long",
			input:   "processor : 0\nflags : " + strings.Repeat("x", maxLineBytes) + "\n",
			want:    CPU{LogicalCores: 1},
			wantErr: "line longer than",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.input)
			if tt.file != "" {
				in = mustReadTestdata(t, tt.file)
			}
			got, err := ParseCPUInfo(bytes.NewReader(in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseCPUInfoReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := ParseCPUInfo(iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
}

func TestParseCPUInfoSizeLimit(t *testing.T) {
	line := "processor : 0\n"
	in := strings.NewReader(strings.Repeat(line, maxProcFileBytes/len(line)+1))
	got, err := ParseCPUInfo(in)
	if !errors.Is(err, errTooLarge) {
		t.Fatalf("err = %v, want %v", err, errTooLarge)
	}
	if got.LogicalCores == 0 {
		t.Error("no partial result")
	}
}

func TestParseMeminfo(t *testing.T) {
	const kiB = 1024
	tests := []struct {
		name    string
		file    string
		input   string
		want    Memory
		wantErr string
	}{
		{
			name: "x86_64",
			file: "meminfo-x86_64.txt",
			want: Memory{TotalBytes: 16248312 * kiB, AvailableBytes: 13502876 * kiB},
		},
		{
			name: "arm64 Raspberry Pi 4",
			file: "meminfo-arm64-rpi4.txt",
			want: Memory{TotalBytes: 3880296 * kiB, AvailableBytes: 3418844 * kiB},
		},
		{
			name: "kernel without MemAvailable",
			file: "meminfo-linux-3.10-no-memavailable.txt",
			want: Memory{TotalBytes: 1018400 * kiB, AvailableBytes: (301232 + 40156 + 388644) * kiB},
		},
		{
			name:  "estimate capped at total",
			input: "MemTotal: 10 kB\nMemFree: 8 kB\nCached: 8 kB\n",
			want:  Memory{TotalBytes: 10 * kiB, AvailableBytes: 10 * kiB},
		},
		{
			name:  "first of duplicate keys wins",
			input: "MemTotal: 10 kB\nMemAvailable: 4 kB\nMemTotal: 99 kB\n",
			want:  Memory{TotalBytes: 10 * kiB, AvailableBytes: 4 * kiB},
		},
		{
			name:  "malformed lines of other keys are ignored",
			input: "garbage\nHugePages_Total: lots\nMemTotal: 10 kB\nMemAvailable: 4 kB\n",
			want:  Memory{TotalBytes: 10 * kiB, AvailableBytes: 4 * kiB},
		},
		{
			name:    "empty",
			input:   "",
			wantErr: "no MemTotal",
		},
		{
			name:    "zero total",
			input:   "MemTotal: 0 kB\n",
			wantErr: "no MemTotal",
		},
		{
			name:    "not a number",
			input:   "MemTotal: many kB\n",
			wantErr: `MemTotal: "many" is not a number`,
		},
		{
			name:    "negative",
			input:   "MemTotal: -5 kB\n",
			wantErr: "not a number",
		},
		{
			name:    "unknown unit",
			input:   "MemTotal: 5 MB\n",
			wantErr: `unknown unit "MB"`,
		},
		{
			name:    "overflow",
			input:   "MemTotal: 18446744073709551615 kB\n",
			wantErr: "overflows",
		},
		{
			name:    "line too long",
			input:   "MemTotal: 1 kB\nX: " + strings.Repeat("9", maxLineBytes) + "\n",
			wantErr: "line longer than",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.input)
			if tt.file != "" {
				in = mustReadTestdata(t, tt.file)
			}
			got, err := ParseMeminfo(bytes.NewReader(in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseOSRelease(t *testing.T) {
	kv, err := parseOSRelease(bytes.NewReader(mustReadTestdata(t, "os-release-debian12.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := kv["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)"; got != want {
		t.Errorf("PRETTY_NAME = %q, want %q", got, want)
	}
	if got, want := kv["VERSION_CODENAME"], "bookworm"; got != want {
		t.Errorf("VERSION_CODENAME = %q, want %q", got, want)
	}
	kv, err = parseOSRelease(strings.NewReader("# comment\nNAME='Single quoted'\nPRETTY_NAME=\"Say \\\"hi\\\" \\$HOME\"\n=x\nbroken\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := kv["NAME"], "Single quoted"; got != want {
		t.Errorf("NAME = %q, want %q", got, want)
	}
	if got, want := kv["PRETTY_NAME"], `Say "hi" $HOME`; got != want {
		t.Errorf("PRETTY_NAME = %q, want %q", got, want)
	}
	if len(kv) != 2 {
		t.Errorf("parsed %v, want 2 keys", kv)
	}
}

// fuzzSeeds adds the testdata files starting with prefix and some corrupt
// inputs to f's corpus.
func fuzzSeeds(f *testing.F, prefix string) {
	files, err := filepath.Glob(filepath.Join("testdata", prefix+"*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata/%s* seeds: %v", prefix, err)
	}
	for _, name := range files {
		f.Add(mustReadTestdata(f, filepath.Base(name)))
	}
	for _, s := range []string{
		"", ":", "\n\n", "processor", "processor : 0", "processor : x\n", "CPU part : 0xd08\n",
		"CPU implementer : 0x41\nCPU part : 0xfffff\nprocessor : 0\n", "MemTotal:", "MemTotal: 1",
		"MemTotal: 1 kB\nMemAvailable: 2 kB\n", "MemTotal: 99999999999999999999 kB", "MemTotal:  kB",
		"\xff\xfe:\x00", "model name : \xff\xff\n",
	} {
		f.Add([]byte(s))
	}
}

func FuzzParseCPUInfo(f *testing.F) {
	fuzzSeeds(f, "cpuinfo-")
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseCPUInfo(bytes.NewReader(in))
		if err == nil && c.LogicalCores <= 0 {
			t.Fatalf("no error but %d cores", c.LogicalCores)
		}
		if c.LogicalCores < 0 {
			t.Fatalf("%d cores", c.LogicalCores)
		}
		for _, s := range []string{c.Model, c.Board} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 %q", s)
			}
			if len(s) > maxDistinctModels*(maxValueBytes+3) {
				t.Fatalf("%d-byte string", len(s))
			}
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("control character in %q", s)
			}
		}
	})
}

func FuzzParseMeminfo(f *testing.F) {
	fuzzSeeds(f, "meminfo-")
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ParseMeminfo(bytes.NewReader(in))
		if err != nil {
			if m != (Memory{}) {
				t.Fatalf("error %v with a result %+v", err, m)
			}
			return
		}
		if m.TotalBytes == 0 || m.AvailableBytes > m.TotalBytes {
			t.Fatalf("inconsistent %+v", m)
		}
	})
}

func FuzzParseOSRelease(f *testing.F) {
	fuzzSeeds(f, "os-release-")
	f.Fuzz(func(t *testing.T, in []byte) {
		kv, err := parseOSRelease(bytes.NewReader(in))
		if err != nil {
			return
		}
		for k, v := range kv {
			if k == "" || !utf8.ValidString(v) {
				t.Fatalf("bad entry %q=%q", k, v)
			}
		}
	})
}
