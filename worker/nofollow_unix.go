//go:build unix

package worker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// openNoFollow opens the regular file rel (relative, clean) under root for
// reading, one component at a time (openat with O_NOFOLLOW, each directory
// relative to the one before): no symlink is followed, whatever is renamed
// meanwhile, and nothing outside root is reached. A component that is a
// symlink is errSymlink.
func openNoFollow(root *os.Root, rel string) (*os.File, error) {
	names := strings.Split(filepath.ToSlash(rel), "/")
	for _, n := range names {
		if n == "" || n == "." || n == ".." {
			return nil, fmt.Errorf("open %s: not a clean relative path", rel)
		}
	}
	top, err := root.Open(".")
	if err != nil {
		return nil, err
	}
	defer top.Close()
	dir := int(top.Fd())
	for i, n := range names {
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i < len(names)-1 {
			flags |= unix.O_DIRECTORY
		} else {
			flags |= unix.O_NONBLOCK // a FIFO must not block (see openFile)
		}
		fd, err := unix.Openat(dir, n, flags, 0)
		if err != nil && (errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR)) {
			var st unix.Stat_t
			if unix.Fstatat(dir, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = errSymlink
			}
		}
		if dir != int(top.Fd()) {
			unix.Close(dir)
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: strings.Join(names[:i+1], "/"), Err: err}
		}
		dir = fd
	}
	return os.NewFile(uintptr(dir), rel), nil
}
