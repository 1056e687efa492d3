package accel

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Disk is the space on the file system holding a directory.
type Disk struct {
	// Path is the directory asked about.
	Path string `json:"path"`
	// MeasuredPath is the existing directory that was measured: Path
	// itself, or its nearest existing parent when Path does not exist yet.
	MeasuredPath string `json:"measured_path"`
	// TotalBytes is the size of the file system.
	TotalBytes uint64 `json:"total_bytes"`
	// FreeBytes is the space an unprivileged process can still use (root
	// may have a little more, the reserved blocks).
	FreeBytes uint64 `json:"free_bytes"`
}

// DiskSpace measures the file system that holds path, or would hold it:
// when path does not exist yet, its nearest existing parent is measured, so
// a data directory can be checked before the agent creates it. It returns
// the error of statfs(2) otherwise.
func DiskSpace(path string) (Disk, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Disk{}, err
	}
	d := Disk{Path: path}
	dir := abs
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			d.MeasuredPath = dir
			// Block counts are in fragment-size units (statfs(2)).
			bsize := uint64(st.Frsize)
			if bsize == 0 {
				bsize = uint64(st.Bsize)
			}
			d.TotalBytes = st.Blocks * bsize
			d.FreeBytes = st.Bavail * bsize
			return d, nil
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, fs.ErrNotExist) || parent == dir {
			return d, fmt.Errorf("statfs %s: %w", dir, err)
		}
		dir = parent
	}
}
