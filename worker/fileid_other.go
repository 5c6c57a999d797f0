//go:build !linux

package worker

import "io/fs"

// fileIdentity is known on Linux only, where workers are deployed; elsewhere
// a file's version is its size and mtime.
func fileIdentity(fs.FileInfo) (inode uint64, ctime int64) { return 0, 0 }
