package worker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// interceptProxy is a reverse proxy to the S3 server at target, closed when
// t ends. intercept sees every request first: it answers the request
// itself and returns true, or returns false to pass it on.
func interceptProxy(t *testing.T, target string, intercept func(http.ResponseWriter, *http.Request) bool) *httptest.Server {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !intercept(w, r) {
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	return ts
}

// writeS3Error answers an S3 error: status, with code and message in S3's
// XML error document.
func writeS3Error(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, message)
}

// partHookProxy passes every request to the S3 server at target and calls
// hook(part) before forwarding an UploadPart, while the worker waits for the
// answer: the part's bytes are read, the next part's are not yet.
func partHookProxy(t *testing.T, target string, hook func(part int)) *httptest.Server {
	t.Helper()
	return interceptProxy(t, target, func(_ http.ResponseWriter, r *http.Request) bool {
		if n, err := strconv.Atoi(r.URL.Query().Get("partNumber")); err == nil && r.Method == http.MethodPut {
			hook(n)
		}
		return false
	})
}

// viaProxy routes the worker's "default" profile through proxy(endpoint);
// the bundle's own storage handle still reaches S3 directly.
func viaProxy(proxy func(endpoint string) *httptest.Server) func(*worker.Config) {
	return func(c *worker.Config) {
		d := c.Profiles["default"]
		d.EndpointURL = proxy(d.EndpointURL).URL
		c.Profiles["default"] = d
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// noUploadsLeft fails the test if any multipart upload is left in the bucket.
func noUploadsLeft(t *testing.T, s *storage.S3) {
	t.Helper()
	ups, err := s.ListMultipartUploads(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 0 {
		t.Errorf("multipart uploads left behind: %+v", ups)
	}
}

// objectSum is the SHA-256 of the object at key, or ok false when there is none.
func objectSum(t *testing.T, s *storage.S3, key string) (sum [32]byte, ok bool) {
	t.Helper()
	if ok, err := s.Exists(context.Background(), key); err != nil || !ok {
		return sum, false
	}
	return sha256.Sum256(mustGet(t, s, key)), true
}

// TestFileRewrittenMidUploadRestarts: the local file is rewritten in place
// (same size, same inode) after part 1 of 4 was read. The upload must not
// complete with part 1 of the old bytes and parts 2-4 of the new ones: it is
// caught before Complete, aborted, and the retry uploads the new bytes.
func TestFileRewrittenMidUploadRestarts(t *testing.T) {
	t.Parallel()
	var path string
	var rewrote atomic.Bool
	newData := randomBytes(4 * storage.MinPartSize)
	b := setup(t, viaProxy(func(ep string) *httptest.Server {
		return partHookProxy(t, ep, func(part int) {
			if part == 1 && rewrote.CompareAndSwap(false, true) {
				if err := os.WriteFile(path, newData, 0o644); err != nil {
					t.Error(err)
				}
			}
		})
	}))
	path, oldData := testenv.RandomFile(t, b.dir, "rewritten.bin", len(newData))
	b.start(t)
	s := b.storage(t)
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
		Dest: s3loc("", b.bucket, "changing/rewritten.bin"), PartConcurrency: 1}))
	p := b.wait(t, id, 2*time.Minute)
	sum, ok := objectSum(t, s, "changing/rewritten.bin")
	switch {
	case ok && sum == sha256.Sum256(newData):
	case ok && sum == sha256.Sum256(oldData):
		t.Error("the object holds the old bytes: the rewrite was not noticed")
	case ok:
		t.Errorf("the object mixes the old and the new bytes (task %s)", p.State)
	}
	if p.State != tasks.StateCompleted || !ok {
		t.Errorf("rewritten file: %+v; want completed with the new bytes after a restart", p)
	}
	if ti := b.info(t, id); ti.Retried != 1 || !strings.Contains(ti.LastErr, "changed") {
		t.Errorf("retried %d times, last error %q; want one restart saying the source changed", ti.Retried, ti.LastErr)
	}
	noUploadsLeft(t, s)
}

