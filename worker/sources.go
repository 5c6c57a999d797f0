package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// errNotAllowed: a source outside what the worker's configuration allows.
var errNotAllowed = errors.New("not allowed")

// source is where a transfer reads from.
type source struct {
	display string
	// size is -1 when unknown (an https source without Content-Length).
	size int64
	// fingerprint changes when the source's bytes may have changed; a
	// checkpoint with another fingerprint is abandoned.
	fingerprint string
	contentType string
	metadata    map[string]string
	etag        string
	// parts reads parts by offset; nil when the source can only stream.
	parts storage.PartSource
	// open streams the whole source.
	open  func(ctx context.Context) (io.ReadCloser, error)
	close func() error
}

func (s *source) Close() error {
	if s.close != nil {
		return s.close()
	}
	return nil
}

// sources opens sources within the worker's allowed directories and hosts.
type sources struct {
	roots map[string]*os.Root // allowed directory → root
	dirs  []string
	hosts []string
	http  *http.Client
}

func newSources(dirs, hosts []string, hc *http.Client) (*sources, error) {
	// A copy of the client that follows redirects only to allowed https
	// hosts: the allowlist must hold for every hop, or a redirect could
	// reach any host (a cloud metadata endpoint, say).
	client := *hc
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Scheme != "https" || !slices.Contains(hosts, r.URL.Hostname()) {
			return fmt.Errorf("redirect to %s://%s: %w (not on allow_url_hosts)", r.URL.Scheme, r.URL.Host, errNotAllowed)
		}
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		return nil
	}
	s := &sources{roots: map[string]*os.Root{}, hosts: hosts, http: &client}
	for _, d := range dirs {
		r, err := os.OpenRoot(d)
		if err != nil {
			return nil, fmt.Errorf("worker config: allow_dirs: %w", err)
		}
		s.roots[d] = r
		s.dirs = append(s.dirs, d)
	}
	// Longest first, so nested allowed directories resolve to the deepest.
	slices.SortFunc(s.dirs, func(a, b string) int { return len(b) - len(a) })
	return s, nil
}

// openFile opens an absolute path through the os.Root of the allowed
// directory containing it: ".." and symlinks cannot leave that directory.
func (s *sources) openFile(path string) (*source, error) {
	if len(s.dirs) == 0 {
		return nil, fmt.Errorf("source %s: local files are %w on this worker: start it with --allow-dir DIR", path, errNotAllowed)
	}
	for _, d := range s.dirs {
		rel, err := filepath.Rel(d, path)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		// O_NONBLOCK: opening a FIFO would block until a writer appears,
		// holding a worker slot until the task's timeout. It changes
		// nothing for regular files; anything else is refused below.
		f, err := s.roots[d].OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("source file %s does not exist: %w", path, storage.ErrNotFound)
			}
			if strings.Contains(err.Error(), "escapes from parent") || strings.Contains(err.Error(), "path escapes") {
				return nil, fmt.Errorf("source %s leaves the allowed directory %s through a symlink or \"..\": %w", path, d, errNotAllowed)
			}
			return nil, fmt.Errorf("open source %s: %w", path, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stat source %s: %w", path, err)
		}
		if !st.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("source %s is not a regular file: %w", path, errNotAllowed)
		}
		return &source{display: path, size: st.Size(),
			fingerprint: fmt.Sprintf("file:%d:%d", st.Size(), st.ModTime().UnixNano()),
			parts:       storage.ReaderAtSource(f, st.Size()),
			open: func(context.Context) (io.ReadCloser, error) {
				return io.NopCloser(io.NewSectionReader(f, 0, st.Size())), nil
			},
			close: f.Close}, nil
	}
	return nil, fmt.Errorf("source %s is outside the worker's allowed directories (%s): %w; add --allow-dir or move the file",
		path, strings.Join(s.dirs, ", "), errNotAllowed)
}

