package testenv

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// RandomFile writes size random bytes to dir/name and returns its path and
// the bytes.
func RandomFile(t testing.TB, dir, name string, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// LongKeyDest is the destination prefix of a migration whose source holds
// LongKey(prefix) for a prefix of at most five bytes: under it that key
// grows past S3's 1,024-byte key limit.
const LongKeyDest = "a/much/longer/destination/"

// LongKey returns a key of 1,006 bytes under prefix, in segments of 200 (a
// file-backed server's name limit is 255): a valid key at a migration's
// source that cannot be written under LongKeyDest (1,006 - len(prefix) + 26
// bytes), the one object a test can make fail at the destination while the
// others copy.
func LongKey(prefix string) string {
	long := prefix
	for len(long)+201 < 1006 {
		long += strings.Repeat("k", 200) + "/"
	}
	return long + strings.Repeat("k", 1006-len(long))
}
