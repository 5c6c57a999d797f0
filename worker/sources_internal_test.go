package worker

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferryhq/ferry/storage"
)

// TestFileChangeIsSeenAfterTheRead: the check between the last read of a
// local file and the PutObject or Complete sees every way the file can
// change under a reader, including those that keep its size and mtime.
func TestFileChangeIsSeenAfterTheRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc   string
		change func(t *testing.T, path string, st os.FileInfo)
	}{
		{"untouched", nil},
		{"rewritten in place", func(t *testing.T, path string, _ os.FileInfo) {
			write(t, path, []byte("HELLO WORLD"))
		}},
		{"rewritten in place, mtime restored", func(t *testing.T, path string, st os.FileInfo) {
			write(t, path, []byte("HELLO WORLD"))
			chtimes(t, path, st.ModTime())
		}},
		{"appended to", func(t *testing.T, path string, _ os.FileInfo) {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.Write([]byte("more"))
			f.Close()
		}},
		{"replaced by rename, same size and mtime", func(t *testing.T, path string, st os.FileInfo) {
			tmp := path + ".tmp"
			write(t, tmp, []byte("HELLO WORLD"))
			chtimes(t, tmp, st.ModTime())
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"removed", func(t *testing.T, path string, _ os.FileInfo) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "f.txt")
			write(t, path, []byte("hello world"))
			srcs, err := newSources([]string{dir}, nil, http.DefaultClient)
			if err != nil {
				t.Fatal(err)
			}
			src, err := srcs.openFile(path, false)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			buf := make([]byte, storage.MinPartSize)
			if _, err := readSmall(context.Background(), src, buf); err != nil {
				t.Fatal(err)
			}
			if tc.change != nil {
				st, _ := os.Stat(path)
				tc.change(t, path, st)
			}
			err = src.check()
			switch {
			case tc.change == nil && err != nil:
				t.Errorf("an untouched file: %v", err)
			case tc.change != nil && !errors.Is(err, storage.ErrSourceChanged):
				t.Errorf("check = %v; want an error wrapping ErrSourceChanged", err)
			default:
				t.Logf("check: %v", err)
			}
		})
	}
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func chtimes(t *testing.T, path string, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}
