package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
)

// S3Options configures StartS3.
type S3Options struct {
	// Dir holds the buckets, objects and unfinished multipart uploads.
	// Required; created when missing.
	Dir string
	// Buckets are created at start when missing.
	Buckets []string
	// Wrap, when set, wraps the S3 handler (request logging, throttling in
	// a demo). Nil means none.
	Wrap func(http.Handler) http.Handler
}

// S3 is a running S3-compatible server.
type S3 struct {
	srv  *http.Server
	ln   net.Listener
	done chan error

	closeOnce sync.Once
	closeErr  error
}

// StartS3 starts the S3 server on addr (host:port; port 0 picks a free
// one). A port in use is reported as an error wrapping syscall.EADDRINUSE.
func StartS3(addr string, opts S3Options) (*S3, error) {
	if opts.Dir == "" {
		return nil, errors.New("embedded S3: Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded S3: %w", err)
	}
	be, err := newFileBackend(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("embedded S3: %w", err)
	}
	for _, b := range opts.Buckets {
		if err := be.CreateBucket(b); err != nil && !gofakes3.HasErrorCode(err, gofakes3.ErrBucketAlreadyExists) {
			return nil, fmt.Errorf("embedded S3: create bucket %s: %w", b, err)
		}
	}
	fake := gofakes3.New(be,
		gofakes3.WithoutVersioning(),
		// SDK clients sign with the local clock; a laptop waking from sleep
		// should not get RequestTimeTooSkewed from its own dev server.
		gofakes3.WithTimeSkewLimit(24*time.Hour),
		gofakes3.WithMetadataSizeLimit(8<<10),
	)
	var h http.Handler = fake.Server()
	if opts.Wrap != nil {
		h = opts.Wrap(h)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded S3: listen on %s: %w", addr, err)
	}
	s := &S3{srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, ln: ln, done: make(chan error, 1)}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the host:port the server listens on.
func (s *S3) Addr() string { return s.ln.Addr().String() }

// Endpoint is the server's URL, http://Addr.
func (s *S3) Endpoint() string { return "http://" + s.Addr() }

// Close shuts the server down, letting requests in flight finish until ctx
// is done. Later calls return the first one's result.
func (s *S3) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		err := s.srv.Shutdown(ctx)
		if serr := <-s.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		s.closeErr = err
	})
	return s.closeErr
}

// ObjectKey parses the path-style request path /bucket/key into its parts;
// ok is false for bucket-level or service-level requests.
func ObjectKey(r *http.Request) (bucket, key string, ok bool) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, ok = strings.Cut(p, "/")
	return bucket, key, ok && key != ""
}

// cleanStale removes the temporary files a crash may have left in dir.
func cleanStale(dir string) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasPrefix(d.Name(), ".incoming-") || strings.Contains(d.Name(), ".json.tmp")) {
			_ = os.Remove(path)
		}
		return nil
	})
}
