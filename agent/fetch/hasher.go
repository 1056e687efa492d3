package fetch

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync/atomic"
)

// hashChunkBytes is how much the ordered hasher reads back at once. It also
// sets how far a writer must get before the hasher wakes, so wake-ups stay
// rare compared with the work each one does. Like copyBufBytes it is sized
// for the CPU cache: the bytes read back are still there when hashed.
const hashChunkBytes = 256 << 10

// orderedHasher computes the sha256 of a file while other goroutines are
// still writing it, so that verification needs no second pass over the file
// once the last byte has arrived.
//
// The file is a run of consecutive segments of segSize bytes (the last may
// be shorter), each written front to back by one writer: a sequential
// download is a single segment, a parallel download has one per range.
// Writers publish how far their segment is written with advance; run reads
// the bytes below those marks back in file order, typically from the page
// cache they were just written to, so it trails the earliest unfinished
// segment and hashes exactly the bytes that will be renamed.
//
// advance may be called from any goroutine; run from one.
type orderedHasher struct {
	r       io.ReaderAt
	size    int64
	segSize int64
	marks   []atomic.Int64 // marks[i]: bytes of segment i written from its start
	wake    chan struct{}  // capacity 1: a mark moved since run last looked

	// hashed, if set, is called by run with the length of the prefix hashed
	// so far, after each chunk.
	hashed func(end int64)
}

// newOrderedHasher returns a hasher for the size bytes of r, cut into
// segments of segSize bytes (segSize > 0).
func newOrderedHasher(r io.ReaderAt, size, segSize int64) *orderedHasher {
	n := int((size + segSize - 1) / segSize)
	return &orderedHasher{r: r, size: size, segSize: segSize, marks: make([]atomic.Int64, n), wake: make(chan struct{}, 1)}
}

// advance records that the first n bytes of segment seg are written and will
// not change any more.
func (h *orderedHasher) advance(seg int, n int64) {
	h.marks[seg].Store(n)
	select {
	case h.wake <- struct{}{}:
	default: // a wake-up is already pending; run re-reads every mark
	}
}

// run hashes all size bytes in order, waiting for writers as needed, and
// returns the digest. It returns ctx.Err() if ctx ends first, as it does when
// the download fails and will never complete the file.
func (h *orderedHasher) run(ctx context.Context) ([]byte, error) {
	sum := sha256.New()
	buf := make([]byte, min(hashChunkBytes, h.size))
	for i := range h.marks {
		start, n := int64(i)*h.segSize, partLen(i, h.size, h.segSize)
		for done := int64(0); done < n; {
			avail, err := h.await(ctx, i, min(done+hashChunkBytes, n))
			if err != nil {
				return nil, err
			}
			for done < avail {
				m := min(int64(len(buf)), avail-done)
				if _, err := h.r.ReadAt(buf[:m], start+done); err != nil {
					return nil, fmt.Errorf("read back partial file at %d: %w", start+done, err)
				}
				sum.Write(buf[:m])
				done += m
				if h.hashed != nil {
					h.hashed(start + done)
				}
			}
		}
	}
	return sum.Sum(nil), nil
}

// await blocks until segment seg has at least want bytes written and returns
// how many it has.
func (h *orderedHasher) await(ctx context.Context, seg int, want int64) (int64, error) {
	for {
		if n := h.marks[seg].Load(); n >= want {
			return n, nil
		}
		select {
		case <-h.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