// TestFileAlwaysChangingIsArchived: a file rewritten during every attempt
// (one still being written) is not restarted forever: after a bounded number
// of restarts the task is archived with a reason saying so, no object is
// written and no upload is left.
func TestFileAlwaysChangingIsArchived(t *testing.T) {
	t.Parallel()
	var path string
	var rewrites atomic.Int64
	b := setup(t, viaProxy(func(ep string) *httptest.Server {
		return partHookProxy(t, ep, func(part int) {
			if part == 1 {
				rewrites.Add(1)
				if err := os.WriteFile(path, randomBytes(2*storage.MinPartSize), 0o644); err != nil {
					t.Error(err)
				}
			}
		})
	}))
	path, _ = testenv.RandomFile(t, b.dir, "growing.log", 2*storage.MinPartSize)
	b.start(t)
	s := b.storage(t)
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
		Dest: s3loc("", b.bucket, "changing/growing.log"), PartConcurrency: 1}))
	p := b.wait(t, id, 2*time.Minute)
	if p.State != tasks.StateFailed || !strings.Contains(p.Error, "still being written") {
		t.Errorf("a file that changes on every attempt: %+v; want failed, saying it is still being written", p)
	}
	if _, ok := objectSum(t, s, "changing/growing.log"); ok {
		t.Error("an object was completed from a file that never stopped changing")
	}
	if ti := b.info(t, id); ti.State != asynq.TaskStateArchived || ti.Retried > 5 {
		t.Errorf("task is %s after %d retries (%d rewrites); want archived after a few restarts", ti.State, ti.Retried, rewrites.Load())
	}
	noUploadsLeft(t, s)
}

