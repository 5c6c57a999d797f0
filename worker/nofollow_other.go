//go:build !unix

package worker

import (
	"errors"
	"os"
)

// openNoFollow is implemented on Unix systems only, where workers are
// deployed: elsewhere a migrated tree's files are refused.
func openNoFollow(*os.Root, string) (*os.File, error) {
	return nil, errors.New("opening a file without following symlinks is not supported on this system")
}
