package worker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// brokenReader yields data's first half, then breaks off as a reset
// connection does.
type brokenReader struct {
	data []byte
	read int
}

func (b *brokenReader) Read(p []byte) (int, error) {
	if half := len(b.data) / 2; b.read < half {
		n := copy(p, b.data[b.read:half])
		b.read += n
		return n, nil
	}
	return 0, io.ErrUnexpectedEOF
}

// TestRangeSourceReadsABrokenBodyAgain: a part whose body breaks off is
// asked for again, three GETs in all; a GET that fails as a request, or a
// body longer than the range, is not.
func TestRangeSourceReadsABrokenBodyAgain(t *testing.T) {
	data := []byte("0123456789abcdef")
	for _, tc := range []struct {
		name     string
		breaks   int
		failGet  bool
		long     bool
		wantGets int
		wantErr  bool
	}{
		{name: "whole", wantGets: 1},
		{name: "broken twice", breaks: 2, wantGets: 3},
		{name: "broken three times", breaks: 3, wantGets: 3, wantErr: true},
		{name: "request failed", failGet: true, wantGets: 1, wantErr: true},
		{name: "body too long", long: true, wantGets: 1, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gets := 0
			src := &rangeSource{size: int64(len(data)), get: func(_ context.Context, off, n int64) (io.ReadCloser, error) {
				gets++
				switch {
				case tc.failGet:
					return nil, errors.New("503 after the SDK's retries")
				case gets <= tc.breaks:
					return io.NopCloser(&brokenReader{data: data[off : off+n]}), nil
				case tc.long:
					return io.NopCloser(strings.NewReader(string(data[off:off+n]) + "x")), nil
				}
				return io.NopCloser(strings.NewReader(string(data[off : off+n]))), nil
			}}
			buf := make([]byte, len(data))
			got, err := src.ReadPart(context.Background(), 1, buf)
			if gets != tc.wantGets || (err != nil) != tc.wantErr {
				t.Fatalf("ReadPart = %d, %v after %d GETs; want error %v after %d", got, err, gets, tc.wantErr, tc.wantGets)
			}
			if err == nil && string(buf[:got]) != string(data) {
				t.Errorf("read %q, want %q", buf[:got], data)
			}
		})
	}
}
