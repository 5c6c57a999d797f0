//go:build linux

package worker

import (
	"io/fs"
	"syscall"
)

// fileIdentity returns the inode and the ctime (nanoseconds) of fi. ctime
// changes on every write, rename or chmod and no system call can set it
// back, unlike mtime.
func fileIdentity(fi fs.FileInfo) (inode uint64, ctime int64) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0
	}
	return st.Ino, st.Ctim.Nano()
}
