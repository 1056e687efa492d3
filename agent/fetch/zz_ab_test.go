package fetch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

type variant struct {
	name string
	set  func()
	cfg  Config
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func minioPid(dir string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(b), dir) && strings.Contains(string(b), "minio") {
			return pid
		}
	}
	return 0
}

func cpuPid(pid int) time.Duration {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	u, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(u+st) * 10 * time.Millisecond
}

func TestZZAB(t *testing.T) {
	if os.Getenv("ZZAB") == "" {
		t.Skip()
	}
	s3 := testenv.MinIO(t)
	mpid := minioPid(s3.Dir)
	ctx := context.Background()
	iters, _ := strconv.Atoi(os.Getenv("ZZITERS"))
	if iters == 0 {
		iters = 8
	}
	reset := func() {
		knobWB, knobWBEvery, knobBuf, knobStat, knobMem, hashChunkBytes, knobHWB = true, writebackEveryBytes, copyBufBytes, false, false, 256<<10, false
	}
	single := Config{Concurrency: 1}
	par := Config{Concurrency: 4, PartSizeBytes: 16 << 20, ParallelMinBytes: 32 << 20}
	all := map[string]variant{
		"single":    {"single", func() {}, single},
		"nowb":      {"nowb", func() { knobWB = false }, single},
		"wb4":       {"wb4", func() { knobWBEvery = 4 << 20 }, single},
		"wb16":      {"wb16", func() { knobWBEvery = 16 << 20 }, single},
		"wb32":      {"wb32", func() { knobWBEvery = 32 << 20 }, single},
		"buf256k":   {"buf256k", func() { knobBuf = 256 << 10 }, single},
		"buf4m":     {"buf4m", func() { knobBuf = 4 << 20 }, single},
		"stat":      {"stat", func() { knobStat = true }, single},
		"par":       {"par", func() {}, par},
		"hwb":       {"hwb", func() { knobHWB = true }, single},
		"par-hwb":   {"par-hwb", func() { knobHWB = true }, par},
		"buf128k":   {"buf128k", func() { knobBuf = 128 << 10 }, single},
		"buf64k":    {"buf64k", func() { knobBuf = 64 << 10 }, single},
		"buf32k":    {"buf32k", func() { knobBuf = 32 << 10 }, single},
		"b256h256":  {"b256h256", func() { knobBuf = 256 << 10; hashChunkBytes = 256 << 10 }, single},
		"b128h256":  {"b128h256", func() { knobBuf = 128 << 10; hashChunkBytes = 256 << 10 }, single},
		"b256h128":  {"b256h128", func() { knobBuf = 256 << 10; hashChunkBytes = 128 << 10 }, single},
		"mem128k":   {"mem128k", func() { knobMem = true; knobBuf = 128 << 10 }, single},
		"pb256h256": {"pb256h256", func() { knobBuf = 256 << 10; hashChunkBytes = 256 << 10 }, par},
		"mem":       {"mem", func() { knobMem = true }, single},
		"mem256k":   {"mem256k", func() { knobMem = true; knobBuf = 256 << 10 }, single},
		"mem-nowb":  {"mem-nowb", func() { knobMem = true; knobWB = false }, single},
		"par-nowb":  {"par-nowb", func() { knobWB = false }, par},
		"par2":      {"par2", func() {}, Config{Concurrency: 2, PartSizeBytes: 16 << 20, ParallelMinBytes: 32 << 20}},
		"par2x32":   {"par2x32", func() {}, Config{Concurrency: 2, PartSizeBytes: 32 << 20, ParallelMinBytes: 32 << 20}},
		"par4x8":    {"par4x8", func() {}, Config{Concurrency: 4, PartSizeBytes: 8 << 20, ParallelMinBytes: 32 << 20}},
	}
	var vs []variant
	for _, n := range strings.Split(os.Getenv("ZZAB"), ",") {
		vs = append(vs, all[n])
	}
	sizes := []int{1 << 20, 64 << 20, 256 << 20}
	if e := os.Getenv("ZZSIZES"); e != "" {
		sizes = nil
		for _, x := range strings.Split(e, ",") {
			n, _ := strconv.Atoi(x)
			sizes = append(sizes, n<<20)
		}
	}
	for _, size := range sizes {
		data := randomBytes(size, uint64(size))
		key := fmt.Sprintf("k%d", size)
		s3.Client.PutObject(ctx, s3.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
		a := Artifact{Bucket: s3.Bucket, Object: key, SHA256: digest(data), Size: int64(size)}
		ratios := map[string][]float64{}
		agentMs := map[string][]float64{}
		cpuA := map[string][]float64{}
		var cpuB []float64
		for it := 0; it < iters; it++ {
			for _, v := range vs {
				waitQuiet()
				dir := t.TempDir()
				c0, m0 := cpuSelf(), cpuPid(mpid)
				t0 := time.Now()
				if err := s3.Client.FGetObject(ctx, s3.Bucket, key, filepath.Join(dir, "base"), minio.GetObjectOptions{}); err != nil {
					t.Fatal(err)
				}
				bt := time.Since(t0)
				cpuB = append(cpuB, float64(cpuSelf()-c0+cpuPid(mpid)-m0)/1e6)
				os.Remove(filepath.Join(dir, "base"))
				store, _ := NewStore(filepath.Join(dir, "blobs"))
				reset()
				v.set()
				f := New(s3.Client, store, v.cfg, nil)
				c0, m0 = cpuSelf(), cpuPid(mpid)
				t0 = time.Now()
				if _, err := f.Fetch(ctx, a, nil); err != nil {
					t.Fatal(err)
				}
				at := time.Since(t0)
				cpuA[v.name] = append(cpuA[v.name], float64(cpuSelf()-c0+cpuPid(mpid)-m0)/1e6)
				reset()
				os.RemoveAll(dir)
				ratios[v.name] = append(ratios[v.name], float64(bt)/float64(at))
				agentMs[v.name] = append(agentMs[v.name], float64(at)/1e6)
			}
		}
		for _, v := range vs {
			r := ratios[v.name]
			t.Logf("noisy=%d %4dMiB %-9s ratio med %.2f q1 %.2f q3 %.2f | agent ms med %.1f | cpu ms agent %.0f base %.0f", noisy, size>>20, v.name, med(r), q(r, .25), q(r, .75), med(agentMs[v.name]), med(cpuA[v.name]), med(cpuB))
		}
	}
}

func q(x []float64, p float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	return s[int(p*float64(len(s)-1)+0.5)]
}
func med(x []float64) float64 { return q(x, .5) }

func cpuTicks() (busy, total int64) {
	b, _ := os.ReadFile("/proc/stat")
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
	for i, x := range f {
		n, _ := strconv.ParseInt(x, 10, 64)
		total += n
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return
}

var noisy int

// waitQuiet waits (up to 20s) until the machine is mostly idle for 200ms.
func waitQuiet() {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b0, t0 := cpuTicks()
		time.Sleep(200 * time.Millisecond)
		b1, t1 := cpuTicks()
		if float64(b1-b0)/float64(t1-t0) < 0.15 {
			return
		}
	}
	noisy++
}