// TestFileReplacedBeforeResumeRestarts: a crash leaves a checkpoint with
// part 1 of file A uploaded; A is then replaced by another file B of the same
// size with A's mtime restored (rsync -t, cp -p, an unpacked archive). The
// resume must not keep A's part 1 and add B's parts: the fingerprint holds
// the inode, so the upload restarts and the object is B.
func TestFileReplacedBeforeResumeRestarts(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	const key = "changing/replaced.bin"
	path, a := testenv.RandomFile(t, b.dir, "replaced.bin", 3*storage.MinPartSize)
	id := "replaced-" + fmt.Sprint(time.Now().UnixNano())
	u, err := s.StartMultipartUpload(ctx, key, &storage.MultipartOptions{PartSize: storage.MinPartSize,
		Metadata: map[string]string{"ferry-task-id": id}})
	if err != nil {
		t.Fatal(err)
	}
	store := checkpoint.New(b.rdb, checkpoint.Options{})
	if err := store.Create(ctx, id, checkpoint.Plan{UploadID: u.UploadID, Profile: "default", Bucket: b.bucket,
		Key: key, PartSize: storage.MinPartSize, PartCount: 3, TotalSize: int64(len(a)),
		Fingerprint: worker.FileFingerprint(t, path), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	part, err := s.UploadPart(ctx, u, 1, a[:storage.MinPartSize])
	if err != nil {
		t.Fatal(err)
	}
	if err := store.RecordPart(ctx, id, u.UploadID, checkpoint.Part{Number: 1, ETag: part.ETag, Size: part.Size}); err != nil {
		t.Fatal(err)
	}
	// Replace A by B: same size, same mtime, another inode.
	st, _ := os.Stat(path)
	tmp, bData := testenv.RandomFile(t, b.dir, ".replaced.tmp", len(a))
	if err := os.Chtimes(tmp, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	b.enqueue(t, mustTask(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
		Dest: s3loc("", b.bucket, key)})), nil, asynq.TaskID(id))
	p := b.wait(t, id, time.Minute)
	sum, ok := objectSum(t, s, key)
	if p.State != tasks.StateCompleted || !ok || sum != sha256.Sum256(bData) {
		mixed := ok && sum == sha256.Sum256(append(append([]byte{}, a[:storage.MinPartSize]...), bData[storage.MinPartSize:]...))
		t.Errorf("resume after the file was replaced: %+v; object exists %v, is part 1 of the old file + the rest of the new: %v", p, ok, mixed)
	}
	noUploadsLeft(t, s)
}

// httpsSource starts a TLS server with h and a worker that may fetch from it.
func httpsSource(t *testing.T, h http.Handler) (*bundle, *httptest.Server) {
	t.Helper()
	ts := httptest.NewTLSServer(h)
	t.Cleanup(ts.Close)
	host, _ := url.Parse(ts.URL)
	b := setup(t, func(c *worker.Config) {
		c.HTTPClient = ts.Client()
		c.AllowURLHosts = []string{host.Hostname()}
	})
	b.start(t)
	return b, ts
}

// TestHTTPSWeakETag: a server whose ETags are weak (W/"...": Node's
// express.static and serve-static always, nginx when it compresses) serves
// a multipart and a small upload correctly. If-Range needs a strong
// validator, so such a server answers a ranged GET carrying If-Range with
// 200 and the whole body (Go's http.ServeContent does).
func TestHTTPSWeakETag(t *testing.T) {
	t.Parallel()
	files := map[string][]byte{"/small": randomBytes(3000), "/big": randomBytes(2*storage.MinPartSize + 77)}
	var ifRange atomic.Int64
	b, ts := httpsSource(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if strings.HasPrefix(r.Header.Get("If-Range"), "W/") {
			ifRange.Add(1)
		}
		w.Header().Set("ETag", `W/"`+strconv.Itoa(len(data))+`-v1"`)
		http.ServeContent(w, r, r.URL.Path, time.Unix(1700000000, 0), bytes.NewReader(data))
	}))
	s := b.storage(t)
	for path, want := range files {
		key := "weak" + path
		id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{URL: ts.URL + path},
			Dest: s3loc("", b.bucket, key)}, asynq.MaxRetry(0)))
		if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
			t.Errorf("%s from a weak-ETag server: %+v", path, p)
			continue
		}
		if got := mustGet(t, s, key); !bytes.Equal(got, want) {
			t.Errorf("%s: stored %d bytes that differ from the source's %d", path, len(got), len(want))
		}
	}
	if n := ifRange.Load(); n != 0 {
		t.Errorf("%d ranged GETs carried If-Range with a weak ETag", n)
	}
	noUploadsLeft(t, s)
}

// TestHTTPSChangingWithoutETag: a server without ETags (Go's http.FileServer
// sends none) switches to another version of the file after the first
// ranged GET. The parts must not mix the two versions: the change is seen
// in Last-Modified, or in the total length of Content-Range when there is no
// Last-Modified either, and the upload restarts on the new version.
func TestHTTPSChangingWithoutETag(t *testing.T) {
	t.Parallel()
	const size = 3 * storage.MinPartSize
	for _, tc := range []struct {
		desc         string
		lastModified bool
		newSize      int
	}{
		{"Last-Modified changes, same length", true, size},
		{"no validators, length changes", false, size + 1000},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			versions := [][]byte{randomBytes(size), randomBytes(tc.newSize)}
			var gets atomic.Int64
			b, ts := httpsSource(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				v := 0
				if gets.Load() > 0 {
					v = 1 // the file changes after the first GET
				}
				if r.Method == http.MethodGet {
					defer gets.Add(1)
				}
				var mod time.Time
				if tc.lastModified {
					mod = time.Unix(1700000000+int64(v)*60, 0)
				}
				http.ServeContent(w, r, "f", mod, bytes.NewReader(versions[v]))
			}))
			s := b.storage(t)
			id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{URL: ts.URL + "/f"},
				Dest: s3loc("", b.bucket, "etagless"), PartConcurrency: 1}))
			p := b.wait(t, id, 2*time.Minute)
			sum, ok := objectSum(t, s, "etagless")
			switch {
			case !ok:
			case sum == sha256.Sum256(versions[1]):
			case sum == sha256.Sum256(versions[0]):
				t.Error("the object is the old version, though the server changed before the upload finished")
			default:
				t.Errorf("the object (task %s) mixes the two versions of the source", p.State)
			}
			if p.State != tasks.StateCompleted || !ok {
				t.Errorf("source changed mid-transfer: %+v; want completed with the new version after a restart", p)
			}
			noUploadsLeft(t, s)
		})
	}
}

