package runtime_test

import (
	"context"
	"os"
	"runtime/debug"
	"strconv"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/modelfleet/modelfleet/agent/runtime"
	"github.com/modelfleet/modelfleet/agent/runtime/runtimetest"
)

func TestScratchReload(t *testing.T) {
	runtimetest.Init(t)
	arena := os.Getenv("ARENA") == "1"
	mode := os.Getenv("MODE")
	n, _ := strconv.Atoi(os.Getenv("N"))
	path, in, out := slowModel(t, 8)
	input := slowInput()
	reload := func() {
		switch mode {
		case "inspect":
			if _, _, err := runtime.Inspect(path); err != nil {
				t.Fatal(err)
			}
			return
		case "bare":
			so, _ := ort.NewSessionOptions()
			so.SetIntraOpNumThreads(1)
			so.SetInterOpNumThreads(1)
			so.SetCpuMemArena(arena)
			s, err := ort.NewDynamicAdvancedSession(path, []string{"x"}, []string{"y"}, so)
			if err != nil {
				t.Fatal(err)
			}
			so.Destroy()
			s.Destroy()
			if os.Getenv("TRIM") == "1" {
				runtime.ScratchTrim()
			}
			return
		}
		s, err := runtime.Open(context.Background(), path, in, out, runtime.Options{EnableCPUArena: arena})
		if err != nil {
			t.Fatal(err)
		}
		if mode != "norun" {
			for range 3 {
				if _, err := s.Run(context.Background(), input); err != nil {
					t.Fatal(err)
				}
			}
		}
		s.Close()
		if os.Getenv("TRIM") == "1" {
			runtime.ScratchTrim()
		}
	}
	for range 10 {
		reload()
	}
	debug.FreeOSMemory()
	base := vmRSS(t)
	for i := 1; i <= n; i++ {
		reload()
		if i%(n/5) == 0 {
			debug.FreeOSMemory()
			rss := vmRSS(t)
			t.Logf("mode=%s arena=%v after %d: %d KiB (%+d)", mode, arena, i, rss, rss-base)
		}
	}
}
