//go:build linux

package fetch

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing the dirty pages of
// [off, off+n) of f to disk, without waiting for them. Writing back while
// the download is still running leaves little for the final fsync to do:
// with default dirty-page limits the kernel would otherwise keep a whole
// artifact in memory and write it only when fsync asks for it.
//
// It is only a hint, so errors are ignored: the final fsync reports any
// write error (sync_file_range without WAIT_AFTER does not consume it).
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