// openHTTP checks the host against the allowlist and HEADs the URL.
func (s *sources) openHTTP(ctx context.Context, raw string) (*source, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// Not err itself: it quotes the whole URL, signature included.
		return nil, fmt.Errorf("source URL does not parse: %w", errNotAllowed)
	}
	if !slices.Contains(s.hosts, u.Hostname()) {
		return nil, fmt.Errorf("source host %q is %w: the worker's allow_url_hosts are [%s]", u.Hostname(), errNotAllowed, strings.Join(s.hosts, ", "))
	}
	display := u.Scheme + "://" + u.Host + u.Path // no query: it may hold a signature
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, raw, nil)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", display, err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("HEAD %s: %w", display, redactURLError(err))
	}
	resp.Body.Close()
	if err := httpStatusError(display, resp.StatusCode); err != nil {
		return nil, err
	}
	src := &source{display: display, size: resp.ContentLength, contentType: resp.Header.Get("Content-Type"),
		fingerprint: fmt.Sprintf("http:%s|%s|%d", resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), resp.ContentLength)}
	get := func(ctx context.Context, rng string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
		if err != nil {
			return nil, err
		}
		if rng != "" {
			req.Header.Set("Range", rng)
			if et := resp.Header.Get("ETag"); et != "" {
				req.Header.Set("If-Range", et)
			}
		}
		r, err := s.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", display, redactURLError(err))
		}
		if err := httpStatusError(display, r.StatusCode); err != nil {
			r.Body.Close()
			return nil, err
		}
		if rng != "" && r.StatusCode != http.StatusPartialContent {
			r.Body.Close()
			return nil, fmt.Errorf("GET %s: asked for %s, got status %d (the source changed or ignores ranges)", display, rng, r.StatusCode)
		}
		return r, nil
	}
	src.open = func(ctx context.Context) (io.ReadCloser, error) {
		r, err := get(ctx, "")
		if err != nil {
			return nil, err
		}
		return r.Body, nil
	}
	if resp.ContentLength >= 0 && resp.Header.Get("Accept-Ranges") == "bytes" {
		src.parts = &rangeSource{size: resp.ContentLength, get: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			r, err := get(ctx, "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
			if err != nil {
				return nil, err
			}
			return r.Body, nil
		}}
	}
	return src, nil
}

func httpStatusError(display string, code int) error {
	switch {
	case code == http.StatusNotFound || code == http.StatusGone:
		return fmt.Errorf("source %s: HTTP %d: %w", display, code, storage.ErrNotFound)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("source %s: HTTP %d: %w", display, code, storage.ErrPermission)
	case code >= 400:
		return fmt.Errorf("source %s: HTTP %d", display, code)
	}
	return nil
}

// redactURLError drops the URL (which may carry a signature) from a
// transport error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// openS3 opens an S3 object as a source: ranged GETs by part.
func openS3(ctx context.Context, s *storage.S3, key string) (*source, error) {
	info, err := s.Info(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return s3Source(s, key, info), nil
}

// s3Source is openS3 for an object whose Info the caller has.
func s3Source(s *storage.S3, key string, info storage.StoredFile) *source {
	display := "s3://" + s.Bucket() + "/" + key
	return &source{display: display, size: info.Size, etag: info.ETag, contentType: info.ContentType, metadata: info.Metadata,
		fingerprint: fmt.Sprintf("s3:%s:%d", info.ETag, info.Size),
		// Every part is read from the version the transfer started with.
		parts: &rangeSource{size: info.Size, get: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			rc, _, err := s.GetRangeIfMatch(ctx, key, info.ETag, off, n)
			return rc, err
		}},
		open: func(ctx context.Context) (io.ReadCloser, error) { return s.Get(ctx, key) },
	}
}

// rangeSource reads parts of a remote object with one ranged GET each, so
// parts download concurrently.
type rangeSource struct {
	size int64
	get  func(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

func (r *rangeSource) Sequential() bool { return false }

func (r *rangeSource) ReadPart(ctx context.Context, n int, buf []byte) (int, error) {
	off := int64(n-1) * int64(len(buf))
	if off >= r.size {
		return 0, io.EOF
	}
	want := min(int64(len(buf)), r.size-off)
	rc, err := r.get(ctx, off, want)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	got, err := io.ReadFull(rc, buf[:want])
	if err != nil {
		return got, fmt.Errorf("read part %d: %w", n, err)
	}
	return got, nil
}

// openSource opens any non-inline source location.
func (w *Worker) openSource(ctx context.Context, loc tasks.Location) (*source, error) {
	switch loc.Kind() {
	case tasks.KindFile:
		return w.sources.openFile(loc.Path)
	case tasks.KindHTTP:
		return w.sources.openHTTP(ctx, loc.URL)
	case tasks.KindS3:
		s, err := w.profiles.open(ctx, loc.Profile, loc.Bucket)
		if err != nil {
			return nil, err
		}
		return openS3(ctx, s, loc.Key)
	}
	return nil, permanent(fmt.Errorf("source %s cannot be streamed", loc.String()))
}