// TestHTTPSBodyLengthMismatch: a body longer or shorter than the server
// announced (in HEAD, Content-Length or Content-Range) is an error on every
// read path — ranged parts, the streamed path of a server without ranges,
// the small single read — never a silently truncated or padded object.
func TestHTTPSBodyLengthMismatch(t *testing.T) {
	t.Parallel()
	const big, small = 2*storage.MinPartSize + 77, 3000
	data := randomBytes(big)
	type lie struct {
		size    int  // what HEAD announces
		ranges  bool // Accept-Ranges: bytes
		extra   int  // bytes the GET body has beyond (or, negative, short of) what it announced
		cut     bool // the GET announces Content-Length and the connection drops half-way
		getSize int  // what a plain GET announces, when not size
	}
	lies := map[string]lie{
		"/ranged-long":      {size: big, ranges: true, extra: 100},
		"/ranged-short":     {size: big, ranges: true, extra: -100},
		"/streamed-cut":     {size: big, cut: true},
		"/streamed-long":    {size: big, extra: 100},
		"/streamed-short":   {size: big, extra: -100},
		"/streamed-resized": {size: big, getSize: big - 5000},
		"/small-long":       {size: small, extra: 100},
		"/small-short":      {size: small, extra: -100},
		"/small-cut":        {size: small, cut: true},
	}
	b, ts := httpsSource(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l, ok := lies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if l.ranges {
			w.Header().Set("Accept-Ranges", "bytes")
		}
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", strconv.Itoa(l.size))
			return
		}
		off, end := 0, l.size
		if l.getSize != 0 {
			end = l.getSize
		}
		status := http.StatusOK
		if rng := r.Header.Get("Range"); l.ranges && rng != "" {
			if _, err := fmt.Sscanf(rng, "bytes=%d-%d", &off, &end); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			end++
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, end-1, l.size))
			status = http.StatusPartialContent
		}
		body := data[off:end]
		if l.cut {
			// Announce the length, send half, drop the connection.
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
			_, _ = buf.Write(body[:len(body)/2])
			_ = buf.Flush()
			_ = conn.Close()
			return
		}
		if l.extra > 0 {
			body = append(body[:len(body):len(body)], randomBytes(l.extra)...)
		} else {
			body = body[:max(0, len(body)+l.extra)] // a short range may be shorter than the cut
		}
		if l.getSize != 0 {
			// A body true to its own Content-Length, which is not HEAD's.
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(status)
			_, _ = w.Write(body)
			return
		}
		// No Content-Length: flushing the header first makes the body
		// chunked, so only its end says how long it is.
		w.WriteHeader(status)
		_ = http.NewResponseController(w).Flush()
		_, _ = w.Write(body)
	}))
	s := b.storage(t)
	var mu sync.Mutex
	results := map[string]tasks.Progress{}
	var wg sync.WaitGroup
	for path := range lies {
		id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{URL: ts.URL + path},
			Dest: s3loc("", b.bucket, "lie"+path)}, asynq.MaxRetry(0)))
		wg.Go(func() {
			p := b.wait(t, id, time.Minute)
			mu.Lock()
			results[path] = p
			mu.Unlock()
		})
	}
	wg.Wait()
	for path, p := range results {
		if p.State != tasks.StateFailed {
			t.Errorf("%s: %s; want failed", path, p.State)
		} else {
			t.Logf("%s: %s", path, p.Error)
		}
		if ok, _ := s.Exists(context.Background(), "lie"+path); ok {
			got := mustGet(t, s, "lie"+path)
			t.Errorf("%s: an object of %d bytes was written (the source announced %d)", path, len(got), lies[path].size)
		}
	}
	noUploadsLeft(t, s)
}
