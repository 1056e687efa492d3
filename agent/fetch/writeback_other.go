//go:build !linux

package fetch

import "os"

// startWriteback is a no-op where sync_file_range does not exist; the final
// fsync then writes everything.
func startWriteback(f *os.File, off, n int64) {}
