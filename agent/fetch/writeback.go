package fetch

import "os"

// writebackEveryBytes is how many verified bytes accumulate before their
// writeback is started. Measured on the test box, every 4, 8, 16 or 32 MiB
// did equally well and never starting made 64-256 MiB downloads about a
// fifth slower, the final fsync then writing everything.
const writebackEveryBytes = 8 << 20

// writebackBehind returns a function to call with the growing length of the
// file's final prefix; it starts writeback (see startWriteback) of each
// writebackEveryBytes of it. Not safe for concurrent use.
//
// The ordered hasher calls it. Behind the hasher the bytes are final and go
// to disk in file order, even when a parallel download writes ranges out of
// order, and the call is off the goroutines reading the network.
func writebackBehind(f *os.File) func(end int64) {
	var queued int64 // bytes before queued have been handed to writeback
	return func(end int64) {
		if end-queued >= writebackEveryBytes {
			startWriteback(f, queued, end-queued)
			queued = end
		}
	}
}
