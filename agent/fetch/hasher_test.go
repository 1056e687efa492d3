package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// guardedFile is the partial file as the hasher sees it. Writers record how
// far each segment is written before they publish it with advance, so a read
// of bytes not yet published is a hasher bug, reported as a test error.
type guardedFile struct {
	t       *testing.T
	f       *os.File
	segSize int64
	written []atomic.Int64
}

func (g *guardedFile) ReadAt(p []byte, off int64) (int, error) {
	seg := off / g.segSize
	if limit := seg*g.segSize + g.written[seg].Load(); off+int64(len(p)) > limit {
		g.t.Errorf("hasher read bytes %d-%d, but segment %d is written only up to %d", off, off+int64(len(p))-1, seg, limit)
	}
	return g.f.ReadAt(p, off)
}

func TestOrderedHasher(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		size    int64
		segSize int64
		// kept marks segments complete before the hasher starts, as a resumed
		// parallel download does; keptPrefix is the bytes of segment 0 kept by
		// a resumed sequential download.
		kept       []int
		keptPrefix int64
	}{
		{name: "empty", size: 0, segSize: 1},
		{name: "one byte", size: 1, segSize: 1},
		{name: "one segment", size: 3*mib + 5, segSize: 3*mib + 5},
		{name: "one segment resumed from a prefix", size: 3*mib + 5, segSize: 3*mib + 5, keptPrefix: mib + 7},
		{name: "segments, the last one short", size: 5*mib + 123, segSize: mib},
		{name: "segments, exact multiple", size: 4 * mib, segSize: mib},
		{name: "segments smaller than a hash chunk", size: 100_000, segSize: 4096},
		{name: "resumed segments", size: 6*mib + 1, segSize: mib, kept: []int{0, 2, 3, 6}},
		{name: "every segment resumed", size: 3 * mib, segSize: mib, kept: []int{0, 1, 2}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(int(tt.size), uint64(100+i))
			f, err := os.Create(filepath.Join(t.TempDir(), "part"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(tt.size); err != nil {
				t.Fatal(err)
			}
			nseg := int((tt.size + tt.segSize - 1) / tt.segSize)
			g := &guardedFile{t: t, f: f, segSize: tt.segSize, written: make([]atomic.Int64, nseg)}
			h := newOrderedHasher(g, tt.size, tt.segSize)
			var last int64
			h.hashed = func(end int64) {
				if end <= last || end > tt.size {
					t.Errorf("hashed(%d) after hashed(%d), size %d: want growing offsets within the file", end, last, tt.size)
				}
				last = end
			}

			// writeSeg writes bytes [from, to) of segment seg and publishes them.
			writeSeg := func(seg int, from, to int64) {
				start := int64(seg) * tt.segSize
				if _, err := f.WriteAt(data[start+from:start+to], start+from); err != nil {
					t.Error(err)
				}
				g.written[seg].Store(to)
				h.advance(seg, to)
			}
			kept := map[int]bool{}
			for _, seg := range tt.kept {
				kept[seg] = true
				writeSeg(seg, 0, partLen(seg, tt.size, tt.segSize))
			}
			if tt.keptPrefix > 0 {
				writeSeg(0, 0, tt.keptPrefix)
			}

			type result struct {
				sum []byte
				err error
			}
			done := make(chan result, 1)
			go func() {
				sum, err := h.run(context.Background())
				done <- result{sum, err}
			}()
			// Every other segment gets its own writer, all running at once
			// in chunks of random sizes, so segments finish out of order.
			var wg sync.WaitGroup
			for seg := range nseg {
				if kept[seg] {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(i), uint64(seg)))
					n := partLen(seg, tt.size, tt.segSize)
					off := int64(0)
					if seg == 0 {
						off = tt.keptPrefix
					}
					for off < n {
						next := min(n, off+1+r.Int64N(300_000))
						writeSeg(seg, off, next)
						off = next
						runtime.Gosched()
					}
				}()
			}
			wg.Wait()
			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			if want := sha256.Sum256(data); !bytes.Equal(res.sum, want[:]) {
				t.Errorf("sum %x, want %x", res.sum, want)
			}
			if tt.size > 0 && last != tt.size {
				t.Errorf("last hashed(%d), want %d", last, tt.size)
			}
		})
	}
}

// TestOrderedHasherStopsWithContext: a download that fails never completes
// the file; the hasher must give up when told, not wait forever.
func TestOrderedHasherStopsWithContext(t *testing.T) {
	data := randomBytes(3<<20, 9)
	path := filepath.Join(t.TempDir(), "part")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := newOrderedHasher(f, int64(len(data)), 1<<20)
	hashedSome := make(chan struct{})
	var once sync.Once
	h.hashed = func(int64) { once.Do(func() { close(hashedSome) }) }
	h.advance(0, 1<<20) // segment 0 done, segment 1 never finishes

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.run(ctx)
		done <- err
	}()
	<-hashedSome
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("run() error = %v, want context.Canceled", err)
	}
}

func TestOrderedHasherReadError(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "part"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close() // every read fails
	h := newOrderedHasher(f, 10, 10)
	h.advance(0, 10)
	if _, err := h.run(context.Background()); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("run() error = %v, want os.ErrClosed", err)
	}
}
