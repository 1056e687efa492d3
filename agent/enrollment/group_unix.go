//go:build unix

package enrollment

import (
	"os"
	"syscall"
)

// dirGroup returns the group ID owning dir.
func dirGroup(dir string) (int, bool) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Gid), true
}
